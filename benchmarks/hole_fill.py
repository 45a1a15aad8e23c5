"""The hole fills the network starts from: quality per hole-size bin, and cost in PyTorch and onnxruntime.

Quality (with --data): PSNR/SSIM of each fill alone (the composite of the fill and the known
pixels) on the evaluation pairs of `cicm-deploy eval` (same seed, crops and masks), next to the
exact harmonic solution (a sparse direct solve of Laplace's equation in the hole) and OpenCV's
Telea and Navier-Stokes. Cost: each fill alone on one 256x256 frame, in PyTorch CPU eager and
exported to ONNX in onnxruntime CPU, alternating rounds (each block starts after a 50 ms pause
and one untimed call).

    python benchmarks/hole_fill.py [--data DIR] [--size 256] [--threads 2] [--rounds 20]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cicm_deploy.model import harmonic_fill, push_pull_fill

ROOT = Path(__file__).resolve().parent.parent
# As the default model calls them: sides are multiples of its stride 8 (--size must be too).
FILLS = {"push-pull": lambda x, h: push_pull_fill(x, h, even_levels=3),
         "smooth-push-pull": lambda x, h: push_pull_fill(x, h, smoothing=8, even_levels=3),
         "harmonic": lambda x, h: harmonic_fill(x, h, even_levels=3)}


class FillModule(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return FILLS[self.name](image, mask)


def torch_fill_predictor(name: str):
    def predict(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        h = torch.from_numpy(hole)[None, None].float()
        with torch.inference_mode():
            out = torch.where(h > 0.5, FILLS[name](x, h), x)
        return (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return predict


def quality(data_dir: str, per_bin: int) -> dict:
    from cicm_deploy.train.evaluate import BASELINES, build_eval_set, evaluate

    data = build_eval_set(data_dir, size=256, per_bin=per_bin)
    methods = {name: torch_fill_predictor(name) for name in FILLS}
    methods.update(BASELINES)  # Telea, Navier-Stokes, the exact harmonic fill
    return evaluate(methods, data, progress=False)["summary"]


def timing(size: int, threads: int, rounds: int, iterations: int) -> dict[str, dict[str, float]]:
    import onnxruntime as ort

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, size, size), dtype=np.float32)
    hole = np.zeros((1, 1, size, size), np.float32)
    hole[..., size // 4: size // 2, size // 4: 3 * size // 4] = 1.0
    hole[..., 3 * size // 5: 4 * size // 5, size // 8: size // 3] = 1.0
    x, h = torch.from_numpy(image), torch.from_numpy(hole)
    calls = {}
    for name in FILLS:
        buffer = io.BytesIO()
        torch.onnx.export(FillModule(name), (x, h), buffer, input_names=["image", "mask"], output_names=["fill"],
                          opset_version=17, dynamo=False)  # the exporter the bundles use
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(None, {"image": image, "mask": hole})[0],
                                   FILLS[name](x, h).numpy(), atol=1e-5)

        def eager(name: str = name) -> None:
            with torch.inference_mode():
                FILLS[name](x, h)

        def onnxruntime(session=session) -> None:
            session.run(None, {"image": image, "mask": hole})

        calls[f"{name} pytorch"], calls[f"{name} onnxruntime"] = eager, onnxruntime
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            time.sleep(0.05)  # the other runtime's worker threads stop spinning (these calls are short)
            call()  # untimed
            for _ in range(iterations):
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
    return {key: {"median_ms": statistics.median(v) * 1000, "p90_ms": float(np.percentile(v, 90) * 1000)}
            for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="photo folder (`cicm-deploy data fetch`): also measure quality")
    parser.add_argument("--per-bin", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hole_fill")
    args = parser.parse_args()
    if args.size % 8:
        parser.error("--size must be a multiple of 8 (the default model's stride)")

    report = {"date": datetime.date.today().isoformat(), "device": f"CPU {platform.machine()}", "threads": args.threads,
              "size": args.size, "versions": {n: metadata.version(n) for n in ("torch", "onnxruntime")},
              "timing": timing(args.size, args.threads, args.rounds, args.iterations),
              "command": f"python benchmarks/hole_fill.py{' --data ' + args.data if args.data else ''} --size {args.size} "
                         f"--threads {args.threads} --rounds {args.rounds}"}
    if args.data:
        report["quality"] = quality(args.data, args.per_bin)
        report["per_bin"] = args.per_bin
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Hole fills: quality and cost", "", f"{report['date']}, {report['device']}, {args.threads} threads, "
             f"torch {report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}.",
             f"Command: `{report['command']}`", ""]
    if "quality" in report:
        bins = [b for b in report["quality"]["harmonic"] if b != "all"]
        lines += [f"Quality of each fill alone ({args.per_bin} evaluation pairs per bin, as `cicm-deploy eval`):", "",
                  "| fill | " + " | ".join(f"PSNR {b}" for b in bins) + " | " + " | ".join(f"SSIM {b}" for b in bins) + " |",
                  "|---|" + "---|" * (2 * len(bins))]
        for name, per_bin in report["quality"].items():
            lines.append(f"| {name} | " + " | ".join(f"{per_bin[b]['psnr']:.2f}" for b in bins) + " | "
                         + " | ".join(f"{per_bin[b]['ssim']:.4f}" for b in bins) + " |")
        lines.append("")
    lines += [f"Cost of the fill alone, one {args.size}x{args.size} frame:", "", "| fill | runtime | median ms | p90 ms |",
              "|---|---|---|---|"]
    for key, value in report["timing"].items():
        name, runtime = key.rsplit(" ", 1)
        lines.append(f"| {name} | {runtime} | {value['median_ms']:.2f} | {value['p90_ms']:.2f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
