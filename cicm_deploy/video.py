"""Video in, video out: a fixed occlusion mask, or per-frame boxes rasterized to masks. OpenCV I/O.

Boxes file (JSON lines): ``{"frame": 12, "boxes": [[x0, y0, x1, y1], ...]}`` in pixels, x1/y1
exclusive, fractional ends rounded outward, clipped to the frame (a box wholly outside it masks
nothing, and the command warns); frames without a line have no hole and are copied through
untouched. The output has the input's container and frame rate, no audio. It is written beside
TARGET and moved into place when done: a failed run leaves TARGET as it was; Ctrl-C stops
cleanly and TARGET holds the frames written so far, playable.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .images import SAVE_FORMATS

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class VideoError(ValueError):
    """A video, mask or boxes file that cannot be used."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise VideoError("video needs OpenCV: pip install 'cicm-deploy[video]'") from None
    return cv2


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int  # as the container reports it (0 when unknown)


def probe(path: str | os.PathLike) -> VideoInfo:
    cv2 = _cv2()
    if not Path(path).is_file():
        raise VideoError(f"video {path} does not exist")
    if Path(path).suffix.lower() in SAVE_FORMATS:  # OpenCV reads one as a one-frame video: almost surely a slip
        raise VideoError(f"{path} is a still image, not a video; inpaint it with `cicm-deploy inpaint {path} MASK "
                         "-o OUT`")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path} cannot be opened as a video (unknown container or codec)")
    info = VideoInfo(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     float(capture.get(cv2.CAP_PROP_FPS)) or 25.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    capture.release()
    if info.width <= 0 or info.height <= 0:  # OpenCV "opens" some still images and junk as 0x0 streams
        raise VideoError(f"{path} is not a readable video (no frame size); expected a video file (mp4, avi, mkv, ...)")
    return info


def read_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """RGB uint8 frames."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def load_boxes(path: str | os.PathLike, width: int, height: int) -> dict[int, list[tuple[int, int, int, int]]]:
    """Frame index -> boxes [x0, y0, x1, y1] in whole pixels; fractional ends round outward (a box
    covers every pixel it touches: what is to be hidden stays hidden)."""
    boxes: dict[int, list[tuple[int, int, int, int]]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VideoError(f"boxes file {path} cannot be read ({exc})") from None
    except UnicodeDecodeError:
        raise VideoError(f"boxes file {path} is not text (expected JSON lines {{\"frame\": N, \"boxes\": "
                         "[[x0, y0, x1, y1], ...]}})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            frame = record["frame"]
            raw = [[float(v) for v in box] for box in record["boxes"]]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise VideoError(f"{path}:{number}: expected {{\"frame\": N, \"boxes\": [[x0, y0, x1, y1], ...]}}, "
                             f"got {line[:80]!r}") from None
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise VideoError(f"{path}:{number}: \"frame\" must be a frame index (an integer from 0), got {frame!r}")
        for box in raw:
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[0] >= box[2] or box[1] >= box[3]:
                raise VideoError(f"{path}:{number}: box {box} is not [x0, y0, x1, y1] with x0 < x1, y0 < y1")
        entries = [(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)) for x0, y0, x1, y1 in raw]
        boxes.setdefault(frame, []).extend(entries)
    return boxes


def boxes_warnings(boxes: dict[int, list[tuple[int, int, int, int]]], width: int, height: int,
                   frames: int) -> list[str]:
    """What in a boxes file will hide nothing: no boxes at all, frames past the video's end (when
    ``frames`` > 0), boxes wholly outside the picture. Privacy runs should hear of each."""
    if not any(boxes.values()):
        return ["the boxes file has no boxes: every frame is copied through without a hole"]
    notes = []
    late = sorted(frame for frame in boxes if frames and frame >= frames)
    if late:
        notes.append(f"{len(late)} frame(s) of the boxes file are past the video's last frame {frames - 1} "
                     f"(e.g. frame {late[0]}): their boxes hide nothing")
    outside = [(frame, box) for frame, entries in sorted(boxes.items()) for box in entries
               if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height]
    if outside:
        frame, box = outside[0]
        notes.append(f"{len(outside)} box(es) lie wholly outside the {width}x{height} picture (e.g. {list(box)} on "
                     f"frame {frame}): they hide nothing")
    return notes


def boxes_mask(entries: list[tuple[int, int, int, int]], width: int, height: int) -> np.ndarray:
    """The boxes clipped to the frame, as a hole mask (both ends clipped: a negative end is not a
    Python index from the far side)."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in entries:
        top, bottom = min(max(0, y0), height), min(max(0, y1), height)
        left, right = min(max(0, x0), width), min(max(0, x1), width)
        mask[top:bottom, left:right] = True
    return mask


def fourcc(target: Path) -> str:
    """The codec written into ``target``'s container, named by its suffix."""
    code = FOURCC.get(target.suffix.lower())
    if code is None:
        raise VideoError(f"cannot write {target}: unknown container {target.suffix!r}; expected one of "
                         f"{', '.join(sorted(FOURCC))}")
    return code


def check_mask(mask: np.ndarray | None, info: VideoInfo) -> None:
    if mask is not None and mask.shape != (info.height, info.width):
        raise VideoError(f"the mask is {mask.shape[1]}x{mask.shape[0]} pixels but the video is "
                         f"{info.width}x{info.height} (width x height)")


def check_paths(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Refuse what would lose data or fail only after the model has loaded."""
    source, target = Path(source), Path(target)
    fourcc(target)
    if target.exists() and source.exists() and os.path.samefile(source, target):
        raise VideoError(f"the output {target} is the input video: writing it would destroy the frames being "
                         "read; choose another output path")


class VideoWriter:
    """Frames (RGB uint8) to a file in the container its suffix names.

    Frames go to a hidden partial file beside ``path``; ``commit`` (or ``close``) moves it into
    place, ``discard`` deletes it. Until then an existing ``path`` (a previous run's output) is
    untouched.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float) -> None:
        cv2 = _cv2()
        self.path = Path(path)
        code = fourcc(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the suffix stays last: OpenCV picks the container from it
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*code), fps, (width, height))
        if not self.writer.isOpened():
            self.partial.unlink(missing_ok=True)
            raise VideoError(f"OpenCV cannot write {self.path} with codec {code}")
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(_cv2().cvtColor(frame, _cv2().COLOR_RGB2BGR))
        self.count += 1

    def commit(self) -> None:
        self.writer.release()
        os.replace(self.partial, self.path)

    def close(self) -> None:
        """Finish the file: the frames written so far become ``path`` (``commit``)."""
        self.commit()

    def discard(self) -> None:
        self.writer.release()
        self.partial.unlink(missing_ok=True)


def inpaint_video(inpainter, source: str | os.PathLike, target: str | os.PathLike, *, mask: np.ndarray | None = None,
                  boxes: dict[int, list[tuple[int, int, int, int]]] | None = None, batch_size: int = 4,
                  on_frame: Callable[[int], None] = lambda n: None) -> int:
    """Inpaint every frame of ``source`` into ``target``; returns the frames written.

    ``target`` is replaced only by a finished run, or by the frames done before a Ctrl-C (a
    playable file); a failed run leaves it as it was and writes nothing.
    """
    info = probe(source)
    if (mask is None) == (boxes is None):
        raise VideoError("give either a fixed mask or per-frame boxes")
    check_mask(mask, info)
    check_paths(source, target)
    writer = VideoWriter(target, info.width, info.height, info.fps)
    try:
        if mask is not None:
            masks = mask
        else:
            masks = (boxes_mask(boxes.get(index, []), info.width, info.height) for index in range(10**12))
        for frame in inpainter.stream(read_frames(source), masks, batch_size=batch_size):
            writer.write(frame)
            on_frame(writer.count)
        if writer.count == 0:
            raise VideoError(f"{source} gave no frame to read (its container says {info.frames}); nothing was written")
    except KeyboardInterrupt:
        if writer.count:
            writer.commit()  # the frames written so far, playable
        else:
            writer.discard()
        raise
    except BaseException:
        writer.discard()
        raise
    writer.commit()
    return writer.count
