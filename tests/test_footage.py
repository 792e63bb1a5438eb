import numpy as np
import pytest
from PIL import Image

from gvf4d.footage import (FootageError, MattingOptions, crop_box_from_alpha, open_footage, prepare_footage,
                           select_frame_indices)
from gvf4d.footage.video_io import write_mp4
from gvf4d.pipelines.demo import composite, write_footage_frames


@pytest.fixture(scope="module")
def rgba_frames(small_shot):
    from gvf4d.synthetic import render_footage
    return render_footage(small_shot.animated, 64, 64).numpy()   # (6, 64, 64, 4)


def test_select_frames_like_published_and_errors():
    assert select_frame_indices(100, start=3, stride=2, count=4) == [3, 5, 7, 9]
    assert select_frame_indices(10, start=0, end=6, stride=1, count=None) == [0, 1, 2, 3, 4, 5]
    # every frame of the range by default; a count keeps at most the first that many (docs/design.md §2)
    assert select_frame_indices(10, start=2, stride=2) == [2, 4, 6, 8]
    assert select_frame_indices(10, start=2, stride=2, count=32, path="clip.mp4") == [2, 4, 6, 8]
    with pytest.raises(FootageError, match="start frame 12 is outside"):
        select_frame_indices(10, start=12)


def test_png_sequence_with_alpha(tmp_path, rgba_frames):
    write_footage_frames(tmp_path / "seq", rgba_frames)
    src = open_footage(tmp_path / "seq")
    assert (src.kind, src.frame_count, src.has_alpha) == ("images", 6, True)
    # naming one image of the sequence opens the whole sequence
    assert open_footage(tmp_path / "seq" / "frame_0003.png").frame_count == 6
    prep = prepare_footage(tmp_path / "seq", start=1, stride=2, count=2)
    assert prep.frame_indices == [1, 3]
    assert prep.frames.shape == (2, 512, 512, 3) and prep.alphas.shape == (2, 512, 512)
    # the object sits in the central 380 px square, the border is white
    assert (prep.frames[:, :60] == 255).all() and prep.alphas[:, :60].max() == 0
    assert prep.alphas[0, 66:446, 66:446].max() == 255
    assert prep.to_metadata()["footage"]["sha256"] == src.content_hash()


def test_crop_box_follows_published_rule():
    alpha = np.zeros((100, 120), np.uint8)
    alpha[20:41, 30:71] = 255          # x 30..70, y 20..40 -> centre (50, 30), side int(40 * 1.2) = 48
    alpha[10, 5] = 200                 # below 0.8 * 255: ignored
    assert crop_box_from_alpha(alpha) == (26.0, 6.0, 74.0, 54.0)
    with pytest.raises(FootageError, match="mask in frame 7 is empty"):
        crop_box_from_alpha(np.full((8, 8), 150, np.uint8), "clip", 7)


def test_mp4_greenscreen_with_chroma_key(tmp_path):
    from gvf4d.synthetic import make_synthetic_shot, render_footage
    rgba = render_footage(make_synthetic_shot(num_frames=3, gaussians_per_part=300, seed=1).animated, 128, 128).numpy()
    video = write_mp4(tmp_path / "clip.mp4", composite(rgba), fps=12)
    src = open_footage(video)
    assert (src.kind, src.frame_count, src.has_alpha, src.fps) == ("video", 3, False, 12.0)
    truth = prepare_footage_from_rgba(tmp_path, rgba)
    for spec in ("chroma:#00b140", "chroma", "auto"):   # given key colour, the border's median colour, detected
        prep = prepare_footage(video, count=3, matting=MattingOptions.parse(spec))
        keyed, true = prep.alphas > 127, truth.alphas > 127
        # H.264's 4:2:0 chroma softens the edges; the silhouettes still agree closely
        assert (keyed & true).sum() / (keyed | true).sum() > 0.7   # a crude stand-in model, still the object5
        assert np.abs(prep.alphas.astype(float) - truth.alphas.astype(float)).mean() < 6
        assert prep.crop_box == pytest.approx(truth.crop_box, abs=2.5)


def prepare_footage_from_rgba(tmp_path, rgba):
    write_footage_frames(tmp_path / "truth", rgba)
    return prepare_footage(tmp_path / "truth", count=len(rgba))


def test_mask_sequence(tmp_path, rgba_frames):
    video = write_mp4(tmp_path / "clip.mp4", composite(rgba_frames), fps=12)
    masks = tmp_path / "masks"
    masks.mkdir()
    for t, f in enumerate(rgba_frames):
        Image.fromarray(f[..., 3]).save(masks / f"m{t:03d}.png")
    prep = prepare_footage(video, count=6, matting=MattingOptions.parse(f"masks:{masks}"))
    truth = prepare_footage_from_rgba(tmp_path, rgba_frames)
    np.testing.assert_array_equal(prep.alphas, truth.alphas)
    for p in list(masks.iterdir())[3:]:
        p.unlink()
    with pytest.raises(FootageError, match="has 3 masks but footage frame 3 needs one"):
        prepare_footage(video, count=6, matting=MattingOptions.parse(f"masks:{masks}"))


def test_exr_sequence(tmp_path, rgba_frames):
    import OpenEXR
    folder = tmp_path / "exr"
    folder.mkdir()
    for t, f in enumerate(rgba_frames[:3]):
        srgb = f[..., :3].astype(np.float32) / 255
        linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        px = np.concatenate([linear, f[..., 3:4].astype(np.float32) / 255], -1).astype(np.float32)
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGBA": px}) as out:
            out.write(str(folder / f"shot.{t:04d}.exr"))
    src = open_footage(folder)
    assert (src.frame_count, src.has_alpha) == (3, True)
    (_, img), = src.read([1])
    assert np.abs(img.astype(int) - rgba_frames[1].astype(int)).max() <= 1


def test_bad_input_errors_name_the_file(tmp_path):
    with pytest.raises(FootageError, match="does not exist"):
        open_footage(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FootageError, match="junk.mp4: cannot be decoded"):
        open_footage(junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FootageError, match="contains no images"):
        open_footage(empty)
    bad_png = tmp_path / "seq" / "f_0001.png"
    bad_png.parent.mkdir()
    bad_png.write_bytes(b"\x89PNG broken")
    with pytest.raises(FootageError, match="f_0001.png: cannot be read as an image"):
        open_footage(bad_png.parent)
    blank = tmp_path / "blank"
    blank.mkdir()
    for t in range(2):
        Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(blank / f"b{t}.png")
    with pytest.raises(FootageError, match="mask in frame 0 is empty"):
        prepare_footage(blank, count=2)


def _tiny_matting_model(path, size=320, logits=False):
    """A stand-in matting model: one 1x1 convolution (green -> low), in ONNX, with the published model's I/O
    layout: U^2-Net's (320 px, a sigmoid map first) or, with logits, BiRefNet's (the logits last)."""
    import onnx
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [4.0, -6.0, 4.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Conv", ["input.1", "w", "b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["d1"])]
    outputs = ["d1", "c"] if logits else ["d1"]
    graph = helper.make_graph(
        nodes, "tiny_matting", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 1, size, size]) for o in outputs], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _textured_green(shape, seed=0):
    """A background that is no solid colour: green foliage-like noise (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    h, w = shape
    bg = np.zeros((h, w, 3), np.uint8)
    bg[..., 1] = rng.integers(110, 256, (h, w))
    bg[..., 0] = rng.integers(0, 60, (h, w))
    bg[..., 2] = rng.integers(0, 60, (h, w))
    return bg


def _over(rgba, background):
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + background * (1 - a) + 0.5).astype(np.uint8)


def test_model_matting_from_local_weights(tmp_path):
    from gvf4d.footage import frame_alpha
    from gvf4d.footage.matting import OnnxMatting
    from gvf4d.synthetic import make_synthetic_shot, render_footage
    rgba = render_footage(make_synthetic_shot(num_frames=2, gaussians_per_part=300, seed=1).animated, 128, 128).numpy()
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, f in enumerate(rgba):           # RGB frames on a background that is not one colour: no key, the model
        Image.fromarray(_over(f, _textured_green(f.shape[:2], t))).save(frames / f"f_{t:04d}.png")
    weights = tmp_path / "weights"
    with pytest.raises(FootageError, match="not one solid colour.*u2net.onnx are missing.*--download --matting"):
        prepare_footage(frames, count=2, matting=MattingOptions.parse("auto", weights))
    _tiny_matting_model(weights / "matting" / "u2net.onnx")
    (_, frame), = open_footage(frames).read([0])
    alpha = frame_alpha(frame, 0, MattingOptions.parse("model", weights), frames)
    keyed, true = alpha > 127, rgba[0, ..., 3] > 127
    assert alpha.shape == (128, 128) and (keyed & true).sum() / (keyed | true).sum() > 0.7   # crude stand-in, still the object
    prep = prepare_footage(frames, count=2, matting=MattingOptions.parse("auto", weights))   # auto -> the model
    assert prep.alphas.max() == 255 and (prep.alphas[:, :40] == 0).all()
    (weights / "matting" / "u2net.onnx").write_bytes(b"not onnx")
    OnnxMatting._loaded.clear()
    with pytest.raises(FootageError, match="u2net.onnx: cannot be loaded as an ONNX matting model"):
        prepare_footage(frames, count=2, matting=MattingOptions.parse("model", weights))
    # BiRefNet (where `gvf4d weights --download --matting` puts it) comes first: 1024 px in, logits out
    _tiny_matting_model(weights / "matting" / "birefnet_lite" / "onnx" / "model.onnx", size=1024, logits=True)
    alpha = frame_alpha(frame, 0, MattingOptions.parse("model", weights), frames)
    keyed = alpha > 127
    assert (keyed & true).sum() / (keyed | true).sum() > 0.7


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 0, 0), (0, 177, 64)])
def test_auto_keys_a_solid_background(tmp_path, background):
    """Frames without alpha on white, black or a green screen: auto finds the colour at the borders and keys it."""
    from gvf4d.footage import frame_alpha
    from gvf4d.footage.matting import detect_solid_background
    from gvf4d.synthetic import make_synthetic_shot, render_footage
    rgba = render_footage(make_synthetic_shot(num_frames=2, gaussians_per_part=300, seed=1).animated, 128, 128).numpy()
    rgb = composite(rgba, background)
    found = detect_solid_background(rgb[0])
    assert found is not None and np.abs(np.subtract(found.colour, background)).max() <= 1
    for t in range(2):
        alpha = frame_alpha(rgb[t], t, MattingOptions(), tmp_path)
        keyed, true = alpha > 127, rgba[t, ..., 3] > 127
        assert (keyed & true).sum() / (keyed | true).sum() >= 0.95
        assert (alpha[rgba[t, ..., 3] == 255] == 255).mean() > 0.99   # the inside stays opaque
    (tmp_path / "rgb").mkdir()                       # as RGB files: the whole ingestion, no flag, no weights
    for t, f in enumerate(rgb):
        Image.fromarray(f).save(tmp_path / "rgb" / f"f_{t:04d}.png")
    prep = prepare_footage(tmp_path / "rgb", count=2)
    truth = prepare_footage_from_rgba(tmp_path, rgba)
    assert prep.crop_box == pytest.approx(truth.crop_box, abs=2.5)
    keyed, true = prep.alphas > 127, truth.alphas > 127
    assert (keyed & true).sum() / (keyed | true).sum() >= 0.95
    # not a solid background: noise, or a frame split in two colours
    assert detect_solid_background(_textured_green((128, 128))) is None
    split = np.zeros((128, 128, 3), np.uint8)
    split[:, 64:] = 255
    assert detect_solid_background(split) is None


def _png_declaring(width: int, height: int) -> bytes:
    """A greyscale PNG of width x height zeros: a few hundred kB on disk, width * height bytes (x3 as RGB) once
    decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    compressor, row = zlib.compressobj(9), bytes(1 + width)          # filter byte 0, then the row's pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


PEAK_RSS_OF_PREPARE = """
import resource, sys
from gvf4d.footage import FootageError, prepare_footage
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    prepare_footage(sys.argv[1])
except FootageError as e:
    print(e)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_oversized_frames_are_refused_from_their_headers_before_decoding(tmp_path):
    """Four small PNGs declaring 13000x13000 (169 Mpx, 0.5 GB as RGB once decoded): refused by the frame budget
    (40 Mpx) from the first file's header, the process's peak memory unchanged."""
    import subprocess
    import sys
    png = _png_declaring(13000, 13000)
    assert len(png) < 1_000_000
    folder = tmp_path / "huge"
    folder.mkdir()
    for t in range(4):
        (folder / f"f_{t:04d}.png").write_bytes(png)
    r = subprocess.run([sys.executable, "-c", PEAK_RSS_OF_PREPARE, str(folder)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    message, grown_kib = r.stdout.strip().splitlines()
    assert message == (f"{folder / 'f_0000.png'}: is 13000x13000 = 169,000,000 pixels, over the limit of 40,000,000 "
                       "pixels of one frame (GVF4D_MAX_FRAME_PIXELS, gvf4d serve --max-frame-pixels)")
    assert int(grown_kib) < 32 * 1024          # decoding the first would take 169 MB, as RGB 507 MB


def test_shot_budgets_count_the_selected_frames_from_headers(tmp_path, rgba_frames):
    from dataclasses import replace

    from gvf4d.limits import Limits
    write_footage_frames(tmp_path / "seq", rgba_frames)       # 6 frames of 64 x 64 = 4,096 pixels
    src = open_footage(tmp_path / "seq")
    src.check_budgets(range(6))
    src.limits = replace(Limits(), max_shot_pixels=4 * 4096)
    src.check_budgets([0, 2, 4, 5])
    with pytest.raises(FootageError, match=r"the 5 selected frames hold 20,480 pixels, over the limit of 16,384 "
                                           r"pixels summed over a shot's selected frames \(GVF4D_MAX_SHOT_PIXELS"):
        src.check_budgets(range(5))
    with pytest.raises(FootageError, match=r"6 frames selected, over the limit of 5 frames per shot \(GVF4D_MAX_FRAMES"):
        prepare_footage(tmp_path / "seq", limits=replace(Limits(), max_frames=5))
    assert prepare_footage(tmp_path / "seq", stride=2, limits=replace(Limits(), max_frames=5)).frame_indices == [0, 2, 4]
    with pytest.raises(FootageError, match=r"frame_0000.png: is 64x64 = 4,096 pixels, over the limit of 4,000"):
        open_footage(tmp_path / "seq", limits=replace(Limits(), max_frame_pixels=4000))


def test_a_long_video_streams_through_ingestion_at_its_own_rate(tmp_path, monkeypatch):
    """300 frames of 24000/1001 fps green-screen video: every frame selected by default, the rate kept as a ratio,
    and while ingesting, memory beyond the canvases it fills holds a few decoded frames, not the shot's."""
    import tracemalloc
    from fractions import Fraction
    yy, xx = np.mgrid[:480, :480]
    frames = []
    for t in range(300):
        disc = (xx - 150 - t * 0.15) ** 2 + (yy - 240) ** 2 < 90 ** 2
        frames.append(np.where(disc[..., None], np.uint8([200, 40, 40]), np.uint8([0, 177, 64])))
    video = write_mp4(tmp_path / "long.mp4", frames, fps=24000 / 1001)
    src = open_footage(video)
    assert (src.frame_count, src.rate, src.size) == (300, Fraction(24000, 1001), (480, 480))
    decoded_shot = 300 * 480 * 480 * 3                          # 207 MB: every decoded frame of the shot
    monkeypatch.setattr("os.cpu_count", lambda: 2)             # two worker threads, on any machine
    tracemalloc.start()
    try:
        prep = prepare_footage(video)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prep.frame_indices == list(range(300))
    assert (prep.fps, prep.fps_rational) == (24000 / 1001, (24000, 1001))
    assert prep.rate_metadata() == {"fps": 24000 / 1001, "fps_rational": [24000, 1001]}
    canvases = prep.frames.nbytes + prep.alphas.nbytes
    assert peak - canvases < decoded_shot / 4, (peak - canvases) / 2**20
    assert (prep.alphas[-1] > 127).any() and not np.array_equal(prep.alphas[-1], prep.alphas[0])   # it moved
    # --fps overrides the rate (no ratio recorded); --frames keeps at most the first N
    short = prepare_footage(video, count=4, fps=30.0)
    assert (short.frame_indices, short.fps, short.fps_rational) == ([0, 1, 2, 3], 30.0, None)
