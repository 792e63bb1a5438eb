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
    with pytest.raises(FootageError, match="4 frames available .* but 32 were asked"):
        select_frame_indices(10, start=2, stride=2, count=32, path="clip.mp4")
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
    with pytest.raises(FootageError, match=r"matting weights .*u2net.onnx are missing.*--matte chroma"):
        prepare_footage(video, count=3)
    truth = prepare_footage_from_rgba(tmp_path, rgba)
    for spec in ("chroma:#00b140", "chroma"):   # given key colour, and the border's median colour
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
    with pytest.raises(FootageError, match="2 frames available"):
        prepare_footage(blank, count=3)


def _tiny_matting_model(path):
    """A stand-in U^2-Net: one 1x1 convolution (green screen -> low) and a sigmoid, in ONNX, same I/O layout."""
    import onnx
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [4.0, -6.0, 4.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input.1", "w", "b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["d1"])],
        "tiny_u2net", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("d1", TensorProto.FLOAT, [1, 1, 320, 320])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def test_model_matting_from_local_weights(tmp_path):
    from gvf4d.synthetic import make_synthetic_shot, render_footage
    rgba = render_footage(make_synthetic_shot(num_frames=2, gaussians_per_part=300, seed=1).animated, 128, 128).numpy()
    video = write_mp4(tmp_path / "clip.mp4", composite(rgba), fps=12)
    weights = tmp_path / "weights"
    with pytest.raises(FootageError, match="u2net.onnx are missing"):
        prepare_footage(video, count=2, matting=MattingOptions.parse("model", weights))
    _tiny_matting_model(weights / "matting" / "u2net.onnx")
    from gvf4d.footage import frame_alpha
    (_, frame), = open_footage(video).read([0])
    alpha = frame_alpha(frame, 0, MattingOptions.parse("model", weights), video)
    keyed, true = alpha > 127, rgba[0, ..., 3] > 127
    assert alpha.shape == (128, 128) and (keyed & true).sum() / (keyed | true).sum() > 0.7   # crude stand-in, still the object
    prep = prepare_footage(video, count=2, matting=MattingOptions.parse("auto", weights))   # auto: no alpha -> model
    assert prep.alphas.max() == 255 and (prep.alphas[:, :40] == 0).all()
    (weights / "matting" / "u2net.onnx").write_bytes(b"not onnx")
    from gvf4d.footage.matting import U2NetMatting
    U2NetMatting._loaded.clear()
    with pytest.raises(FootageError, match="u2net.onnx: cannot be loaded as an ONNX matting model"):
        prepare_footage(video, count=2, matting=MattingOptions.parse("model", weights))
