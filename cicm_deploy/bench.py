"""``cicm-deploy bench``: latency and throughput of every available backend, side by side.

Each case (backend, batch, size) gets warm-up calls, then timed calls of the inference alone;
host pre-processing (uint8 frames -> padded float NCHW) and post-processing (-> uint8 frames)
are timed separately on the same data. On a GPU, torch timings use CUDA events. The summary
reads like trtexec's: latency min/median/p90/p99, throughput in images/s, peak host RSS and,
on a GPU, peak device memory. Backends that cannot run here are listed with the reason.

Backends: ``torch`` (eager FP32), ``torch-fp16`` (eager, FP16 autocast, CUDA only),
``torch-compile`` (``torch.compile``), ``cuda-graphs`` (``torch.compile(mode="reduce-overhead")``,
CUDA only), ``onnxruntime`` (an FP32 bundle; exported on the fly from a checkpoint).
``tensorrt`` (an engine built by ``cicm-deploy build``, on its GPU).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

ALL_BACKENDS = ("torch", "torch-fp16", "torch-compile", "cuda-graphs", "onnxruntime", "tensorrt")
# glibc's malloc settings under which PyTorch eager stops returning its activations to the kernel
# between calls (benchmarks/ort_vs_torch.py measures both ways); a case with this many minor page
# faults a call or more gets a note saying so.
TUNED_MALLOC = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"
FAULTS_WORTH_A_NOTE = 100
# Backends whose first calls of each new shape compile (minutes on a CPU) or record CUDA graphs:
# they get at least this many untimed calls per case whatever --warmup says, so that no compile
# is timed as inference.
COMPILED_BACKENDS = ("torch-compile", "cuda-graphs")
COMPILED_MIN_WARMUP = 3


@dataclass
class CaseResult:
    backend: str
    batch: int
    size: int
    latency_ms: dict[str, float]  # min, median, p90, p99, mean of the inference alone
    throughput_ips: float  # images per second at the median latency
    pre_ms: float  # host pre-processing per batch (median)
    post_ms: float  # host post-processing per batch (median)
    iterations: int
    device_peak_mib: float | None = None
    network_size: int | None = None  # the side the network ran at: ``size`` padded to the model's stride
    host_faults_per_call: float | None = None  # minor page faults of this process per timed call

    @property
    def size_label(self) -> str:
        padded = self.network_size is not None and self.network_size != self.size
        return f"{self.size} (runs {self.network_size})" if padded else str(self.size)


@dataclass
class BenchReport:
    target: str
    device: str
    date: str
    threads: int
    versions: dict[str, str]
    results: list[CaseResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # backend -> the error that stopped it
    host_peak_rss_mib: float = 0.0
    finished: bool = False  # False in the copies saved while the run goes on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def ratios(self) -> dict[tuple[str, int, int], float]:
        """torch eager median / backend median, per (backend, batch, size)."""
        base = {(r.batch, r.size): r.latency_ms["median"] for r in self.results if r.backend == "torch"}
        return {(r.backend, r.batch, r.size): base[(r.batch, r.size)] / r.latency_ms["median"]
                for r in self.results if r.backend != "torch" and (r.batch, r.size) in base and r.latency_ms["median"]}

    def markdown(self) -> list[str]:
        lines = [f"Target `{self.target}` on {self.device}, {self.date}, {self.threads} CPU threads; "
                 + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + ".", "",
                 "| backend | batch | size | median ms | p90 ms | p99 ms | min ms | images/s | pre ms | post ms | "
                 "device MiB | page faults |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.results:
            lat = r.latency_ms
            device = f"{r.device_peak_mib:.0f}" if r.device_peak_mib is not None else "-"
            faults = f"{r.host_faults_per_call:.0f}" if r.host_faults_per_call is not None else "-"
            lines.append(f"| {r.backend} | {r.batch} | {r.size_label} | {lat['median']:.2f} | {lat['p90']:.2f} | "
                         f"{lat['p99']:.2f} | {lat['min']:.2f} | {r.throughput_ips:.1f} | {r.pre_ms:.2f} | "
                         f"{r.post_ms:.2f} | {device} | {faults} |")
        faulting = sorted({r.backend for r in self.results if (r.host_faults_per_call or 0) >= FAULTS_WORTH_A_NOTE})
        if faulting:
            lines += ["", f"{', '.join(faulting)}: {FAULTS_WORTH_A_NOTE}+ minor page faults a call (last column): the "
                      "C library's malloc gave the activations back to the kernel between calls and they were "
                      "faulted in again. With glibc, `GLIBC_TUNABLES=" + TUNED_MALLOC + "` in the environment "
                      "(or jemalloc/tcmalloc preloaded) keeps them; so does any larger call made earlier in the "
                      "process, which is why such timings depend on what ran before (benchmarks/README.md, "
                      "onnxruntime vs PyTorch)."]
        ratios = self.ratios()
        if ratios:
            lines += ["", "Speed-up over PyTorch eager (median latency ratio, same inputs, same run):", "",
                      "| backend | batch | size | x torch |", "|---|---|---|---|"]
            lines += [f"| {b} | {n} | {s} | {r:.2f} |" for (b, n, s), r in ratios.items()]
        lines += ["", f"Peak host RSS: {self.host_peak_rss_mib:.0f} MiB."]
        if not self.finished:
            lines += ["", "**Partial**: the run stopped (or is still going) before its last case."]
        if self.skipped:
            lines += ["", "Skipped:"] + [f"- {k}: {v}" for k, v in self.skipped.items()]
        if self.failed:
            lines += ["", "Failed (no figures from then on):"] + [f"- {k}: {v}" for k, v in self.failed.items()]
        return lines


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def summarize(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)

    def pct(q: float) -> float:
        return float(np.percentile(ordered, q))

    return {"min": ordered[0], "median": statistics.median(ordered), "p90": pct(90), "p99": pct(99),
            "mean": statistics.fmean(ordered)}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _cuda() -> bool:
    if not _torch_available():
        return False
    import torch

    return torch.cuda.is_available()


class _Case:
    """One backend made ready for a given input shape: ``run(feeds)`` and its timing."""

    def __init__(self, call: Callable[[dict[str, np.ndarray]], Any], device_timer: bool = False) -> None:
        self.call = call
        self.device_timer = device_timer

    def time_ms(self, feeds: dict[str, np.ndarray]) -> float:
        if self.device_timer:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self.call(feeds)
            end.record()
            torch.cuda.synchronize()
            return float(start.elapsed_time(end))
        begin = time.perf_counter()
        self.call(feeds)
        return (time.perf_counter() - begin) * 1000


def _torch_case(model: Any, backend: str) -> _Case:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    forward = model
    if backend == "torch-compile":
        forward = torch.compile(model)
    elif backend == "cuda-graphs":
        forward = torch.compile(model, mode="reduce-overhead")
    autocast = backend == "torch-fp16"

    def call(feeds: dict[str, np.ndarray]) -> Any:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=autocast):
            image = torch.from_numpy(feeds["image"]).to(device, non_blocking=True)
            mask = torch.from_numpy(feeds["mask"]).to(device, non_blocking=True)
            return forward(image, mask).composite

    return _Case(call, device_timer=device.type == "cuda")


def _skip_reasons(backends: list[str], kind: str) -> dict[str, str]:
    import importlib.util

    reasons = {}
    cuda = _cuda()
    for backend in backends:
        if backend == "tensorrt":
            if kind != "engine":
                reasons[backend] = "needs an engine built on the target GPU by `cicm-deploy build`; bench the engine"
            elif not cuda and importlib.util.find_spec("cuda") is None:
                reasons[backend] = "needs a CUDA GPU (and cuda-python) to run the engine"
        elif kind == "engine":
            reasons[backend] = "an engine runs only on TensorRT; bench the bundle or checkpoint it came from"
        elif backend.startswith("torch") or backend == "cuda-graphs":
            if not _torch_available():
                reasons[backend] = "torch is not installed"
            elif kind == "bundle":
                reasons[backend] = "a bundle holds no PyTorch weights; bench the checkpoint it came from"
            elif backend in ("torch-fp16", "cuda-graphs") and not cuda:
                reasons[backend] = "needs a CUDA GPU (FP16 convolutions and CUDA graphs are GPU paths)"
        elif backend == "onnxruntime":
            import importlib.util

            if importlib.util.find_spec("onnxruntime") is None:
                reasons[backend] = "onnxruntime is not installed (pip install 'cicm-deploy[cpu]')"
            elif kind == "checkpoint" and importlib.util.find_spec("onnx") is None:
                reasons[backend] = "exporting the checkpoint needs the export extra"
    return reasons


def run_bench(target: str | Path, backends: list[str], batches: list[int], sizes: list[int], warmup: int = 3,
              iterations: int = 20, threads: int | None = None, progress: Callable[[str], None] = lambda m: None,
              seed: int = 0, on_case: Callable[[BenchReport], None] = lambda r: None) -> BenchReport:
    """Bench ``backends`` on every batch and size; ``on_case`` sees the report after each case
    (the CLI saves it there, so an interrupted run keeps the figures it has)."""
    from .images import from_nchw, pad_to_multiple

    target = Path(target)
    unknown = [b for b in backends if b not in ALL_BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; expected some of {', '.join(ALL_BACKENDS)}")
    if not target.exists():
        raise ValueError(f"{target} does not exist; expected a checkpoint (.pt) or a bundle directory")
    kind = "bundle" if target.is_dir() else ("engine" if target.with_name(target.name + ".json").is_file()
                                             else "checkpoint")
    skipped = _skip_reasons(backends, kind)
    runnable = [b for b in backends if b not in skipped]
    if not runnable:
        grouped: dict[str, list[str]] = {}
        for backend, why in skipped.items():
            grouped.setdefault(why, []).append(backend)
        raise ValueError("nothing to bench here: " + "; ".join(f"{', '.join(names)}: {why}"
                                                               for why, names in grouped.items()))
    if threads:
        if _torch_available():
            import torch

            torch.set_num_threads(threads)
    device = "CPU " + platform.machine()
    if _cuda():
        import torch

        device = torch.cuda.get_device_name(0)
    versions = {}
    for name in ("cicm-deploy", "torch", "onnxruntime", "onnxruntime-gpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    report = BenchReport(str(target), device, datetime.datetime.now().isoformat(timespec="seconds"),
                         threads or (__import__("os").cpu_count() or 1), versions, skipped=skipped)
    rng = np.random.default_rng(seed)

    def saved() -> None:
        report.host_peak_rss_mib = _peak_rss_mib()
        on_case(report)

    with tempfile.TemporaryDirectory() as tmp:
        cases: dict[str, _Case] = {}
        stride = 8
        for backend in runnable:
            progress(f"preparing {backend}")
            if backend == "tensorrt":
                from .runtimes.tensorrt import TensorRTBackend

                runtime = TensorRTBackend(target).load()
                stride = runtime.stride
                cases[backend] = _Case(runtime.run)
            elif backend == "onnxruntime":
                from .runtimes.onnxruntime import OnnxRuntimeBackend

                bundle = target
                if kind == "checkpoint":
                    from .export.bundle import export_bundle

                    bundle = export_bundle(target, Path(tmp) / "bundle", check=False).path
                runtime = OnnxRuntimeBackend(bundle, providers=None, threads=threads).load()
                stride = runtime.bundle.stride
                fixed_batch, fixed_h, fixed_w = runtime.fixed_shape
                if any((fixed_batch and b != fixed_batch) or (fixed_h and s != fixed_h) or (fixed_w and s != fixed_w)
                       for b in batches for s in sizes):
                    fixed = "x".join(str(d) if d else n for d, n in zip(runtime.fixed_shape, "NHW"))
                    hint = " ".join([f"--batch {fixed_batch}"] * bool(fixed_batch)
                                    + [f"--size {fixed_h}"] * bool(fixed_h))
                    raise ValueError(f"bundle {bundle} is fixed at {fixed} (exported with --static/--batch); " + (
                        f"bench it with {hint}" if fixed_h == fixed_w else "bench takes square sizes: export one"))
                cases[backend] = _Case(runtime.run)
            else:
                from .checkpoint import load_model

                model, _ = load_model(target)
                stride = model.config.stride
                cases[backend] = _torch_case(model, backend)
        for size in sizes:
            for batch in batches:
                frames = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
                holes = np.zeros((batch, size, size), bool)
                holes[:, size // 4: size // 2, size // 4: 3 * size // 4] = True
                pre_times, post_times = [], []
                feeds: dict[str, np.ndarray] = {}
                for _ in range(max(3, min(iterations, 10))):
                    begin = time.perf_counter()
                    x = np.stack([pad_to_multiple(f, stride).transpose(2, 0, 1) for f in frames]).astype(np.float32) / 255
                    m = np.stack([pad_to_multiple(h, stride)[None] for h in holes]).astype(np.float32)
                    feeds = {"image": x, "mask": m}
                    pre_times.append((time.perf_counter() - begin) * 1000)
                    begin = time.perf_counter()
                    _ = [from_nchw(x[i])[:size, :size] for i in range(batch)]
                    post_times.append((time.perf_counter() - begin) * 1000)
                for backend, case in list(cases.items()):
                    compiled = backend in COMPILED_BACKENDS
                    progress(f"{backend}: batch {batch}, {size}x{size}"
                             + (" (compiling for this shape first: minutes on a CPU)" if compiled else ""))
                    device_peak = None
                    if _cuda():
                        import torch

                        torch.cuda.reset_peak_memory_stats()
                    try:
                        for _ in range(max(warmup, COMPILED_MIN_WARMUP) if compiled else warmup):
                            case.call(feeds)
                        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        times = [case.time_ms(feeds) for _ in range(iterations)]
                        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / iterations
                    except Exception as exc:  # one backend's failure (a compiler bug, OOM) leaves the others
                        del cases[backend]
                        report.failed[backend] = f"batch {batch}, {size}x{size}: {_first_line(exc)}"
                        progress(f"{backend} failed ({report.failed[backend]}); going on without it")
                        saved()
                        continue
                    if _cuda():
                        import torch

                        device_peak = torch.cuda.max_memory_allocated() / 2**20
                    latency = summarize(times)
                    report.results.append(CaseResult(backend, batch, size, latency,
                                                     batch / (latency["median"] / 1000) if latency["median"] else math.inf,
                                                     statistics.median(pre_times), statistics.median(post_times),
                                                     iterations, device_peak, int(x.shape[-1]), faults))
                    saved()
    report.host_peak_rss_mib = _peak_rss_mib()
    report.finished = True
    return report


REPORT_SUFFIXES = (".json", ".md", ".png")


def report_prefix(out: str | os.PathLike, name: str = "bench") -> Path:
    """Where ``-o`` puts the report files: OUT.json/.md/.png; in OUT/NAME.* for a folder (one that
    exists, or any OUT written with a trailing slash); a report suffix given is dropped
    (results/run.json -> results/run.*), other dots are kept (run.v2.*).
    Raises ValueError when the folder cannot be made or written (checked before any measurement)."""
    folder = isinstance(out, str) and out.endswith(("/", os.sep))
    out = Path(out)
    if folder or out.is_dir():
        out = out / name
    elif out.suffix in REPORT_SUFFIXES:
        out = out.with_suffix("")
    existing = out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"-o {out}: {existing} is a file, so the report's folder cannot be made there")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"-o {out}: {existing} is not writable")
    return out


def write_bench(report: BenchReport, out: Path, plot: bool = False) -> list[Path]:
    out = report_prefix(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + ".json"), out.with_name(out.name + ".md")]
    for path, text in zip(paths, [json.dumps(report.to_dict(), indent=2),
                                  "# cicm-deploy bench\n\n" + "\n".join(report.markdown())]):
        partial = path.with_name(path.name + ".part")  # a kill mid-write leaves the last whole copy
        partial.write_text(text + "\n")
        partial.replace(path)
    if plot and report.results:  # nothing measured (every backend failed): nothing to plot
        paths.append(plot_latency(report, out.with_name(out.name + ".png")))
    return paths


def plot_latency(report: BenchReport, path: Path) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    sizes = sorted({r.size for r in report.results})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for backend in sorted({r.backend for r in report.results}):
            rows = sorted((r.batch, r.latency_ms["median"]) for r in report.results if r.size == size and r.backend == backend)
            if rows:
                ax.plot([b for b, _ in rows], [t for _, t in rows], marker="o", label=backend)
        ax.set_title(f"{size}x{size}")
        ax.set_xlabel("batch")
        ax.set_ylabel("median latency (ms)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{Path(report.target).name} on {report.device}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
