"""`gvf4d weights --download` end to end against a hub on 127.0.0.1 (small files in the hub's URL layout), and
`--verify` / `--convert` on what it leaves."""
import argparse
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from gvf4d.models.weights import WeightsError, read_state_dict, sha256_file
from gvf4d.pipelines.gvf import GVF_FILES
from gvf4d.weights_download import download
from gvf4d.weights_folder import LOCK_ENV, LOCK_FILE, convert, report

COMMIT = "0123456789abcdef0123456789abcdef01234567"
BIG = 12 * 2**20            # past huggingface_hub's 10 MiB write chunk: an interrupted fetch keeps a part


class FixtureHub:
    """Serves HEAD and GET /{repo}/resolve/{revision}/{path} as the hub does: X-Repo-Commit, an ETag that is the
    file's sha256 (LFS) or git blob id, the size; ranges for resuming. Scripted faults per file: `drop_at` (the
    first GET sends that many bytes and drops the connection; later GETs answer 503 until `outage` is cleared) and
    `claimed_size` (a HEAD size no disk holds)."""

    def __init__(self):
        self.files, self.lfs, self.log = {}, set(), []
        self.drop_at, self.outage, self.claimed_size = {}, set(), {}

    def add(self, repo, path, data, lfs=True):
        self.files[f"{repo}/{path}"] = data
        if lfs:
            self.lfs.add(f"{repo}/{path}")

    def etag(self, key):
        data = self.files[key]
        if key in self.lfs:
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()

    @contextmanager
    def serving(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _key(self):
                parts = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None
                key = "/".join(parts[:2] + parts[4:])
                return key if key in hub.files else None

            def _headers(self, code, key, length, extra=()):
                self.send_response(code)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hub.etag(key)}"')
                self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                for name, value in extra:
                    self.send_header(name, value)
                self.end_headers()

            def _missing(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def do_HEAD(self):
                key = self._key()
                hub.log.append(("HEAD", key, None, 0))
                if key is None:
                    return self._missing()
                self._headers(200, key, hub.claimed_size.get(key, len(hub.files[key])))

            def do_GET(self):
                key = self._key()
                if key is None:
                    hub.log.append(("GET", key, None, 0))
                    return self._missing()
                data, rng = hub.files[key], self.headers.get("Range")
                if key in hub.outage:
                    hub.log.append(("GET", key, rng, 0))
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    return self.end_headers()
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                body = data[start:]
                if start:
                    self._headers(206, key, len(body), [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
                else:
                    self._headers(200, key, len(body))
                if key in hub.drop_at:       # the connection drops mid-file, and the server then stays away
                    cut = hub.drop_at.pop(key)
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    hub.outage.add(key)
                    hub.log.append(("GET", key, rng, cut))
                    return
                self.wfile.write(body)
                hub.log.append(("GET", key, rng, len(body)))

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

    def gets(self, key):
        return [entry for entry in self.log if entry[0] == "GET" and entry[1] == key]


def _bytes(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def hub_and_lock(tmp_path):
    """A hub holding files in the published layout (small, random) and a lock for them: the GVF checkpoints (the
    diffusion one BIG, its sha256 in the lock; the others' hashes left null), DINOv2's folder, a matting model whose
    locked hash is wrong, and a TRELLIS file the hub says is 1 PB."""
    import huggingface_hub.constants
    assert not huggingface_hub.constants.HF_HUB_OFFLINE, "HF_HUB_OFFLINE is set for this test run"
    hub = FixtureHub()
    gvf = [{"path": f"{stem}.pt", "size": None, "sha256": None} for stem in GVF_FILES.values()]
    for i, f in enumerate(gvf):
        hub.add("t/gvf", f["path"], _bytes(BIG if i == 0 else 2048 + i, i))
    gvf[0].update(size=BIG, sha256=hashlib.sha256(hub.files["t/gvf/" + gvf[0]["path"]]).hexdigest())
    hub.add("t/dinov2", "config.json", b'{"model_type": "dinov2"}', lfs=False)
    hub.add("t/dinov2", "model.safetensors", _bytes(50_000, 10))
    hub.add("t/birefnet", "onnx/model.onnx", _bytes(30_000, 11))
    hub.add("t/trellis", "ckpts/huge.safetensors", b"x")
    hub.claimed_size["t/trellis/ckpts/huge.safetensors"] = 10**15
    lock = {"schema": 1, "sources": [
        {"name": "gvf", "setups": ["gvf"], "repo": "t/gvf", "revision": "main", "folder": "gvf", "files": gvf},
        {"name": "dinov2", "setups": ["gvf", "trellis"], "repo": "t/dinov2", "revision": "main", "folder": "dinov2",
         "files": [{"path": "config.json", "size": None, "sha256": None},
                   {"path": "model.safetensors", "size": None, "sha256": None}]},
        {"name": "matting", "setups": ["matting"], "repo": "t/birefnet", "revision": "main",
         "folder": "matting/birefnet_lite", "files": [{"path": "onnx/model.onnx", "size": None, "sha256": "0" * 64}]},
        {"name": "trellis", "setups": ["trellis"], "repo": "t/trellis", "revision": "main", "folder": "trellis",
         "files": [{"path": "ckpts/huge.safetensors", "size": None, "sha256": None}]},
    ]}
    (tmp_path / "lock.json").write_text(json.dumps(lock))
    return hub, tmp_path / "lock.json"


def test_interrupted_download_resumes_and_every_file_is_checked(tmp_path, hub_and_lock, monkeypatch):
    hub, lock = hub_and_lock
    folder = tmp_path / "weights"
    big = "t/gvf/" + next(iter(GVF_FILES.values())) + ".pt"
    hub.drop_at[big] = 11 * 2**20
    with hub.serving() as url:
        with pytest.raises(WeightsError, match="the download stopped .* run the same command again to resume"):
            download(folder, "gvf", lock=lock, endpoint=url, log=lambda _: None)
        part = folder / "gvf" / (big.removeprefix("t/gvf/") + ".part")
        kept = part.stat().st_size
        assert 0 < kept < BIG and not (folder / "gvf" / big.removeprefix("t/gvf/")).exists()
        hub.outage.clear()                                   # the network is back
        fetched = download(folder, "gvf", lock=lock, endpoint=url, log=lambda _: None)
        assert len(fetched) == len(GVF_FILES) + 2 and not part.exists()
        # the second run asked for the rest only
        assert hub.gets(big)[-1] == ("GET", big, f"bytes={kept}-", BIG - kept)
        assert sha256_file(folder / big.removeprefix("t/")) == hashlib.sha256(hub.files[big]).hexdigest()
        # everything is there and checked: a third run fetches nothing
        requests = len(hub.log)
        assert download(folder, "gvf", lock=lock, endpoint=url, log=lambda _: None) == []
        assert not [e for e in hub.log[requests:] if e[0] == "GET"]
    # --verify's view: the big file against the lock, the others against the hub's hashes recorded at download
    monkeypatch.setenv(LOCK_ENV, str(lock))
    rows = {r.name: r for r in report(folder, with_hashes=True)}
    assert all(rows[name].status == "ok" for name in (*GVF_FILES, "dinov2"))
    assert rows["dit"].checks[0].against == "published" and rows["motion_vae"].checks[0].against == "recorded"
    record = json.loads((folder / LOCK_FILE).read_text())
    assert set(record) == {f"gvf/{s}.pt" for s in GVF_FILES.values()} | {"dinov2/config.json", "dinov2/model.safetensors"}


def test_hash_mismatch_and_missing_space_are_refused(tmp_path, hub_and_lock):
    hub, lock = hub_and_lock
    folder = tmp_path / "weights"
    with hub.serving() as url:
        # the lock records another hash than the hub's file has: not kept
        with pytest.raises(WeightsError, match="onnx/model.onnx: HASH MISMATCH against weights.lock.json"):
            download(folder, "gvf", matting=True, lock=lock, endpoint=url, log=lambda _: None)
        matting = folder / "matting" / "birefnet_lite" / "onnx"
        assert not any(matting.iterdir())
        # a file no disk holds: refused from the hub's sizes before a byte is fetched
        gets = len([e for e in hub.log if e[0] == "GET"])
        with pytest.raises(WeightsError, match=r"needs 9\d{5}\.\d\d GiB .* nothing was downloaded"):
            download(folder, "trellis", lock=lock, endpoint=url, log=lambda _: None)
        assert len([e for e in hub.log if e[0] == "GET"]) == gets
        # files the hub does not have (the files before the refused one were kept)
        assert (folder / "dinov2" / "model.safetensors").is_file()
        with pytest.raises(WeightsError, match="the hub does not answer for it"):
            download(tmp_path / "other", "gvf", lock=lock, endpoint=url + "/nothing-here", log=lambda _: None)


def test_cli_downloads_through_hf_endpoint_and_verify_tells_unverified(tmp_path, hub_and_lock):
    hub, lock = hub_and_lock
    folder = tmp_path / "weights"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    with hub.serving() as url:
        env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"), **{LOCK_ENV: str(lock)})
        cli = [sys.executable, "-m", "gvf4d.cli", "weights", "--weights", str(folder)]
        r = subprocess.run(cli + ["--download", "--setup", "gvf"], env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"fetching {len(GVF_FILES) + 2} files" in r.stdout
        # a file copied in by hand (no recorded hash) and a changed one
        (folder / "dinov2" / "preprocessor_config.json").write_text("{}")
        stats = folder / "gvf" / f"{GVF_FILES['static_std']}.pt"
        stats.write_bytes(b"changed")
        r = subprocess.run(cli + ["--verify"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:] if line.startswith("  ") and
             not line.startswith("      ")}
    assert lines["dit"].split()[1] == "ok" and lines["static_std"].split()[1:3] == ["HASH", "MISMATCH"]
    assert lines["dinov2"].split()[1] == "unverified"
    assert "dinov2/preprocessor_config.json: unverified: no recorded hash" in r.stdout
    assert "present" not in r.stdout


def test_convert_reads_a_refused_pickle_only_when_trusted(tmp_path):
    """A .pt holding more than tensors is refused, and the hint names the flag that converts it."""
    gvf = tmp_path / "gvf"
    gvf.mkdir()
    pt = gvf / f"{GVF_FILES['static_mean']}.pt"
    torch.save({"state_dict": {"mean": torch.arange(14.0)}, "args": argparse.Namespace(lr=1e-4)}, pt)
    with pytest.raises(WeightsError, match="--convert --trust-pickle"):
        read_state_dict(pt)
    with pytest.raises(WeightsError, match="--convert --trust-pickle"):
        convert(tmp_path)
    [out] = convert(tmp_path, trust_pickle=True)
    assert out == pt.with_suffix(".safetensors")
    assert torch.equal(read_state_dict(out)["mean"], torch.arange(14.0))
    assert json.loads((tmp_path / LOCK_FILE).read_text())[f"gvf/{out.name}"] == sha256_file(out)
