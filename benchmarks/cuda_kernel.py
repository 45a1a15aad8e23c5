"""The fused CICMAugment CUDA kernel against the PyTorch eager memory block, on a GPU.

Block: the default model's memory (C=64, L=13, K=40) on its own bottleneck features of real
photos, for frames of 256², 512² and 1088x1920 at batch 1 and 8: PyTorch eager (FP32, the
reference module) against the kernel with FP32 and FP16 I/O. Model: the whole default model at
batch 1, eager FP32 and FP16 autocast, each with its own memory block or with the kernel in place.
Each case alternates its variants in rounds of CUDA-event-timed calls (after warm-up); medians.
Also checks each kernel result against the eager block (max abs error, route agreement).

    python benchmarks/cuda_kernel.py [--rounds 20] [--calls 20] [-o benchmarks/results/cuda_kernel]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import torch
from cicm_deploy.export.goldens import make_inputs
from cicm_deploy.runtimes.kernel_cuda import CudaKernel, build_kernel_library

from cicm_deploy.checkpoint import load_model
from cicm_deploy.cli import default_model_path
from cicm_deploy.memory import context_weight

ROOT = Path(__file__).resolve().parent.parent
FRAMES = [(256, 256), (512, 512), (1088, 1920)]


def time_calls(fn, calls: int) -> float:
    """Milliseconds per call of ``fn``, over ``calls`` back-to-back calls (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def alternate(variants: dict, rounds: int, calls: int) -> dict[str, float]:
    for fn in variants.values():  # warm-up: cuDNN/cuBLAS choices, allocator
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(time_calls(fn, calls))
    return {name: statistics.median(values) for name, values in times.items()}


def frames(height: int, width: int, batch: int):
    arrays = make_inputs([(height, width, batch)], seed=0)
    return torch.from_numpy(arrays["s0.image"]).cuda(), torch.from_numpy(arrays["s0.mask"]).cuda()


def bottleneck(model, image, mask):
    """The memory and its inputs: the output keeps the features and the predicted ratio gamma."""
    (key, memory), = model.memories.items()
    with torch.inference_mode():
        out = model(image, mask)
    return memory, out.features[key], context_weight(out.gammas[key], memory.cfg)


def block_cases(model, kernel, rounds: int, calls: int) -> list[dict]:
    rows = []
    for height, width in FRAMES:
        for batch in (1, 8):
            memory, feat, weight = bottleneck(model, *frames(height, width, batch))
            half_feat, half_weight = feat.half(), weight.half()
            with torch.inference_mode():
                expected, expected_route = memory(feat, weight)
                out32, route32 = kernel.augment(feat, weight, memory.anchors, memory.sets)
                out16, route16 = kernel.augment(half_feat, half_weight, memory.anchors, memory.sets)
                ms = alternate({
                    "eager_fp32": partial(memory, feat, weight),
                    "kernel_fp32": partial(kernel.augment, feat, weight, memory.anchors, memory.sets),
                    "kernel_fp16": partial(kernel.augment, half_feat, half_weight, memory.anchors, memory.sets),
                }, rounds, calls)
            b, c, h, w = feat.shape
            rows.append({
                "frame": f"{height}x{width}", "batch": batch, "bottleneck": [b, c, h, w], "ms": ms,
                "kernel_fp32_speedup": ms["eager_fp32"] / ms["kernel_fp32"],
                "kernel_fp16_speedup": ms["eager_fp32"] / ms["kernel_fp16"],
                "kernel_fp32_max_abs": float((out32 - expected).abs().max()),
                "kernel_fp32_routes_identical": bool(torch.equal(route32.long(), expected_route)),
                "kernel_fp16_max_abs": float((out16.float() - expected).abs().max()),
                "kernel_fp16_route_agreement": float((route16.long() == expected_route).double().mean()),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def model_cases(model, kernel, rounds: int, calls: int) -> list[dict]:
    (_, memory), = model.memories.items()
    eager_forward = memory.forward

    def fused(feat, weight):
        dtype = torch.float16 if feat.dtype == torch.float16 else torch.float32
        out, route = kernel.augment(feat.to(dtype), weight.to(dtype), memory.anchors, memory.sets)
        return out, route.long()

    def run(use_kernel: bool, fp16: bool, image, mask):
        memory.forward = fused if use_kernel else eager_forward
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
            return model(image, mask).composite

    rows = []
    for height, width in FRAMES:
        image, mask = frames(height, width, 1)
        variants = {f"{prec}_{block}": partial(run, block == "kernel", prec == "fp16", image, mask)
                    for prec in ("fp32", "fp16") for block in ("eager", "kernel")}
        ms = alternate(variants, rounds, max(1, calls // 2))
        del memory.forward  # the module's own again
        rows.append({"frame": f"{height}x{width}", "batch": 1, "ms": ms,
                     "kernel_speedup_fp32": ms["fp32_eager"] / ms["fp32_kernel"],
                     "kernel_speedup_fp16": ms["fp16_eager"] / ms["fp16_kernel"],
                     "fp16_kernel_over_fp32_eager": ms["fp32_eager"] / ms["fp16_kernel"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per case")
    parser.add_argument("--calls", type=int, default=20, help="back-to-back calls timed together in a round")
    parser.add_argument("-o", "--out", default=str(ROOT / "benchmarks/results/cuda_kernel"),
                        help="report path without suffix (.json, .md)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.exit(2, "cuda_kernel.py needs a CUDA GPU\n")
    major, minor = torch.cuda.get_device_capability()
    kernel = CudaKernel(build_kernel_library(tempfile.mkdtemp(), f"{major}{minor}"))
    model = load_model(default_model_path(), map_location="cuda")[0].eval()
    torch.backends.cudnn.benchmark = True
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}",
        "torch": torch.__version__, "cuda": torch.version.cuda, "rounds": args.rounds, "calls": args.calls,
        "command": "python benchmarks/cuda_kernel.py" + (f" --rounds {args.rounds}" if args.rounds != 20 else "")
                   + (f" --calls {args.calls}" if args.calls != 20 else ""),
        "block": block_cases(model, kernel, args.rounds, args.calls),
        "model": model_cases(model, kernel, args.rounds, args.calls),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
