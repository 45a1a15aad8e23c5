"""onnxruntime CPU vs PyTorch CPU eager on the same model and inputs, in one process.

Exports the model (FP32, standard-op routing) to a temporary bundle, then times both backends
on the same image and mask, with the same thread count, alternating rounds so that machine noise
hits both alike (each round's block starts with one untimed call: both runtimes' worker threads
spin for a while after a call, and on a 2-core machine they would steal the other's cores). Reports medians and the ratio. Writes JSON and markdown to benchmarks/results/.

    python benchmarks/ort_vs_torch.py [--preset paper] [--checkpoint CKPT] [--size 256] [--batch 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from cicm_deploy.checkpoint import load_model, save_checkpoint
from cicm_deploy.config import preset
from cicm_deploy.export.bundle import export_bundle
from cicm_deploy.model import UNetCICM
from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--checkpoint", type=Path, help="benchmark this checkpoint instead of a preset")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=5, help="timed calls per backend per round")
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
        times: dict[str, list[float]] = {"pytorch_eager": [], "onnxruntime": []}
        for _ in range(args.rounds):
            for name, call in (("pytorch_eager", torch_call), ("onnxruntime", ort_call)):
                call()  # untimed: lets the other runtime's spinning worker threads go idle first
                for _ in range(args.iterations):
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)

        profile = ort_op_profile(Path(tmp) / "bundle" / "model.onnx", feeds, args.threads)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                torch_call()
        torch_ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
        total = sum(torch_ops.values()) or 1.0
        torch_profile = {k: round(100 * v / total, 1) for k, v in sorted(torch_ops.items(), key=lambda kv: -kv[1])[:6]}

    medians = {k: statistics.median(v) * 1000 for k, v in times.items()}
    ratio = medians["pytorch_eager"] / medians["onnxruntime"]
    report = {
        "date": datetime.date.today().isoformat(), "device": f"CPU {platform.machine()} ({platform.processor() or 'n/a'})",
        "threads": args.threads, "model": label, "batch": args.batch, "size": args.size,
        "versions": {n: metadata.version(n) for n in ("torch", "onnxruntime")},
        "median_ms": medians, "p90_ms": {k: float(np.percentile(v, 90) * 1000) for k, v in times.items()},
        "samples": {k: len(v) for k, v in times.items()},
        "speedup_onnxruntime_over_pytorch": ratio,
        "onnxruntime_op_share_percent": profile, "pytorch_op_share_percent": torch_profile, "target": 1.5, "target_met": ratio >= 1.5,
        "command": "python benchmarks/ort_vs_torch.py " + " ".join(
            f"--{k} {v}" for k, v in (("preset", args.preset), ("checkpoint", args.checkpoint), ("size", args.size),
                                      ("batch", args.batch), ("threads", args.threads), ("rounds", args.rounds))
            if v is not None and not (k == "preset" and args.checkpoint is not None)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# onnxruntime CPU vs PyTorch CPU eager", "",
             f"{report['date']}, {report['device']}, {args.threads} threads for both, {label}, "
             f"batch {args.batch}, {args.size}x{args.size}, FP32, standard-op routing; torch "
             f"{report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}.",
             f"Command: `{report['command']}`", "",
             "| backend | median ms | p90 ms |", "|---|---|---|"]
    for name in times:
        lines.append(f"| {name} | {medians[name]:.2f} | {report['p90_ms'][name]:.2f} |")
    lines += ["", f"onnxruntime is **{ratio:.2f}x** PyTorch eager (target 1.5x: "
                  f"{'met' if ratio >= 1.5 else 'missed'}).", "",
              "Where the time goes (share of kernel time, 3 profiled calls):", "",
              "- onnxruntime: " + ", ".join(f"{k} {v}%" for k, v in profile.items()),
              "- PyTorch: " + ", ".join(f"{k} {v}%" for k, v in torch_profile.items())]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
