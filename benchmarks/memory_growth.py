"""Measure how large the memory grows under the paper's additive update (Eq. 2) and the bounded one.

Runs context generalization (forward pass + memory update, no optimizer) on crops of the example
photo with random box holes, for both update rules from the same initial weights, and records the
largest magnitude in the memory, in the bottleneck features, and in the scores F.C that feed the
softmax. FP16 overflows past 65504. Writes JSON and markdown to benchmarks/results/.

    python benchmarks/memory_growth.py [--steps 300] [--preset tiny]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from cicm_deploy.config import preset
from cicm_deploy.images import load_image
from cicm_deploy.model import UNetCICM

ROOT = Path(__file__).resolve().parent.parent


def batches(steps: int, size: int = 64, batch: int = 8, seed: int = 0):
    photo = load_image(ROOT / "examples" / "cat.jpg").astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    h, w = photo.shape[:2]
    for _ in range(steps):
        images, masks = [], []
        for _ in range(batch):
            y, x = rng.integers(0, h - size), rng.integers(0, w - size)
            images.append(photo[y:y + size, x:x + size].transpose(2, 0, 1))
            mask = np.zeros((1, size, size), np.float32)
            by, bx = rng.integers(0, size - 24, 2)
            mask[:, by:by + 24, bx:bx + 24] = 1.0
            masks.append(mask)
        yield torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks))


@torch.no_grad()
def run(rule: str, steps: int, preset_name: str) -> dict:
    torch.manual_seed(0)
    model = UNetCICM(preset(preset_name).replace(memory_update_rule=rule)).train()
    memory = model.memories[str(model.config.depth)]
    trace, feature_max, score_max = [], 0.0, 0.0
    for step, (image, mask) in enumerate(batches(steps), start=1):
        out = model(image, mask)
        feat = out.features[str(model.config.depth)]
        feature_max = max(feature_max, float(feat.abs().max()))
        flat = feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1])
        score_max = max(score_max, float((flat @ memory.sets.reshape(-1, feat.shape[1]).t()).abs().max()))
        model.generalize(out, mask)
        if step % max(1, steps // 10) == 0 or step == steps:
            trace.append({"step": step, "memory_max_abs": memory.max_abs()})
    return {"rule": rule, "memory_max_abs": memory.max_abs(), "feature_max_abs": feature_max,
            "score_max_abs": score_max, "trace": trace}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory_growth")
    args = parser.parse_args()
    results = [run(rule, args.steps, args.preset) for rule in ("additive", "bounded")]
    report = {"date": datetime.date.today().isoformat(), "device": f"CPU ({platform.machine()})",
              "torch": torch.__version__, "preset": args.preset, "steps": args.steps, "batch": 8,
              "command": f"python benchmarks/memory_growth.py --steps {args.steps} --preset {args.preset}",
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Memory growth: additive (Eq. 2) vs bounded update", "",
             f"{report['date']}, {report['device']}, torch {report['torch']}, preset `{args.preset}`, "
             f"{args.steps} batches of 8 crops (64x64, 24x24 box holes), generalization only (no optimizer).",
             f"Command: `{report['command']}`", "",
             "| rule | max abs memory | max abs bottleneck feature | max abs score F.C |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rule']} | {r['memory_max_abs']:.4g} | {r['feature_max_abs']:.4g} | {r['score_max_abs']:.4g} |")
    lines += ["", "Largest memory magnitude over the run:", "",
              "| step | " + " | ".join(r["rule"] for r in results) + " |", "|---|---|---|"]
    for a, b in zip(results[0]["trace"], results[1]["trace"]):
        lines.append(f"| {a['step']} | {a['memory_max_abs']:.4g} | {b['memory_max_abs']:.4g} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
