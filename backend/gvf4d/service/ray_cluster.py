"""The Ray cluster behind `gvf4d serve --ray`: always with Ray's token authentication, never with its dashboard.

`--ray` alone starts a cluster of this machine whose every Ray process listens on 127.0.0.1 only, its token a
fresh secret in `DATA/ray_auth_token` (0600). `--ray HOST:PORT` joins a studio's cluster (docs/cluster.md) with
the token Ray finds as for any client: `$RAY_AUTH_TOKEN`, the file `$RAY_AUTH_TOKEN_PATH`, or `~/.ray/auth_token`.
Clients of the service never see Ray: its own token stays the only way in.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TOKEN_NAME = "ray_auth_token"      # the token of a cluster the service starts itself, in its data folder
NAMESPACE = "gvf4d"


@dataclass(frozen=True)
class RaySettings:
    """How `gvf4d serve --ray` uses its cluster."""

    address: Optional[str] = None      # a running cluster's head (HOST:PORT); None: start one on this machine
    cpu_actors: Optional[int] = None   # actors without a GPU, for fit jobs (None: as many as the CPUs hold when
                                       # the cluster has no GPU, else none)
    shared: Optional[Path] = None      # a folder mounted at the same path on every node: inputs under it are
                                       # read in place, results written in place when the data folder is in it


def _local_token(data_dir: Path) -> Path:
    """DATA/ray_auth_token: a new secret for each cluster started here (mode 0600, created exclusively)."""
    path = Path(data_dir) / TOKEN_NAME
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def prepare_environment(settings: RaySettings, data_dir: Path) -> None:
    """Sets the variables Ray reads once, on import: token authentication on (refusing RAY_AUTH_MODE=disabled),
    the token of a cluster started here, and for a cluster on loopback Ray's switch for single-machine clusters
    (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), without which Ray swaps 127.0.0.1 for the machine's network address.
    Call it before importing ray."""
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode.lower() != "token":
        raise ValueError(f"RAY_AUTH_MODE={mode}: gvf4d joins Ray clusters only with token authentication "
                         "(RAY_AUTH_MODE=token; docs/cluster.md)")
    if not settings.address or _is_loopback(settings.address):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not settings.address and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(_local_token(data_dir))


def _check_head(address: str, timeout: float = 5.0) -> None:
    """ConnectionError naming the address when nothing listens there (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"no Ray head answers at {address} ({e}); start one with `ray start --head` "
                              "(docs/cluster.md)") from None


def connect(settings: RaySettings) -> str:
    """ray.init for the service (after prepare_environment); returns the cluster's address. Without an address
    a new cluster starts here ("local": never the last cluster `ray start` left on this machine)."""
    import ray
    if settings.address:
        if settings.address != "auto":
            _check_head(settings.address)
        context = ray.init(address=settings.address, namespace=NAMESPACE, logging_level=logging.WARNING,
                           log_to_driver=False)
    else:
        context = ray.init(address="local", include_dashboard=False, namespace=NAMESPACE,
                           logging_level=logging.WARNING, log_to_driver=False)
    return context.address_info["address"]


def disconnect() -> None:
    """Leaves the cluster (a cluster started here stops; the actors of this service end with it)."""
    import ray
    ray.shutdown()
