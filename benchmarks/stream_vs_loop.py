"""Inpainter.stream() against a naive per-frame loop, same clip, model and backend, one process.

The clip is the examples' pan over the demo photo (96 frames, 256x192) with a fixed occlusion
mask; the model is the shipped default, exported to an FP32 bundle and run with onnxruntime on
the CPU. Rounds alternate between the two so machine noise hits both alike. Target: >= 1.3x.
Writes JSON and markdown to benchmarks/results/.

    python benchmarks/stream_vs_loop.py [--frames 96] [--rounds 3]

Cases: the loop, stream() with batch 1 and 4, each with one worker (one onnxruntime session on
all cores) and two workers (two sessions splitting the cores); plus the loop's time per part.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from clip import pan_frames  # noqa: E402
from vehicle_camera import occlusion  # noqa: E402

from cicm_deploy import Inpainter  # noqa: E402
from cicm_deploy.cli import default_model_path  # noqa: E402
from cicm_deploy.export.bundle import export_bundle  # noqa: E402


def profile_loop(inpaint: Inpainter, frames: list, mask) -> dict[str, float]:
    """Milliseconds per frame of the per-frame loop's parts: conversion+padding, inference, cropping."""
    from cicm_deploy.images import as_mask_array
    from cicm_deploy.runtimes.base import finish_batch, prepare_batch

    hole = as_mask_array(mask)
    parts = {"prepare": 0.0, "inference": 0.0, "finish": 0.0}
    for frame in frames:
        t0 = time.perf_counter()
        pairs = [(frame, hole)]
        feeds = prepare_batch(pairs, inpaint.runtime.stride)
        t1 = time.perf_counter()
        out = inpaint.runtime.run(feeds)["inpainted"]
        t2 = time.perf_counter()
        finish_batch(out, pairs)
        t3 = time.perf_counter()
        parts["prepare"] += t1 - t0
        parts["inference"] += t2 - t1
        parts["finish"] += t3 - t2
    return {k: 1000 * v / len(frames) for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream_vs_loop")
    args = parser.parse_args()
    frames = pan_frames(args.frames)
    mask = occlusion(frames[0].shape[1], frames[0].shape[0])
    # (label, workers, batch): the naive loop first, then stream() settings
    cases = [("per-frame loop", 1, None), ("stream, batch 1", 1, 1), ("stream, batch 4", 1, 4),
             ("stream, 2 workers, batch 1", 2, 1), ("stream, 2 workers, batch 4", 2, 4)]
    times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_bundle(default_model_path(), Path(tmp) / "bundle", check=False).path
        inpainters = {w: Inpainter(bundle, workers=w) for w in sorted({w for _, w, _ in cases})}
        try:
            for inpaint in inpainters.values():
                inpaint(frames[0], mask)  # warm-up
            for _ in range(args.rounds):  # rounds alternate the cases so machine noise hits all alike
                for label, workers, batch in cases:
                    inpaint = inpainters[workers]
                    start = time.perf_counter()
                    if batch is None:
                        for frame in frames:
                            inpaint(frame, mask)
                    else:
                        for _ in inpaint.stream(frames, mask, batch_size=batch):
                            pass
                    times[label].append(time.perf_counter() - start)
            profile = profile_loop(inpainters[1], frames, mask)
            backend = inpainters[1].describe()
        finally:
            for inpaint in inpainters.values():
                inpaint.close()
    fps = {k: args.frames / statistics.median(v) for k, v in times.items()}
    loop = fps["per-frame loop"]
    best = max((k for k in fps if k != "per-frame loop"), key=fps.get)
    ratio = fps[best] / loop
    report = {"date": datetime.date.today().isoformat(), "device": f"CPU {platform.machine()}, {os.cpu_count()} cores",
              "backend": backend["backend"], "providers": backend.get("providers"),
              "onnxruntime": metadata.version("onnxruntime"), "frames": args.frames, "size": "256x192",
              "frames_per_s": fps, "loop_profile_ms_per_frame": profile, "best": best, "speedup": ratio,
              "target": 1.3, "target_met": ratio >= 1.3,
              "command": f"python benchmarks/stream_vs_loop.py --frames {args.frames} --rounds {args.rounds}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    total = sum(profile.values())
    lines = ["# Inpainter.stream() vs a per-frame loop", "",
             f"{report['date']}, {report['device']}, onnxruntime {report['onnxruntime']} (CPU provider), default "
             f"model as an FP32 bundle, {args.frames} frames of 256x192 with a fixed mask, median of {args.rounds} "
             f"rounds. One worker = one session on all cores; two workers = two sessions splitting them. "
             f"Command: `{report['command']}`", "",
             "| path | frames/s | vs loop |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {v / loop:.2f}x |" for k, v in fps.items()]
    lines += ["", f"Best: {best}, **{ratio:.2f}x** the loop (target 1.3x: {'met' if ratio >= 1.3 else 'missed'}).",
              "", "Where a loop frame's time goes (ms): " + ", ".join(
                  f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in profile.items()) + "."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
