"""``Inpainter``: the embedding API for video pipelines (vehicle cameras, surveillance).

    from cicm_deploy import Inpainter

    with Inpainter("model_fp16") as inpaint:                # bundle -> onnxruntime
        clean = inpaint(frame, mask)                        # uint8 HxWx3 in and out
        for out in inpaint.stream(frames, static_mask):     # pre/post overlapped with inference
            ...

One object from a checkpoint (PyTorch), a bundle directory (onnxruntime) or an engine file
(TensorRT); frames of any size (padded to the stride and cropped back); pixels outside the hole
returned byte for byte.

Thread safety: a pool of ``workers`` runtimes (one by default), each used by one thread at a
time; nothing else is shared. Conversion, padding and cropping run in the caller's thread, outside
the pool, so several threads overlap their pre/post-processing while inference runs. With the
default single worker this is one lock around the backend call: TensorRT execution contexts are not
thread-safe, and a session or engine per thread would multiply device memory on a Jetson for no
gain on one GPU. ``workers=N`` opens N sessions (onnxruntime: the CPU threads split between them)
so that N batches run at once; ``stream()`` then keeps N batches in flight. On a CPU, where small
convolutions scale poorly across threads, that raises throughput (benchmarks/stream_vs_loop.py).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .files import CHECKPOINT_KIND, ENGINE_KIND, file_kind
from .images import as_mask_array, as_rgb_array, check_same_size

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
_DONE = object()


def _kind(path: Path) -> str:
    if path.is_dir():
        return "bundle"
    if path.with_name(path.name + ".json").is_file():
        return "engine"
    return "checkpoint"


class Inpainter:
    def __init__(self, path: str | os.PathLike, backend: str = "auto", *, device: str = "auto",
                 plugin: str | os.PathLike | None = None, providers: Sequence[str] | None = None,
                 invert_masks: bool = False, workers: int = 1) -> None:
        path = Path(path)
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if not path.exists():
            raise ValueError(f"{path} does not exist; expected a checkpoint (.pt), a bundle directory or an engine")
        if path.is_file() and file_kind(path) not in (None, CHECKPOINT_KIND, ENGINE_KIND):  # e.g. a bundle's model.onnx
            from .runtimes.factory import bundle_file_message

            raise ValueError(bundle_file_message(path))
        kind = _kind(path)
        wanted = {"torch": "checkpoint", "onnxruntime": "bundle", "tensorrt": "engine"}
        if backend != "auto" and wanted[backend] != kind:
            raise ValueError(f"backend {backend!r} needs a {wanted[backend]}, but {path} is a {kind}")
        if kind == "checkpoint" and workers > 1:
            raise ValueError("workers > 1 needs a bundle or an engine: PyTorch shares one thread pool per process")

        def open_runtime() -> Any:
            if kind == "checkpoint":
                from .torch_runtime import TorchRuntime

                return TorchRuntime(path, device=device)
            if kind == "bundle":
                from .runtimes.onnxruntime import OnnxRuntimeBackend

                threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
                return OnnxRuntimeBackend(path, providers=providers, threads=threads)
            from .runtimes.tensorrt import TensorRTBackend

            return TensorRTBackend(path, plugin=plugin)

        self._runtimes: list[Any] = []
        self._free: queue.SimpleQueue = queue.SimpleQueue()  # runtimes not in use
        self._closed = False
        self._closing = threading.Lock()
        try:
            for _ in range(workers):
                self._runtimes.append(open_runtime().load())
                self._free.put(self._runtimes[-1])
        except BaseException:
            self.close()
            raise
        self.runtime = self._runtimes[0]
        self.invert_masks = invert_masks

    @property
    def workers(self) -> int:
        """Runtimes in the pool: batches that can run at once."""
        return len(self._runtimes)

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every runtime once the calls in flight have finished with it; calling again does
        nothing, using the Inpainter afterwards is an error."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        for _ in self._runtimes:
            self._free.get()  # waits until no call is in flight on any runtime
        for runtime in self._runtimes:
            runtime.close()
        for runtime in self._runtimes:  # wakes calls still waiting for a runtime: they see the close and raise
            self._free.put(runtime)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Inpainter is closed; make a new one")

    def __enter__(self) -> "Inpainter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Backend, device, precision, routing, versions and the number of workers."""
        self._check_open()
        return {**self.runtime.describe(), "workers": self.workers}

    # -- frames -----------------------------------------------------------------------------------
    def _pair(self, image: Any, mask: Any, converted: bool = False,
              keep: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Validated arrays; with ``keep`` (frames queued past this call) copies, since the caller may
        reuse its buffers (a camera SDK's) once this returns."""
        rgb = as_rgb_array(image)
        hole = mask if converted else as_mask_array(mask, invert=self.invert_masks)
        check_same_size(rgb, hole)
        return (_own(rgb, image), hole if converted else _own(hole, mask)) if keep else (rgb, hole)

    def _infer(self, pairs: list[tuple[np.ndarray, np.ndarray]], given: Sequence[Any] | None = None
               ) -> list[np.ndarray]:
        """Same-sized pairs -> frames. Frames without a hole skip the network; handed back, they are
        never the caller's own array (``given``: the images the pairs were made from, when not copied)."""
        self._check_open()
        results: list[np.ndarray | None] = [(_own(rgb, given[i]) if given is not None else rgb)
                                            if not hole.any() else None for i, (rgb, hole) in enumerate(pairs)]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            chosen = [pairs[i] for i in todo]
            runtime = self._free.get()  # blocks while every worker is busy
            try:
                self._check_open()  # closed while this call waited for a runtime
                frames = runtime.infer_pairs(chosen)
            finally:
                self._free.put(runtime)
            for index, frame in zip(todo, frames):
                results[index] = frame
        return results  # type: ignore[return-value]

    def __call__(self, image: Any, mask: Any) -> np.ndarray:
        """One frame: RGB uint8 [H, W, 3] and a mask [H, W] (True/255 = hole) -> uint8 [H, W, 3]."""
        self._check_open()
        return self._infer([self._pair(image, mask)], [image])[0]

    def batch(self, images: Sequence[Any], masks: Sequence[Any]) -> list[np.ndarray]:
        """Several frames; those of the same size go through the network together."""
        self._check_open()
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        pairs = [self._pair(i, m) for i, m in zip(images, masks)]
        results: list[np.ndarray | None] = [None] * len(pairs)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, (rgb, _) in enumerate(pairs):
            by_size.setdefault(rgb.shape[:2], []).append(index)
        for indices in by_size.values():
            for index, frame in zip(indices, self._infer([pairs[i] for i in indices], [images[i] for i in indices])):
                results[index] = frame
        return results  # type: ignore[return-value]

    def stream(self, frames: Iterable[Any], mask_or_masks: Any, batch_size: int = 4,
               queue_size: int = 2) -> Iterator[np.ndarray]:
        """Yield inpainted frames in order while the next batch is being prepared.

        ``mask_or_masks``: one mask for every frame (a fixed occlusion: converted once), or an
        iterable with one mask per frame. A reader thread converts and pads batches of
        ``batch_size`` into a bounded queue; inference runs in this generator; memory stays bounded
        by ``queue_size`` batches (plus one per worker in flight). With ``workers`` > 1, that many
        batches run at once, each on its own runtime; frames still come out in order. Closing the
        generator early stops the reader.
        """
        if batch_size < 1 or queue_size < 1:
            raise ValueError("batch_size and queue_size must be at least 1")
        self._check_open()
        from PIL import Image

        single = isinstance(mask_or_masks, Image.Image) or (  # [H, W] or [H, W, 1]; [N, H, W] is one per frame
            isinstance(mask_or_masks, np.ndarray) and (mask_or_masks.ndim == 2 or mask_or_masks.shape[-1:] == (1,)
                                                       and mask_or_masks.ndim == 3))
        static = _own(as_mask_array(mask_or_masks, invert=self.invert_masks), mask_or_masks) if single else None
        masks = None if single else iter(mask_or_masks)
        ready: queue.Queue = queue.Queue(maxsize=queue_size)
        stop = threading.Event()

        def reader() -> None:
            chunk: list[tuple[np.ndarray, np.ndarray]] = []
            try:
                for frame in frames:
                    if stop.is_set():
                        return
                    if static is not None:
                        pair = self._pair(frame, static, converted=True, keep=True)  # the fixed mask, converted once
                    else:
                        pair = self._pair(frame, next(masks), keep=True)  # type: ignore[arg-type]
                    if chunk and pair[0].shape != chunk[0][0].shape:
                        ready.put(chunk)
                        chunk = []
                    chunk.append(pair)
                    if len(chunk) == batch_size:
                        ready.put(chunk)
                        chunk = []
                if chunk:
                    ready.put(chunk)
                ready.put(_DONE)
            except BaseException as exc:  # handed to the consumer, raised there, after the frames read before it
                if chunk:
                    ready.put(chunk)
                ready.put(exc)

        thread = threading.Thread(target=reader, name="cicm-stream-reader", daemon=True)
        thread.start()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="cicm-stream-infer") if self.workers > 1 else None
        pending: collections.deque = collections.deque()  # batches in flight, in frame order
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    while pending:  # the frames read before the error come out first
                        yield from pending.popleft().result()
                    if isinstance(item, StopIteration):
                        raise ValueError("fewer masks than frames") from None
                    raise item
                if pool is None:
                    yield from self._infer(item)
                    continue
                pending.append(pool.submit(self._infer, item))
                if len(pending) >= self.workers:  # every worker busy: hand back the oldest batch
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
            if pool is not None:
                pool.shutdown(wait=True)
            stop.set()
            while thread.is_alive():  # unblock a reader waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


def _own(converted: np.ndarray, given: Any) -> np.ndarray:
    """``converted`` itself when it is a new array, else a copy (it was ``given``'s memory)."""
    if isinstance(given, np.ndarray) and np.may_share_memory(converted, given):
        return converted.copy()
    return converted
