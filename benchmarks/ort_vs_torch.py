"""onnxruntime CPU vs PyTorch CPU eager on the same model and inputs, each measurement in a fresh process.

Exports the model (FP32, standard-op routing) to a temporary bundle in a child process, then, in
another child process per allocator setting, times both backends on the same image and mask with
the same thread count, alternating rounds so that machine noise hits both alike (each round's
block starts with one untimed call: both runtimes' worker threads spin for a while after a call,
and on a 2-core machine they would steal the other's cores). ``--repeats`` such measurements run
in each process with a pause between them; each reports its ratio of medians.

Why fresh processes, and why two allocator settings: PyTorch eager allocates every activation
anew with the C library's malloc, and with glibc's defaults at batch 1, 256x256 it gives most of
those megabytes back to the kernel after each call and takes them again, zeroed, in the next
(about 9,000 minor page faults a call, measured). Larger calls made earlier in the same process
(the exporter's golden batches, for one) raise glibc's thresholds and remove them (none a call
after an export, measured), so PyTorch's speed depended on what the process had done before. onnxruntime keeps its own
arena and takes no page faults after its first call. Each measurement therefore runs in a process
that has done nothing but load the two runtimes, once with glibc as it starts ("default") and
once with ``GLIBC_TUNABLES`` raising its mmap and trim thresholds ("tuned": no page faults, the
purpose jemalloc or tcmalloc serve in PyTorch's CPU tuning guides). The target is judged against the faster PyTorch:
the tuned one. Minor page faults per call are recorded for both backends.

The ratio moves between runs on a shared machine (see the run history in
results/ort_vs_torch.md). Each run therefore records a probe of the machine (2-thread SGEMM GFLOP/s, copy GB/s,
one tiny PyTorch op's dispatch time) and is appended to the run history kept in the JSON
(``--fresh`` starts a new history), so that results measured at different times or on different
machines are read side by side instead of overwriting each other.
Writes JSON and markdown to benchmarks/results/.

    python benchmarks/ort_vs_torch.py [--preset paper] [--checkpoint CKPT] [--size 256] [--batch 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from cicm_deploy.bench import TUNED_MALLOC

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.5
# glibc's malloc keeps freed blocks up to these sizes instead of unmapping or trimming them (32 MiB
# is the largest mmap threshold it accepts on 64-bit; PyTorch's largest activation here is 12.6 MB;
# either setting alone leaves the faults, or adds to them: measured). Without them PyTorch eager takes
# ~9,000 minor page faults a call at batch 1, 256x256.
ALLOCATORS = {"default": None, "tuned": TUNED_MALLOC}
BACKENDS = ("pytorch_eager", "onnxruntime")


def ort_op_profile(model_path: Path, feeds: dict[str, np.ndarray], threads: int, calls: int = 3) -> dict[str, float]:
    """Share of onnxruntime kernel time per op type (its built-in profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(model_path.parent / "ort_profile")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    for _ in range(calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    shares: dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event["args"]["op_name"]
            shares[op] = shares.get(op, 0.0) + event["dur"]
    total = sum(shares.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:6]}


def machine_probe(threads: int) -> dict[str, float]:
    """What the two runtimes' speeds depend on: dense compute, memory bandwidth, per-op dispatch."""
    import torch

    def best(call, n: int) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    torch.set_num_threads(threads)
    a = torch.rand(1024, 1024)
    src, dst = torch.ones(16 * 2**20), torch.empty(16 * 2**20)
    tiny = torch.zeros(1)
    best(lambda: a @ a, 3)
    sgemm = 2 * 1024**3 / best(lambda: a @ a, 10) / 1e9
    copy = 2 * src.numel() * 4 / best(lambda: dst.copy_(src), 10) / 1e9

    def dispatch() -> None:
        for _ in range(1000):
            torch.add(tiny, 1.0)

    with torch.inference_mode():
        op_us = best(dispatch, 5) / 1000 * 1e6
    return {"sgemm_gflops": round(sgemm, 1), "copy_gb_s": round(copy, 1), "torch_op_dispatch_us": round(op_us, 2)}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"],  # results written by earlier runs change no code
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def export_child(args: argparse.Namespace, bundle: Path) -> None:
    """``--export-to``: write the checkpoint's (or a seeded preset's) FP32 bundle, then exit."""
    import torch

    from cicm_deploy.checkpoint import save_checkpoint
    from cicm_deploy.config import preset
    from cicm_deploy.export.bundle import export_bundle
    from cicm_deploy.model import UNetCICM

    checkpoint = args.checkpoint
    if checkpoint is None:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(bundle.parent / "model.pt", UNetCICM(preset(args.preset)))
    export_bundle(checkpoint, bundle, check=False)


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_child(args: argparse.Namespace, bundle: Path, out: Path) -> None:
    """``--measure``: time both backends in this process (fresh: it has run nothing else) and write JSON."""
    import torch

    from cicm_deploy.checkpoint import load_model
    from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or bundle.parent / "model.pt"
    model, _ = load_model(checkpoint)
    runtime = OnnxRuntimeBackend(bundle, providers=["CPUExecutionProvider"], threads=args.threads)
    runtime.load()

    rng = np.random.default_rng(0)
    image = rng.random((args.batch, 3, args.size, args.size), dtype=np.float32)
    mask = np.zeros((args.batch, 1, args.size, args.size), np.float32)
    mask[..., args.size // 4: args.size // 2, args.size // 4: 3 * args.size // 4] = 1.0
    feeds = {"image": image, "mask": mask}
    x, m = torch.from_numpy(image), torch.from_numpy(mask)

    def torch_call() -> None:
        with torch.inference_mode():
            model(x, m)

    def ort_call() -> None:
        runtime.run(feeds)

    calls = {"pytorch_eager": torch_call, "onnxruntime": ort_call}
    for _ in range(3):  # warm-up
        for call in calls.values():
            call()
    measurements = []
    for repeat in range(args.repeats):
        if repeat:
            time.sleep(args.pause)
        times: dict[str, list[float]] = {name: [] for name in calls}
        faulted = dict.fromkeys(calls, 0)
        for _ in range(args.rounds):
            for name, call in calls.items():
                call()  # untimed: lets the other runtime's spinning worker threads go idle first
                before = faults()
                for _ in range(args.iterations):
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
                faulted[name] += faults() - before
        medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
        measurements.append({"median_ms": medians, "p90_ms": {k: float(np.percentile(v, 90) * 1000) for k, v in times.items()},
                             "samples": {k: len(v) for k, v in times.items()},
                             "minor_faults_per_call": {k: round(faulted[k] / len(times[k]), 1) for k in calls},
                             "ratio": medians["pytorch_eager"] / medians["onnxruntime"]})
        print(f"  measurement {repeat + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in medians.items())
              + f", ratio {measurements[-1]['ratio']:.2f}", flush=True)
    result: dict = {"measurements": measurements}
    if args.profile:
        result["onnxruntime_op_share_percent"] = ort_op_profile(bundle / "model.onnx", feeds, args.threads)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                torch_call()
        torch_ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(torch_ops.values()) or 1.0
        result["pytorch_op_share_percent"] = {k: round(100 * v / total, 1)
                                              for k, v in sorted(torch_ops.items(), key=lambda kv: -kv[1])[:6]}
    out.write_text(json.dumps(result))


def child_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """This script again, with the options that the export and the measurement share."""
    command = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--size", str(args.size),
               "--batch", str(args.batch), "--threads", str(args.threads), "--rounds", str(args.rounds),
               "--iterations", str(args.iterations), "--repeats", str(args.repeats), "--pause", str(args.pause)]
    if args.checkpoint is not None:
        command += ["--checkpoint", str(args.checkpoint)]
    return command + list(extra)


def summarize(measurements: list[dict]) -> dict:
    """The median measurement of one process: its ratio, times and page faults."""
    ratios = sorted(m["ratio"] for m in measurements)
    ratio = statistics.median(ratios)
    middle = min(measurements, key=lambda m: abs(m["ratio"] - ratio))
    return {"ratio": ratio, "ratios": ratios, "median_ms": middle["median_ms"], "p90_ms": middle["p90_ms"],
            "samples": middle["samples"], "minor_faults_per_call": middle["minor_faults_per_call"],
            "measurements": measurements}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--checkpoint", type=Path, help="benchmark this checkpoint instead of a preset")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5, help="timed calls per backend per round")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of --rounds rounds each, per process")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between measurements")
    parser.add_argument("--fresh", action="store_true", help="start a new run history instead of appending")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ort_vs_torch")
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)  # child process: export only
    parser.add_argument("--measure", type=Path, nargs=2, help=argparse.SUPPRESS)  # child: BUNDLE RESULT_JSON
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)  # child: also profile
    args = parser.parse_args()
    if args.export_to:
        return export_child(args, args.export_to)
    if args.measure:
        return measure_child(args, *args.measure)

    glibc = platform.libc_ver()[0] == "glibc"
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        print("exporting (child process) ...", flush=True)
        subprocess.run(child_command(args, "--export-to", str(bundle)), check=True)
        for allocator, tunables in ALLOCATORS.items():
            if tunables is not None and not glibc:
                print(f"{allocator}: skipped (not glibc: {platform.libc_ver()})", flush=True)
                continue
            env = dict(os.environ)
            env.pop("GLIBC_TUNABLES", None)
            if tunables is not None:
                env["GLIBC_TUNABLES"] = tunables
            print(f"{allocator} allocator (fresh process):", flush=True)
            result_path = Path(tmp) / f"{allocator}.json"
            extra = ["--profile"] if allocator == "default" else []
            subprocess.run(child_command(args, "--measure", str(bundle), str(result_path), *extra), env=env, check=True)
            results[allocator] = json.loads(result_path.read_text())
    probe = machine_probe(args.threads)

    runs = {allocator: summarize(result["measurements"]) for allocator, result in results.items()}
    judged = runs.get("tuned") or runs["default"]  # the faster PyTorch where it can be had
    command = "python benchmarks/ort_vs_torch.py " + " ".join(
        f"--{k} {v}" for k, v in (("preset", args.preset), ("checkpoint", args.checkpoint), ("size", args.size),
                                  ("batch", args.batch), ("threads", args.threads), ("rounds", args.rounds),
                                  ("repeats", args.repeats)) if v is not None and not (k == "preset" and args.checkpoint is not None))
    run = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
           "method": "fresh-processes", "machine": probe, "allocator": "tuned" if "tuned" in runs else "default",
           **{k: judged[k] for k in ("ratio", "ratios", "median_ms", "p90_ms", "minor_faults_per_call")},
           "by_allocator": runs}
    config = {"device": f"CPU {platform.machine()} ({platform.processor() or 'n/a'})", "threads": args.threads,
              "model": f"checkpoint {args.checkpoint.name}" if args.checkpoint else
              f"preset {args.preset} (random weights: speed does not depend on them)",
              "batch": args.batch, "size": args.size}
    out_json = args.out.with_suffix(".json")
    history = []
    if out_json.exists() and not args.fresh:
        previous = json.loads(out_json.read_text())
        if all(previous.get(k) == v for k, v in config.items()):
            history = previous.get("runs") or [legacy_run(previous)]
    history.append(run)
    current = [r for r in history if r.get("method") == "fresh-processes"]
    across = statistics.median(r["ratio"] for r in current)
    report = {
        "date": datetime.date.today().isoformat(), **config,
        "versions": {n: metadata.version(n) for n in ("torch", "onnxruntime")},
        "allocator": run["allocator"], "tuned_malloc": TUNED_MALLOC,
        "median_ms": judged["median_ms"], "p90_ms": judged["p90_ms"], "samples": judged["samples"],
        "minor_faults_per_call": judged["minor_faults_per_call"],
        "speedup_onnxruntime_over_pytorch": judged["ratio"],
        "speedup_by_allocator": {k: v["ratio"] for k, v in runs.items()},
        "target": TARGET, "target_met": judged["ratio"] >= TARGET,
        "median_ratio_across_runs": across, "target_met_across_runs": across >= TARGET,
        "onnxruntime_op_share_percent": results["default"].get("onnxruntime_op_share_percent", {}),
        "pytorch_op_share_percent": results["default"].get("pytorch_op_share_percent", {}),
        "command": command, "runs": history,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# onnxruntime CPU vs PyTorch CPU eager", "",
             f"{report['date']}, {report['device']}, {args.threads} threads for both, {config['model']}, "
             f"batch {args.batch}, {args.size}x{args.size}, FP32, standard-op routing; torch "
             f"{report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}.",
             f"Command: `{command}`", "", "Latest run (each allocator setting in a fresh process; its median measurement):", "",
             "| PyTorch's allocator | backend | median ms | p90 ms | minor page faults a call |", "|---|---|---|---|---|"]
    for allocator, summary in runs.items():
        for name in BACKENDS:
            lines.append(f"| {allocator} | {name} | {summary['median_ms'][name]:.2f} | {summary['p90_ms'][name]:.2f} | "
                         f"{summary['minor_faults_per_call'][name]:g} |")
    lines += [""] + [f"- {allocator}: onnxruntime is **{s['ratio']:.2f}x** PyTorch eager (measurements: "
                     + ", ".join(f"{r:.2f}" for r in s["ratios"]) + ")" for allocator, s in runs.items()]
    lines += ["", f"Judged against the {run['allocator']} allocator: target {TARGET}x "
                  f"{'met' if report['target_met'] else 'missed'} in this run; median over the "
                  f"{len(current)} run{'s' * (len(current) != 1)} measured this way {across:.2f}x.", "",
              "Where the time goes (share of kernel time, 3 profiled calls, default allocator):", "",
              "- onnxruntime: " + ", ".join(f"{k} {v}%" for k, v in report["onnxruntime_op_share_percent"].items()),
              "- PyTorch: " + ", ".join(f"{k} {v}%" for k, v in report["pytorch_op_share_percent"].items()), ""]
    lines += history_table(history)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def legacy_run(previous: dict) -> dict:
    """A result written before runs were kept (and probed): its one measurement, machine unknown."""
    return {"time": previous["date"], "commit": None, "machine": None, "ratio": previous["speedup_onnxruntime_over_pytorch"],
            "ratios": [previous["speedup_onnxruntime_over_pytorch"]], "median_ms": previous["median_ms"],
            "p90_ms": previous["p90_ms"], "measurements": []}


def history_table(history: list[dict]) -> list[str]:
    """Every recorded run of this configuration, with the machine probe it ran under: the runs in fresh
    processes (both allocators), then the earlier ones, which timed in the process that had exported."""
    def probe(run: dict) -> str:
        m = run["machine"] or {}
        return " | ".join(str(m.get(k, "n/a")) for k in ("sgemm_gflops", "copy_gb_s", "torch_op_dispatch_us"))

    def span(run: dict) -> str:
        return f"{run['ratio']:.2f} ({min(run['ratios']):.2f}-{max(run['ratios']):.2f})"

    current = [r for r in history if r.get("method") == "fresh-processes"]
    earlier = [r for r in history if r.get("method") != "fresh-processes"]
    lines = []
    if current:
        lines += ["Run history, each allocator setting in a fresh process (machine probe: 2-thread SGEMM, copy "
                  "bandwidth, one tiny PyTorch op's dispatch; PyTorch / onnxruntime medians in ms):", "",
                  "| run (UTC) | commit | SGEMM GFLOP/s | copy GB/s | torch op us | tuned: PyTorch / ort ms | tuned ratio | "
                  "default: PyTorch / ort ms | default ratio |", "|---|---|---|---|---|---|---|---|---|"]
        for run in current:
            cells = []
            for allocator in ("tuned", "default"):
                s = run["by_allocator"].get(allocator)
                cells += [f"{s['median_ms']['pytorch_eager']:.1f} / {s['median_ms']['onnxruntime']:.1f}", span(s)] if s \
                    else ["n/a", "n/a"]
            lines.append(f"| {run['time']} | {run['commit'] or 'n/a'} | {probe(run)} | " + " | ".join(cells) + " |")
        lines.append("")
    if earlier:
        lines += ["Earlier runs, timed in the process that had just exported the bundle (its golden batches had "
                  "raised glibc's malloc thresholds: no page faults, as with the tuned allocator):", "",
                  "| run (UTC) | commit | SGEMM GFLOP/s | copy GB/s | torch op us | eager ms | onnxruntime ms | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for run in earlier:
            ms = run["median_ms"]
            lines.append(f"| {run['time']} | {run['commit'] or 'n/a'} | {probe(run)} | {ms['pytorch_eager']:.1f} | "
                         f"{ms['onnxruntime']:.1f} | {span(run)} |")
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
