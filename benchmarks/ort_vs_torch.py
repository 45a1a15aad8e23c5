"""onnxruntime CPU vs PyTorch CPU eager on the same model and inputs, in one process.

Exports the model (FP32, standard-op routing) to a temporary bundle, then times both backends
on the same image and mask, with the same thread count, alternating rounds so that machine noise
hits both alike (each round's block starts with one untimed call: both runtimes' worker threads
spin for a while after a call, and on a 2-core machine they would steal the other's cores).
``--repeats`` such measurements run with a pause between them; each reports its ratio of medians.

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
import platform
import statistics
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from cicm_deploy.export.bundle import export_bundle
from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

from cicm_deploy.checkpoint import load_model, save_checkpoint
from cicm_deploy.config import preset
from cicm_deploy.model import UNetCICM

ROOT = Path(__file__).resolve().parent.parent


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
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--checkpoint", type=Path, help="benchmark this checkpoint instead of a preset")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5, help="timed calls per backend per round")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of --rounds rounds each")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between measurements")
    parser.add_argument("--fresh", action="store_true", help="start a new run history instead of appending")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ort_vs_torch")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is None:
            torch.manual_seed(0)
            ckpt = save_checkpoint(Path(tmp) / "model.pt", UNetCICM(preset(args.preset)))
            label = f"preset {args.preset} (random weights: speed does not depend on them)"
        else:
            ckpt, label = args.checkpoint, f"checkpoint {args.checkpoint.name}"
        model, _ = load_model(ckpt)
        export_bundle(ckpt, Path(tmp) / "bundle", check=False)
        runtime = OnnxRuntimeBackend(Path(tmp) / "bundle", providers=["CPUExecutionProvider"], threads=args.threads)
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

        for _ in range(3):  # warm-up
            torch_call()
            ort_call()
        measurements = []
        for repeat in range(args.repeats):
            if repeat:
                time.sleep(args.pause)
            times: dict[str, list[float]] = {"pytorch_eager": [], "onnxruntime": []}
            for _ in range(args.rounds):
                for name, call in (("pytorch_eager", torch_call), ("onnxruntime", ort_call)):
                    call()  # untimed: lets the other runtime's spinning worker threads go idle first
                    for _ in range(args.iterations):
                        start = time.perf_counter()
                        call()
                        times[name].append(time.perf_counter() - start)
            medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
            measurements.append({"median_ms": medians, "p90_ms": {k: float(np.percentile(v, 90) * 1000) for k, v in times.items()},
                                 "samples": {k: len(v) for k, v in times.items()},
                                 "ratio": medians["pytorch_eager"] / medians["onnxruntime"]})
            print(f"measurement {repeat + 1}/{args.repeats}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in medians.items())
                  + f", ratio {measurements[-1]['ratio']:.2f}", flush=True)
        probe = machine_probe(args.threads)

        profile = ort_op_profile(Path(tmp) / "bundle" / "model.onnx", feeds, args.threads)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                torch_call()
        torch_ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(torch_ops.values()) or 1.0
        torch_profile = {k: round(100 * v / total, 1) for k, v in sorted(torch_ops.items(), key=lambda kv: -kv[1])[:6]}

    ratios = sorted(m["ratio"] for m in measurements)
    ratio = statistics.median(ratios)
    middle = min(measurements, key=lambda m: abs(m["ratio"] - ratio))
    command = "python benchmarks/ort_vs_torch.py " + " ".join(
        f"--{k} {v}" for k, v in (("preset", args.preset), ("checkpoint", args.checkpoint), ("size", args.size),
                                  ("batch", args.batch), ("threads", args.threads), ("rounds", args.rounds),
                                  ("repeats", args.repeats)) if v is not None and not (k == "preset" and args.checkpoint is not None))
    run = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
           "machine": probe, "ratio": ratio, "ratios": ratios, "median_ms": middle["median_ms"],
           "p90_ms": middle["p90_ms"], "measurements": measurements}
    config = {"device": f"CPU {platform.machine()} ({platform.processor() or 'n/a'})", "threads": args.threads,
              "model": label, "batch": args.batch, "size": args.size}
    out_json = args.out.with_suffix(".json")
    history = []
    if out_json.exists() and not args.fresh:
        previous = json.loads(out_json.read_text())
        if all(previous.get(k) == v for k, v in config.items()):
            history = previous.get("runs") or [legacy_run(previous)]
    history.append(run)
    report = {
        "date": datetime.date.today().isoformat(), **config,
        "versions": {n: metadata.version(n) for n in ("torch", "onnxruntime")},
        "median_ms": middle["median_ms"], "p90_ms": middle["p90_ms"], "samples": middle["samples"],
        "speedup_onnxruntime_over_pytorch": ratio, "target": 1.5, "target_met": ratio >= 1.5,
        "onnxruntime_op_share_percent": profile, "pytorch_op_share_percent": torch_profile,
        "command": command, "runs": history,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# onnxruntime CPU vs PyTorch CPU eager", "",
             f"{report['date']}, {report['device']}, {args.threads} threads for both, {label}, "
             f"batch {args.batch}, {args.size}x{args.size}, FP32, standard-op routing; torch "
             f"{report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}.",
             f"Command: `{command}`", "", f"Latest run ({len(measurements)} measurements; the median one):", "",
             "| backend | median ms | p90 ms |", "|---|---|---|"]
    for name in middle["median_ms"]:
        lines.append(f"| {name} | {middle['median_ms'][name]:.2f} | {middle['p90_ms'][name]:.2f} |")
    lines += ["", f"onnxruntime is **{ratio:.2f}x** PyTorch eager (measurements: "
                  + ", ".join(f"{r:.2f}" for r in ratios) + f"; target 1.5x: {'met' if ratio >= 1.5 else 'missed'}).", "",
              "Where the time goes (share of kernel time, 3 profiled calls):", "",
              "- onnxruntime: " + ", ".join(f"{k} {v}%" for k, v in profile.items()),
              "- PyTorch: " + ", ".join(f"{k} {v}%" for k, v in torch_profile.items()), ""]
    lines += history_table(history)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def legacy_run(previous: dict) -> dict:
    """A result written before runs were kept (and probed): its one measurement, machine unknown."""
    return {"time": previous["date"], "commit": None, "machine": None, "ratio": previous["speedup_onnxruntime_over_pytorch"],
            "ratios": [previous["speedup_onnxruntime_over_pytorch"]], "median_ms": previous["median_ms"],
            "p90_ms": previous["p90_ms"], "measurements": []}


def history_table(history: list[dict]) -> list[str]:
    """Every recorded run of this configuration, with the machine probe it ran under."""
    lines = ["Run history (same model, batch, size and threads; machine probe: 2-thread SGEMM, copy bandwidth, "
             "one tiny PyTorch op's dispatch):", "",
             "| run (UTC) | commit | SGEMM GFLOP/s | copy GB/s | torch op us | eager ms | onnxruntime ms | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for run in history:
        m, ms = run["machine"] or {}, run["median_ms"]
        lines.append(f"| {run['time']} | {run['commit'] or 'n/a'} | {m.get('sgemm_gflops', 'n/a')} | "
                     f"{m.get('copy_gb_s', 'n/a')} | {m.get('torch_op_dispatch_us', 'n/a')} | {ms['pytorch_eager']:.1f} | {ms['onnxruntime']:.1f} | "
                     f"{run['ratio']:.2f} ({min(run['ratios']):.2f}-{max(run['ratios']):.2f}) |")
    return lines

if __name__ == "__main__":
    main()
