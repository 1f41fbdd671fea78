"""Video in, labelled video out: ``drive.mp4`` → ``drive_overlay.mp4`` (same size and frame rate, the
colour mask blended over each frame with a small legend), and with ``save_masks`` one 8-bit id PNG per
predicted frame.

Three stages run side by side so none waits for the others: a thread decodes frames, the calling
thread predicts them in batches (``predict_batch``: one forward pass per batch, torch or onnx), a
thread draws and encodes the results. Queues between them hold a few batches at most, so memory does
not grow with the video's length. The output is fragmented MP4: whatever was written before an error,
Ctrl-C or even a killed process is a playable file.

PyAV (FFmpeg's libraries, bundled in its wheels) reads any container and codec FFmpeg does without an
``ffmpeg`` binary on the PATH; it is the optional extra ``pixelwise[video]``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..classes import ClassSet
from ..data.problems import DataError, Problem
from .batch import class_shares, predict_batch
from .outputs import save_png
from .predictor import Predictor

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                  ".wmv", ".flv", ".3gp", ".ogv")
_END = object()


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def require_av():
    """The ``av`` module, or a ValueError that says how to install it."""
    try:
        import av
    except ImportError:
        raise ValueError('video input needs PyAV: pip install "pixelwise[video]"') from None
    return av


@dataclass(frozen=True)
class VideoOptions:
    """``every``: predict every Nth frame (the output then runs at 1/N of the frame rate, so its length
    stays the video's); ``side_by_side``: write input | overlay; ``batch_size``: frames per forward pass."""

    every: int = 1
    save_masks: bool = False
    side_by_side: bool = False
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every must be at least 1, not {self.every}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {self.batch_size}")


@dataclass
class VideoResult:
    written: list[Path] = field(default_factory=list)
    frames: int = 0  # frames predicted and written
    problems: list[Problem] = field(default_factory=list)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put without blocking forever: a stage that stopped early must not hang the others."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Decoder(threading.Thread):
    """Decodes every ``every``-th frame as (index, RGB array) into a bounded queue, then ``_END``."""

    def __init__(self, container, stream, size: tuple[int, int], every: int, out: queue.Queue, stop: threading.Event):
        super().__init__(name="pixelwise-decode", daemon=True)
        self.container, self.stream, self.size, self.every, self.out, self.stop = container, stream, size, every, out, stop
        self.decoded = 0
        self.corrupt: int | None = None  # the first frame flagged corrupt
        self.error: str | None = None

    def run(self) -> None:
        h, w = self.size
        try:
            for frame in self.container.decode(self.stream):
                if self.stop.is_set():
                    return
                if frame.is_corrupt and self.corrupt is None:  # damage the decoder concealed: say where
                    self.corrupt = self.decoded
                if self.decoded % self.every == 0:
                    # A stream whose size changes midway is scaled back to its first size.
                    rgb = frame.to_ndarray(format="rgb24", width=w, height=h)
                    if not _put(self.out, (self.decoded, rgb), self.stop):
                        return
                self.decoded += 1
        except Exception as exc:  # FFmpeg's errors (corrupt packets, I/O) surface as av.error.* exceptions
            self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'}"
        finally:
            _put(self.out, _END, self.stop)


class _Encoder(threading.Thread):
    """Draws each (index, frame, mask) and encodes it; saves the mask PNGs."""

    def __init__(self, writer: _Writer, items: queue.Queue, stop: threading.Event, bar) -> None:
        super().__init__(name="pixelwise-encode", daemon=True)
        self.writer, self.items, self.stop, self.bar = writer, items, stop, bar
        self.error: str | None = None

    def run(self) -> None:
        try:
            while (item := self.items.get()) is not _END:
                self.writer.write(*item)
                self.bar.update()
        except Exception as exc:  # a full disk, an encoder failure: stop the pipeline and report it
            self.error = f"{type(exc).__name__}: {exc}"
            self.stop.set()


class _Writer:
    """The output video (and mask folder) of one input."""

    def __init__(self, path: Path, size: tuple[int, int], rate: Fraction, classes: ClassSet, side_by_side: bool,
                 masks_dir: Path | None) -> None:
        av = require_av()
        h, w = size
        self.path, self.classes, self.side_by_side, self.masks_dir = path, classes, side_by_side, masks_dir
        self.size = size  # of the frames, (height, width)
        self.frames = 0
        self.legend = Legend(classes, h)
        self.palette = classes.palette()
        # Fragmented MP4: each fragment is playable as soon as it is written (no index at the end).
        self.container = av.open(str(path), "w", format="mp4",
                                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        out_w = 2 * w if side_by_side else w
        # 4:2:0 needs even sides; odd-sized videos keep their size in 4:4:4 (libx264 only).
        even = out_w % 2 == 0 and h % 2 == 0
        # ultrafast: 3-4x less CPU per frame than veryfast, for files about 1.6x larger.
        options = {"preset": "ultrafast", "crf": "20", "g": str(max(1, round(2 * rate)))} if codec == "libx264" else {}
        self.stream = self.container.add_stream(codec, rate=rate, options=options)
        self.stream.width, self.stream.height = out_w, h
        self.stream.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"
        self.time_base = Fraction(1) / rate

    def write(self, index: int, frame: np.ndarray, mask: np.ndarray) -> None:
        import av

        picture = self.legend.draw(_blend(frame, np.take(self.palette, mask, axis=0)), mask)
        if self.side_by_side:
            picture = np.concatenate([frame, picture], axis=1)
        video_frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        video_frame.pts, video_frame.time_base = self.frames, self.time_base
        self.container.mux(self.stream.encode(video_frame))
        if self.masks_dir is not None:
            save_png(self.masks_dir / f"{index:06d}.png", mask)
        self.frames += 1

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))  # flush the encoder's delayed frames
        finally:
            self.container.close()


def _blend(frame: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Half frame, half class colour, as ``outputs.overlay`` blends, but in uint8 without widening:
    (a + b + 1) >> 1 computed as (a >> 1) + (b >> 1) + ((a | b) & 1), several times faster per frame
    (halves round up here, to even there: at most 1 apart in a channel)."""
    return (frame >> 1) + (colors >> 1) + ((frame | colors) & 1)


class Legend:
    """The classes in view, drawn in the top-left corner: a swatch and a name each, most pixels first.
    Drawn images are cached by the set of classes shown, so most frames only paste one."""

    def __init__(self, classes: ClassSet, height: int, most: int = 8, min_share: float = 0.005) -> None:
        self.classes, self.most, self.min_share = classes, most, min_share
        self.size = max(9, height // 36)
        try:
            self.font = ImageFont.load_default(self.size)
        except TypeError:  # Pillow < 10.1: the fixed bitmap font
            self.font = ImageFont.load_default()
        self.cache: dict[tuple[int, ...], np.ndarray] = {}

    def shown(self, mask: np.ndarray) -> tuple[int, ...]:
        """The classes to list, most pixels first. Counted on every 4th pixel of every 4th row: shares
        within half a percentage point of the exact ones on CARLA masks, at an eighth of the cost."""
        shares = class_shares(mask[::4, ::4], len(self.classes))
        return tuple(int(i) for i in np.argsort(-shares, kind="stable")[: self.most] if shares[i] >= self.min_share)

    def draw(self, picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
        shown = self.shown(mask)
        if shown not in self.cache:
            self.cache[shown] = self._render(shown)
        legend = self.cache[shown]
        h, w = min(legend.shape[0], picture.shape[0]), min(legend.shape[1], picture.shape[1])
        box = picture[:h, :w].astype(np.uint16)
        picture[:h, :w] = ((box + 3 * legend[:h, :w]) // 4).astype(np.uint8)  # mostly opaque, scene still visible
        return picture

    def _render(self, shown: tuple[int, ...]) -> np.ndarray:
        line, pad = self.size + 4, 3
        width = pad * 2 + line + max((int(self.font.getlength(self.classes.names[i])) for i in shown), default=0)
        image = Image.new("RGB", (width, pad * 2 + line * len(shown)), (20, 20, 20))
        draw = ImageDraw.Draw(image)
        for row, i in enumerate(shown):
            y = pad + row * line
            draw.rectangle([pad, y + 2, pad + self.size, y + 2 + self.size], fill=self.classes.colors[i])
            draw.text((pad + line, y + 1), self.classes.names[i], fill=(255, 255, 255), font=self.font)
        return np.asarray(image, dtype=np.uint16)


def _batches(frames: queue.Queue, size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Up to ``size`` decoded frames at a time, fewer when the decoder is behind, until ``_END``."""
    while True:
        item = frames.get()
        if item is _END:
            return
        batch = [item]
        while len(batch) < size:
            try:
                item = frames.get(timeout=0.5 if len(batch) < size // 2 else 0)
            except queue.Empty:
                break
            if item is _END:
                yield batch
                return
            batch.append(item)
        yield batch


def _frame_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate and rate > 0 else Fraction(25)


def _expected_frames(container, stream, rate: Fraction) -> int | None:
    """The frame count the header announces (or its duration implies), to notice a video that ends early."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if container.duration:
        return round(Fraction(container.duration, 1_000_000) * rate)
    return None


def predict_video(predictor: Predictor, path: str | Path, out_dir: str | Path,
                  options: VideoOptions = VideoOptions(), size: tuple[int, int] | str | None = None) -> VideoResult:
    """Predict one video into ``out_dir``: ``STEM_overlay.mp4`` (``STEM_side_by_side.mp4`` with
    ``side_by_side``) and with ``save_masks`` ``STEM_masks/NNNNNN.png`` named by frame number.

    Args:
        predictor: the loaded run (``pw.load``), with its engine and settings.
        path: the video file.
        out_dir: where the outputs go.
        options: frames, outputs and batch size.
        size: what the model sees, as in ``Predictor.predict``.

    Returns:
        The files written, the frames predicted, and problems naming the file and the frame; what was
        written up to a problem stays a playable video.

    Raises:
        DataError: the file cannot be read as a video. ValueError: PyAV is missing.
    """
    av = require_av()
    path, out_dir = Path(path), Path(out_dir)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(path, f"cannot read as a video ({_first_line(exc)})")]) from None
    try:
        stream, shape, rate, expected = _video_stream(container, path)
        masks_dir = out_dir / f"{path.stem}_masks" if options.save_masks else None
        (masks_dir or out_dir).mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{path.stem}_{'side_by_side' if options.side_by_side else 'overlay'}.mp4"
        writer = _Writer(target, shape, rate / options.every, predictor.classes, options.side_by_side, masks_dir)
        total = -(-expected // options.every) if expected else None
        decoder, encoder = _run_pipeline(predictor, container, stream, writer, options, size,
                                         _progress_bar(total, path.name, options.progress))
        written = [target] + ([masks_dir] if masks_dir is not None else [])
        return VideoResult(written, writer.frames, _problems(path, target, decoder, encoder, writer.frames, expected))
    finally:
        container.close()


def _video_stream(container, path: Path) -> tuple[object, tuple[int, int], Fraction, int | None]:
    """The first video stream, its frame size, frame rate and announced frame count."""
    if not container.streams.video:
        raise DataError([Problem(path, "holds no video stream")])
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows it
    shape = stream.codec_context.height, stream.codec_context.width
    if min(shape) < 1:
        raise DataError([Problem(path, "video stream has no frame size (an unreadable codec?)")])
    rate = _frame_rate(stream)
    return stream, shape, rate, _expected_frames(container, stream, rate)


def _progress_bar(total: int | None, name: str, shown: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="frame", disable=not shown or None, leave=True)


def _run_pipeline(predictor: Predictor, container, stream, writer: _Writer, options: VideoOptions,
                  size: tuple[int, int] | str | None, bar) -> tuple[_Decoder, _Encoder]:
    """Decode, predict (here, in batches) and encode side by side until the video ends, a stage fails
    or Ctrl-C; the output is closed playable whatever happens."""
    stop = threading.Event()
    frames: queue.Queue = queue.Queue(maxsize=2 * options.batch_size)
    items: queue.Queue = queue.Queue(maxsize=2 * options.batch_size)
    decoder = _Decoder(container, stream, writer.size, options.every, frames, stop)
    encoder = _Encoder(writer, items, stop, bar)
    decoder.start()
    encoder.start()
    try:
        for batch in _batches(frames, options.batch_size):
            if stop.is_set():
                break
            masks = predict_batch(predictor, [frame for _, frame in batch], size)
            for (index, frame), mask in zip(batch, masks):
                if not _put(items, (index, frame, mask), stop):
                    break
    finally:  # also on Ctrl-C: stop decoding, finish encoding what was predicted, close the file playable
        stop_decoder(decoder, stop, frames)
        while encoder.is_alive():  # unless it failed, the encoder drains what was predicted, then ends
            try:
                items.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        encoder.join()
        writer.close()
        bar.close()
    return decoder, encoder


def _problems(path: Path, target: Path, decoder: _Decoder, encoder: _Encoder, frames: int,
              expected: int | None) -> list[Problem]:
    """What went wrong, naming the file and the frame, and what was kept."""
    problems = []
    kept = f"the {frames} frames before it are in {target.name}"
    if encoder.error:
        problems.append(Problem(target, f"cannot write frame {decoder.decoded} ({encoder.error}); {kept}"))
    elif decoder.error:
        problems.append(Problem(path, f"frame {decoder.decoded}: unreadable video data ({decoder.error}); {kept}"))
    elif expected and decoder.decoded < expected - 1:  # a duration rounds to ±1 frame
        problems.append(Problem(path, f"video ends at frame {decoder.decoded} of the {expected} its header "
                                      f"announces (a truncated or damaged file?); {kept}"))
    if decoder.corrupt is not None:
        problems.append(Problem(path, f"frame {decoder.corrupt}: corrupt video data, concealed by the decoder "
                                      "(this frame and some after it may show artefacts)"))
    return problems


def predict_video_reporting(predictor: Predictor, path: str | Path, out_dir: str | Path, options: VideoOptions,
                            size: tuple[int, int] | str | None = None) -> VideoResult:
    """``predict_video``, with an unreadable video (or PyAV missing) as a problem in the result rather
    than an exception, so the other files of a ``predict`` call are still predicted."""
    try:
        return predict_video(predictor, path, out_dir, options, size)
    except DataError as exc:
        return VideoResult(problems=list(exc.problems))
    except ValueError as exc:  # PyAV not installed
        return VideoResult(problems=[Problem(Path(path), str(exc))])


def stop_decoder(decoder: _Decoder, stop: threading.Event, frames: queue.Queue) -> None:
    """Stop the decode thread (it may be blocked on a full queue) and wait for it."""
    stop.set()
    while decoder.is_alive():
        try:
            frames.get(timeout=0.1)
        except queue.Empty:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
