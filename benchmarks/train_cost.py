"""Training step time with and without the memory update (context generalization), one process.

Alternates rounds of steps with generalization on and off on the same batches (CPU, or the GPU
when present) and reports medians and the update's share of a step. Target: <= 10 %.
Writes JSON and markdown to benchmarks/results/.

    python benchmarks/train_cost.py [--preset default] [--batch 8] [--crop 128]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from cicm_deploy.config import preset
from cicm_deploy.train.trainer import PhotoSampler, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per setting per round")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_cost")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)  # as cicm-deploy train does on CPU
    photos = str(ROOT / "cicm_deploy" / "assets" / "photos")
    config = TrainConfig(data=photos, out="/tmp/train-cost", batch_size=args.batch, crop=args.crop, val_images=0)
    trainer = Trainer(preset(args.preset), config)
    sampler = PhotoSampler(photos, "all", args.crop, config.cache_side, 0.0)
    batches = [sampler.batch(trainer.rng, args.batch) for _ in range(args.steps)]
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for image, mask in batches[:2]:  # warm-up
        trainer.train_step(image, mask)
    times: dict[str, list[float]] = {"with_update": [], "without_update": []}
    for _ in range(args.rounds):
        for name, enabled in (("with_update", True), ("without_update", False)):
            trainer.generalize = enabled
            for image, mask in batches:
                sync()
                start = time.perf_counter()
                trainer.train_step(image, mask)
                sync()
                times[name].append((time.perf_counter() - start) * 1000)
    medians = {k: statistics.median(v) for k, v in times.items()}
    share = (medians["with_update"] - medians["without_update"]) / medians["with_update"]
    device = torch.cuda.get_device_name(0) if trainer.device.type == "cuda" else f"CPU {platform.machine()}"
    report = {"date": datetime.date.today().isoformat(), "device": device, "threads": torch.get_num_threads(),
              "preset": args.preset, "batch": args.batch, "crop": args.crop, "torch": torch.__version__,
              "median_step_ms": medians, "memory_update_share": share, "target_share": 0.10,
              "target_met": share <= 0.10, "samples": {k: len(v) for k, v in times.items()},
              "command": f"python benchmarks/train_cost.py --preset {args.preset} --batch {args.batch} --crop {args.crop}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Training step cost of the memory update", "",
             f"{report['date']}, {device}, {report['threads']} threads, preset `{args.preset}`, batch {args.batch}, "
             f"{args.crop}x{args.crop} crops, torch {torch.__version__}. Command: `{report['command']}`", "",
             "| step | median ms |", "|---|---|",
             f"| with context generalization | {medians['with_update']:.1f} |",
             f"| without | {medians['without_update']:.1f} |", "",
             f"The memory update is **{100 * share:.1f} %** of a training step (target <= 10 %: "
             f"{'met' if share <= 0.10 else 'missed'})."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
