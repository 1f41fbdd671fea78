"""Video in, labelled video out: frame count, rate and size kept, masks identical to predicting the
frames as images, problems named by file and frame with a playable partial output."""

import sys
from fractions import Fraction

import numpy as np
import pytest
from conftest import small_run
from PIL import Image

from pixelwise.data.decode import read_image
from pixelwise.data.pairs import IMAGE_DIR
from pixelwise.inference.predict import predict
from pixelwise.inference.predictor import Predictor
from pixelwise.inference.video import VideoOptions, predict_video, require_av

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory):
    return small_run(scenes, tmp_path_factory.mktemp("video") / "run", epochs=1)


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor(run)


def write_clip(path, frames, rate=12, codec="ffv1", pix_fmt="bgr0"):
    """Encode RGB frames with PyAV; ffv1 in bgr0 is lossless, so decoded frames equal the originals."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, (stream.height, stream.width)


def scene_frames(scenes, n):
    return [read_image(p) for p in sorted((scenes / IMAGE_DIR).iterdir())[:n]]


def read_masks(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.iterdir())}


def test_lossless_clip_keeps_count_rate_size_and_masks_match_the_frames(predictor, scenes, tmp_path):
    frames = scene_frames(scenes, 12)
    clip = write_clip(tmp_path / "drive.mkv", frames)
    result = predict_video(predictor, clip, tmp_path / "out", VideoOptions(save_masks=True, progress=False))
    assert result.problems == [] and result.frames == 12
    written, rate, size = decode(tmp_path / "out" / "drive_overlay.mp4")
    assert len(written) == 12 and rate == 12 and size == (96, 128)
    masks = read_masks(tmp_path / "out" / "drive_masks")
    assert list(masks) == [f"{i:06d}.png" for i in range(12)]
    for i, frame in enumerate(frames):  # the clip is lossless: the masks of the original PNG frames
        assert np.array_equal(masks[f"{i:06d}.png"], predictor.predict(frame)), f"frame {i}"


def test_every_nth_frame_side_by_side_from_a_lossy_mp4(predictor, scenes, tmp_path):
    clip = write_clip(tmp_path / "lossy.mp4", scene_frames(scenes, 10), rate=Fraction(30000, 1001),
                      codec="libx264", pix_fmt="yuv420p")
    result = predict_video(predictor, clip, tmp_path / "out",
                           VideoOptions(every=3, save_masks=True, side_by_side=True, batch_size=3, progress=False))
    assert result.problems == [] and result.frames == 4
    written, rate, size = decode(tmp_path / "out" / "lossy_side_by_side.mp4")
    assert len(written) == 4 and rate == Fraction(10000, 1001) and size == (96, 256)  # same duration, twice as wide
    decoded, _, _ = decode(clip)
    masks = read_masks(tmp_path / "out" / "lossy_masks")
    assert list(masks) == ["000000.png", "000003.png", "000006.png", "000009.png"]
    for name, mask in masks.items():  # the frames as the video library decodes them
        assert np.array_equal(mask, predictor.predict(decoded[int(name[:6])]))


def test_truncated_video_names_file_and_frame_and_keeps_a_playable_output(predictor, scenes, tmp_path):
    frames = scene_frames(scenes, 8) * 4
    clip = write_clip(tmp_path / "cut.mkv", frames)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    result = predict_video(predictor, clip, tmp_path / "out", VideoOptions(progress=False))
    assert len(result.problems) == 1
    message = str(result.problems[0])
    assert "cut.mkv" in message and "frame" in message and str(result.frames) in message
    assert 0 < result.frames < 32
    written, _, _ = decode(tmp_path / "out" / "cut_overlay.mp4")
    assert len(written) == result.frames  # what was written plays


def test_videos_and_images_mixed_on_one_call_with_an_unreadable_video(predictor, scenes, tmp_path):
    clip = write_clip(tmp_path / "good.mkv", scene_frames(scenes, 3))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a movie")
    image = sorted((scenes / IMAGE_DIR).iterdir())[0]
    result = predict(predictor, [clip, bad, image], tmp_path / "out", video=VideoOptions(progress=False))
    names = {p.name for p in result.written}
    assert {"good_overlay.mp4", f"{image.stem}_mask.png"} <= names
    assert [(p.path.name, "cannot read as a video" in p.message) for p in result.problems] == [("broken.mp4", True)]


def test_cli_predicts_a_video(run, scenes, tmp_path):
    from pixelwise.cli import main

    clip = write_clip(tmp_path / "cli.mkv", scene_frames(scenes, 4))
    code = main(["predict", str(run), str(clip), "--out", str(tmp_path / "out"), "--save-masks", "--every", "2",
                 "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "out" / "cli_masks").iterdir()) == ["000000.png", "000002.png"]
    assert len(decode(tmp_path / "out" / "cli_overlay.mp4")[0]) == 2


def test_missing_pyav_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ValueError, match=r'pip install "pixelwise\[video\]"'):
        require_av()


def test_options_are_checked():
    with pytest.raises(ValueError, match="^every must be at least 1"):
        VideoOptions(every=0)


def test_legend_lists_the_classes_in_view_most_pixels_first(predictor):
    from pixelwise.inference.video import Legend

    mask = np.zeros((480, 640), np.uint8)
    mask[:, :200] = 5  # 31%
    mask[:40, 600:] = 7  # 0.52%: just above the 0.5% threshold
    mask[400:404, 300:304] = 9  # 0.005%: below it
    legend = Legend(predictor.classes, 480)
    assert legend.shown(mask) == (0, 5, 7)
    picture = np.full((480, 640, 3), 128, np.uint8)
    drawn = legend.draw(picture.copy(), mask)
    assert (drawn[:20, :20] != 128).any() and (drawn[240:] == 128).all()  # top-left corner only
