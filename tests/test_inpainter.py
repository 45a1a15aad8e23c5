"""The embedding API: one object per model, frames of any size, streams, threads; the video command."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
from PIL import Image
from click.testing import CliRunner

from cicm_deploy import Inpainter
from cicm_deploy.cli import cli
from cicm_deploy.images import save_mask


@pytest.fixture(scope="module")
def frames():
    from cicm_deploy.export.goldens import make_inputs

    arrays = make_inputs([(40, 56, 7)], seed=3)
    return [np.rint(x.transpose(1, 2, 0) * 255).astype(np.uint8) for x in arrays["s0.image"]]


@pytest.fixture(scope="module")
def masks(frames):
    rng = np.random.default_rng(0)
    return [rng.random(frames[0].shape[:2]) > 0.8 for _ in frames]


def test_checkpoint_and_bundle_agree_and_keep_known_pixels(routed_checkpoint, bundles, frames, masks):
    with Inpainter(routed_checkpoint) as torch_side, Inpainter(bundles("fp32", "onnx").path) as ort_side:
        assert torch_side.describe()["backend"] == "torch" and ort_side.describe()["backend"] == "onnxruntime"
        a, b = torch_side(frames[0], masks[0]), ort_side(frames[0], masks[0])
    assert a.dtype == np.uint8 and a.shape == frames[0].shape
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.array_equal(a[~masks[0]], frames[0][~masks[0]])


def test_batch_equals_single_calls_and_empty_masks_skip_the_network(bundles, frames, masks):
    with Inpainter(bundles("fp32", "onnx").path) as inpaint:
        empty = np.zeros_like(masks[0])
        batch = inpaint.batch(frames[:3] + [frames[3][:17, :23]], [masks[0], empty, masks[2], masks[3][:17, :23]])
        assert np.array_equal(batch[1], frames[1])
        assert np.array_equal(batch[0], inpaint(frames[0], masks[0]))
        assert np.array_equal(batch[2], inpaint(frames[2], masks[2]))
        assert np.array_equal(batch[3], inpaint(frames[3][:17, :23], masks[3][:17, :23]))


def test_stream_static_and_per_frame_masks(bundles, frames, masks):
    with Inpainter(bundles("fp32", "onnx").path) as inpaint:
        serial_static = [inpaint(f, masks[0]) for f in frames]
        streamed = list(inpaint.stream(iter(frames), masks[0], batch_size=3))
        assert len(streamed) == len(frames)
        assert all(np.array_equal(a, b) for a, b in zip(streamed, serial_static))
        per_frame = list(inpaint.stream(frames, masks, batch_size=2))
        assert all(np.array_equal(a, inpaint(f, m)) for a, f, m in zip(per_frame, frames, masks))
        with pytest.raises(ValueError, match="fewer masks than frames"):
            list(inpaint.stream(frames, masks[:2], batch_size=2))
        source = CountingFrames(frames * 50)
        early = inpaint.stream(source, masks[0], batch_size=2, queue_size=1)
        next(early)
        early.close()  # the reader thread stops instead of decoding the rest
        assert_reader_stopped(source, batch_size=2, queue_size=1, workers=1)


class CountingFrames:
    """An iterator over frames that counts how many were taken (a decoder's work)."""

    def __init__(self, frames):
        self.frames, self.taken = list(frames), 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.taken == len(self.frames):
            raise StopIteration
        self.taken += 1
        return self.frames[self.taken - 1]


def assert_reader_stopped(source: CountingFrames, batch_size: int, queue_size: int, workers: int) -> None:
    # taken at most: the batches handed out or in flight, the queued ones, the one being filled, one more
    bound = batch_size * (workers + queue_size + 2) + 1
    assert source.taken <= bound < len(source.frames), (source.taken, bound)
    assert not [t for t in threading.enumerate() if t.name == "cicm-stream-reader"]


def test_workers_stream_in_order_and_match_one_worker(bundles, frames, masks):
    with Inpainter(bundles("fp32", "onnx").path) as one:
        expected = [one(f, masks[0]) for f in frames]
        expected_batches = one.batch(frames, masks)
    with Inpainter(bundles("fp32", "onnx").path, workers=3) as three:
        assert three.describe()["workers"] == 3
        streamed = list(three.stream(frames * 3, masks[0], batch_size=2))
        assert [np.array_equal(a, b) for a, b in zip(streamed, expected * 3)] == [True] * (3 * len(frames))
        assert all(np.array_equal(a, b) for a, b in zip(three.batch(frames, masks), expected_batches))
        source = CountingFrames(frames * 50)
        early = three.stream(source, masks[0], batch_size=1, queue_size=1)
        next(early)
        early.close()  # in-flight batches finish, the reader stops
        assert_reader_stopped(source, batch_size=1, queue_size=1, workers=3)
        with pytest.raises(ValueError, match="fewer masks than frames"):
            list(three.stream(frames, masks[:2], batch_size=1))


@pytest.mark.parametrize("workers", [1, 2])
def test_concurrent_calls_match_serial(bundles, frames, masks, workers):
    with Inpainter(bundles("fp32", "onnx").path, workers=workers) as inpaint:
        serial = [inpaint(f, m) for f, m in zip(frames, masks)]
        results: dict[int, list[np.ndarray]] = {}

        def work(worker: int) -> None:
            results[worker] = [inpaint(f, m) for f, m in zip(frames, masks)]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 8
    for outputs in results.values():
        assert all(np.array_equal(a, b) for a, b in zip(outputs, serial))


def test_frames_are_never_the_callers_buffers(bundles, frames, masks):
    with Inpainter(bundles("fp32", "onnx").path) as inpaint:
        untouched = inpaint(frames[0], np.zeros_like(masks[0]))  # no hole: the network is skipped
        assert np.array_equal(untouched, frames[0]) and not np.may_share_memory(untouched, frames[0])
        both = inpaint.batch(frames[:2], [np.zeros_like(masks[0]), masks[1]])
        assert np.array_equal(both[0], frames[0]) and not np.may_share_memory(both[0], frames[0])
        buffer = frames[0].copy()

        def camera():  # an SDK that reuses one buffer for every frame
            for frame in frames:
                buffer[:] = frame
                yield buffer

        hole = masks[0][:, :, None]  # [H, W, 1]: one mask for every frame, as __call__ takes it
        streamed = list(inpaint.stream(camera(), hole, batch_size=4))
        assert all(np.array_equal(a, inpaint(f, masks[0])) for a, f in zip(streamed, frames))
        empty = list(inpaint.stream(camera(), np.zeros_like(masks[0]), batch_size=4))
        assert all(np.array_equal(a, f) for a, f in zip(empty, frames))


@pytest.mark.parametrize("workers,batch_size", [(1, 4), (2, 2), (3, 1)])
def test_stream_hands_out_the_frames_read_before_a_source_error(bundles, frames, masks, workers, batch_size):
    def failing_camera():
        yield from frames[:3]
        raise RuntimeError("camera disconnected")

    with Inpainter(bundles("fp32", "onnx").path, workers=workers) as inpaint:
        got = []
        with pytest.raises(RuntimeError, match="camera disconnected"):
            for frame in inpaint.stream(failing_camera(), masks[0], batch_size=batch_size):
                got.append(frame)
        assert len(got) == 3 and all(np.array_equal(a, inpaint(f, masks[0])) for a, f in zip(got, frames))
        collected = []
        with pytest.raises(ValueError, match="fewer masks than frames"):
            for frame in inpaint.stream(frames, masks[:3], batch_size=batch_size):
                collected.append(frame)
        assert len(collected) == 3  # the frames that had masks come out before the error


def test_a_frame_without_pixels_is_refused(bundles):
    from cicm_deploy.images import ImageError

    with Inpainter(bundles("fp32", "onnx").path) as inpainter:
        with pytest.raises(ImageError, match=r"image is 0x0 \(width x height\): it has no pixels"):
            inpainter(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), bool))
        with pytest.raises(ImageError, match="it has no pixels"):
            inpainter.batch([np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 3), np.uint8)],
                            [np.zeros((4, 4), bool), np.zeros((0, 4), bool)])


def test_a_closed_inpainter_refuses_work(bundles, frames, masks):
    inpaint = Inpainter(bundles("fp32", "onnx").path)
    inpaint.close()
    inpaint.close()  # twice is fine
    for use in (lambda: inpaint(frames[0], masks[0]), lambda: inpaint.batch(frames[:2], masks[:2]),
                lambda: inpaint.batch([], []), lambda: next(inpaint.stream(frames, masks[0])), inpaint.describe):
        with pytest.raises(RuntimeError, match="this Inpainter is closed"):
            use()
    assert not inpaint.runtime.loaded


def test_close_waits_for_calls_in_flight_and_stops_waiting_ones(bundles, frames, masks):
    inpaint = Inpainter(bundles("fp32", "onnx").path)
    runtime = inpaint.runtime
    entered, release = threading.Event(), threading.Event()
    real = runtime.infer_pairs

    def slow(pairs):  # a call in flight that holds the only runtime until released
        entered.set()
        release.wait(10)
        return real(pairs)

    runtime.infer_pairs = slow
    outcomes = {}

    def call(name):
        try:
            outcomes[name] = inpaint(frames[0], masks[0]).shape
        except RuntimeError as exc:
            outcomes[name] = str(exc)

    first = threading.Thread(target=call, args=("in flight",))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=call, args=("waiting",))  # waits for the runtime
    second.start()
    closer = threading.Thread(target=inpaint.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and runtime.loaded  # the call in flight keeps its runtime open
    release.set()
    for thread in (first, second, closer):
        thread.join(10)
    assert outcomes["in flight"] == frames[0].shape
    assert outcomes["waiting"] == "this Inpainter is closed; make a new one"
    assert not runtime.loaded  # and nothing reopened it


def test_a_zero_one_uint8_mask_warns(bundles, frames, masks, tmp_path):
    with Inpainter(bundles("fp32", "onnx").path) as inpaint:
        with pytest.warns(UserWarning, match="only 0s and 1s"):
            out = inpaint(frames[0], masks[0].astype(np.uint8))
        assert np.array_equal(out, frames[0])  # the 255 = hole rule holds; the warning says what happened
    from cicm_deploy.images import load_mask

    Image.fromarray(masks[0].astype(np.uint8)).save(tmp_path / "zero_one.png")  # as segmentation tools write them
    with pytest.warns(UserWarning, match="zero_one.png holds only 0s and 1s, which reads as no hole at all"):
        assert not load_mask(tmp_path / "zero_one.png").any()
    with pytest.warns(UserWarning, match="reads as every pixel a hole \\(inverted\\)"):
        assert load_mask(tmp_path / "zero_one.png", invert=True).all()
    Image.fromarray(masks[0].astype(np.uint16) * 100).save(tmp_path / "sixteen.png")  # 16-bit: 0/1 after scaling only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_mask(tmp_path / "sixteen.png")
    Image.fromarray(frames[0]).save(tmp_path / "frame.png")  # the command line says it in one line, no source quote
    done = subprocess.run([sys.executable, "-m", "cicm_deploy.cli", "inpaint", str(tmp_path / "frame.png"),
                           str(tmp_path / "zero_one.png"), "-o", str(tmp_path / "out.png"), "--bundle",
                           str(bundles("fp32", "onnx").path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning: mask " in done.stderr and "UserWarning" not in done.stderr and "images.py" not in done.stderr
    assert "rewrite the file with 255 for the holes" in done.stderr and "astype" not in done.stderr
    swapped = subprocess.run([sys.executable, "-m", "cicm_deploy.cli", "inpaint", str(tmp_path / "zero_one.png"),
                              str(tmp_path / "frame.png"), "-o", str(tmp_path / "out.png"), "--bundle",
                              str(bundles("fp32", "onnx").path)], capture_output=True, text=True)
    assert f"mask {tmp_path / 'frame.png'} looks like a photo, not a mask" in swapped.stderr, swapped.stderr
    assert "were the photo and the mask swapped?" in swapped.stderr and "looks like a photo" not in done.stderr


def test_constructor_errors(bundles, routed_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Inpainter(tmp_path / "none")
    with pytest.raises(ValueError, match="backend 'torch' needs a checkpoint"):
        Inpainter(bundles("fp32", "onnx").path, backend="torch")
    with pytest.raises(ValueError, match="is not one of"):
        Inpainter(routed_checkpoint, backend="tvm")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        Inpainter(bundles("fp32", "onnx").path, workers=0)
    with pytest.raises(ValueError, match="workers > 1 needs a bundle or an engine"):
        Inpainter(routed_checkpoint, workers=2)


def write_clip(path, frames, fps=10):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed: pip install 'cicm-deploy[video]'")

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def count_frames(path):
    from cicm_deploy.video import read_frames

    return sum(1 for _ in read_frames(path))


def test_video_command_with_mask_and_boxes(tmp_path, frames, masks, bundles):
    clip = tmp_path / "in.avi"
    write_clip(clip, frames)
    mask = save_mask(tmp_path / "m.png", masks[0])
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(cli, ["video", str(clip), str(out), "--mask", str(mask), "--model",
                                      str(bundles("fp32", "onnx").path)])
    assert result.exit_code == 0, result.output
    assert count_frames(out) == len(frames)
    boxes = tmp_path / "boxes.jsonl"
    boxes.write_text("\n".join(json.dumps({"frame": i, "boxes": [[5, 5, 20, 18]]}) for i in (0, 3, 500)))
    out2 = tmp_path / "out2.avi"
    result = CliRunner().invoke(cli, ["video", str(clip), str(out2), "--boxes", str(boxes), "--model",
                                      str(bundles("fp32", "onnx").path), "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.count(f"warning: {boxes}: 1 frame(s) of the boxes file are past the video's last frame "
                               f"{len(frames) - 1} (e.g. frame 500)") == 1, result.output
    from cicm_deploy.video import read_frames

    source, written = list(read_frames(clip)), list(read_frames(out2))
    assert len(written) == len(frames)
    box = np.zeros(frames[0].shape[:2], bool)
    box[5:18, 5:20] = True
    for index, (before, after) in enumerate(zip(source, written)):
        change = np.abs(before.astype(int) - after.astype(int)).mean(axis=2)
        outside = change[~box].mean()  # codec noise only
        assert outside < 6, (index, outside)
        if index in (0, 3):  # the boxes' frames: the box was inpainted
            assert change[box].mean() > 3 * outside + 5, (index, change[box].mean(), outside)
        else:  # the other frames: no box, nothing inpainted there either
            assert change[box].mean() < outside + 3, (index, change[box].mean(), outside)


def test_boxes_file_and_masks(tmp_path):
    from cicm_deploy.video import VideoError, boxes_mask, load_boxes

    path = tmp_path / "boxes.jsonl"
    path.write_text('{"frame": 0, "boxes": [[5, 5, 20, 18]]}\n\n{"frame": 3, "boxes": [[50, 30, 70, 50]]}\n'
                    '{"frame": 0, "boxes": [[-4, 0, 2, 3]]}\n')
    boxes = load_boxes(path, 56, 40)
    assert boxes == {0: [(5, 5, 20, 18), (-4, 0, 2, 3)], 3: [(50, 30, 70, 50)]}  # lines for one frame add up
    mask = boxes_mask(boxes[0], 56, 40)
    expected = np.zeros((40, 56), bool)
    expected[5:18, 5:20] = True  # [x0, y0, x1, y1): x is the column, the end is exclusive
    expected[0:3, 0:2] = True  # clipped at the frame's edge
    assert np.array_equal(mask, expected)
    edge = boxes_mask(boxes[3], 56, 40)
    assert edge.sum() == 10 * 6 and edge[30:, 50:].all()
    assert not boxes_mask(boxes.get(1, []), 56, 40).any()  # a frame without an entry keeps every pixel
    # boxes ending before the frame's first row or column (detector output) mask nothing
    assert not boxes_mask([(-20, 0, -5, 40), (0, -20, 56, -10), (60, 0, 80, 40)], 56, 40).any()
    path.write_text('{"frame": 2, "boxes": [[1, 2, 3]]}')
    with pytest.raises(VideoError, match="is not \\[x0, y0, x1, y1\\]"):
        load_boxes(path, 56, 40)
    path.write_text("frame 2")
    with pytest.raises(VideoError, match=":1: expected"):
        load_boxes(path, 56, 40)
    for frame in ('1.5', '"3"', '-1', 'true'):
        path.write_text('{"frame": %s, "boxes": [[1, 2, 3, 4]]}' % frame)
        with pytest.raises(VideoError, match=':1: "frame" must be a frame index'):
            load_boxes(path, 56, 40)
    path.write_text('{"frame": 0, "boxes": [[10.5, 10, 60.2, 60], [1, 2, 3.0, 4]]}')
    assert load_boxes(path, 56, 40) == {0: [(10, 10, 61, 60), (1, 2, 3, 4)]}  # rounded outward: nothing peeks out
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(VideoError, match=f"boxes file {path} is not text"):
        load_boxes(path, 56, 40)


def test_boxes_that_hide_nothing_are_reported():
    from cicm_deploy.video import boxes_warnings

    assert boxes_warnings({0: [(5, 5, 20, 18)], 3: [(-4, 0, 2, 3)]}, 56, 40, 24) == []
    assert boxes_warnings({}, 56, 40, 24) == ["the boxes file has no boxes: every frame is copied through without a "
                                              "hole"]
    notes = boxes_warnings({500: [(5, 5, 20, 18)], 30: [(1, 1, 2, 2)], 2: [(60, 0, 80, 40), (0, -9, 5, 0)]}, 56, 40, 24)
    assert notes == ["2 frame(s) of the boxes file are past the video's last frame 23 (e.g. frame 30): their boxes "
                     "hide nothing",
                     "2 box(es) lie wholly outside the 56x40 picture (e.g. [60, 0, 80, 40] on frame 2): they hide "
                     "nothing"]
    assert boxes_warnings({500: [(5, 5, 20, 18)]}, 56, 40, 0) == []  # an unknown frame count: checked after the run


def test_inpaint_video_hands_each_frame_its_boxes(tmp_path, frames):
    from cicm_deploy.video import inpaint_video

    class Recorder:
        def __init__(self):
            self.masks = []

        def stream(self, source, masks, batch_size):
            for frame, mask in zip(source, masks):
                self.masks.append(np.asarray(mask).copy())
                yield frame

    clip = tmp_path / "in.avi"
    write_clip(clip, frames)
    recorder = Recorder()
    written = inpaint_video(recorder, clip, tmp_path / "out.avi", boxes={0: [(5, 5, 20, 18)], 3: [(50, 30, 70, 50)]})
    assert written == len(frames) == len(recorder.masks) == count_frames(tmp_path / "out.avi")
    assert [int(m.sum()) for m in recorder.masks] == [13 * 15, 0, 0, 6 * 10] + [0] * (len(frames) - 4)
    assert recorder.masks[0][5:18, 5:20].all()

    class Broken:
        def stream(self, source, masks, batch_size):
            raise RuntimeError("the model failed")
            yield  # a generator, like Inpainter.stream

    with pytest.raises(RuntimeError, match="the model failed"):
        inpaint_video(Broken(), clip, tmp_path / "failed.avi", boxes={})
    assert not (tmp_path / "failed.avi").exists()  # no empty file left behind

    class FailsLater:
        def stream(self, source, masks, batch_size):
            for index, frame in enumerate(source):
                if index == 3:
                    raise RuntimeError("the model failed at frame 3")
                yield frame

    previous = (tmp_path / "out.avi").read_bytes()
    with pytest.raises(RuntimeError, match="at frame 3"):
        inpaint_video(FailsLater(), clip, tmp_path / "out.avi", boxes={})
    assert (tmp_path / "out.avi").read_bytes() == previous  # the earlier run's output is untouched

    class Interrupted:
        def stream(self, source, masks, batch_size):
            for index, frame in enumerate(source):
                if index == 2:
                    raise KeyboardInterrupt
                yield frame

    with pytest.raises(KeyboardInterrupt):
        inpaint_video(Interrupted(), clip, tmp_path / "out.avi", boxes={})
    assert count_frames(tmp_path / "out.avi") == 2  # Ctrl-C: the frames written so far, playable
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi", "out.avi"]  # no partial file left

    import cicm_deploy.video as video

    real = video.read_frames
    try:  # a file whose container opens but which yields no frame: an error, not "wrote 0 frames"
        video.read_frames = lambda path: iter(())
        with pytest.raises(video.VideoError, match="gave no frame"):
            inpaint_video(Recorder(), clip, tmp_path / "empty.avi", boxes={})
    finally:
        video.read_frames = real
    assert not (tmp_path / "empty.avi").exists()


def test_video_user_errors(tmp_path, frames, bundles):
    clip = tmp_path / "in.avi"
    write_clip(clip, frames)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"frame": 1, "boxes": [[5, 5, 2, 2]]}')
    model = str(bundles("fp32", "onnx").path)
    still = tmp_path / "frame.png"
    Image.fromarray(frames[0]).save(still)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(small)
    junk = tmp_path / "junk.dat"
    junk.write_text("not a picture and not a video")
    good = tmp_path / "good.jsonl"
    good.write_text('{"frame": 1, "boxes": [[5, 5, 20, 20]]}')
    cases = [
        (["video", str(clip), str(tmp_path / "o.mp4"), "--model", model], "exactly one of --mask"),
        (["video", str(clip), str(tmp_path / "o.mp4"), "--boxes", str(bad), "--model", model], "x0 < x1"),
        (["video", str(tmp_path / "none.mp4"), str(tmp_path / "o.mp4"), "--boxes", str(bad), "--model", model],
         "does not exist"),
        (["video", str(clip), str(tmp_path / "o.mp4"), "--boxes", str(tmp_path / "empty.jsonl"), "--model", model],
         "cannot be read"),
        (["video", str(clip), str(tmp_path / "o.webm"), "--boxes", str(good), "--model", str(tmp_path / "no-model")],
         "unknown container '.webm'"),  # refused before the model (here: none) is opened
        (["video", str(clip), str(clip), "--boxes", str(good), "--model", model], "is the input video"),
        (["video", str(still), str(tmp_path / "o.mp4"), "--boxes", str(good), "--model", model],
         "is a still image, not a video; inpaint it with `cicm-deploy inpaint"),
        (["video", str(junk), str(tmp_path / "o.mp4"), "--boxes", str(good), "--model", model],
         "cannot be opened as a video"),
        (["video", str(clip), str(tmp_path / "o.mp4"), "--mask", str(small), "--model", model],
         "the mask is 8x6 pixels but the video is 56x40 (width x height)"),
    ]
    size = clip.stat().st_size
    for args, message in cases:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.startswith("Error: "), result.output  # refused before any progress bar
    assert not list(tmp_path.glob("o.*"))  # no output file from a refused run
    assert clip.stat().st_size == size and count_frames(clip) == len(frames)  # the input survives
