"""Inpainter.stream() against a naive per-frame loop, same clip, model and backend, one process.

The clip is the examples' pan over the demo photo (96 frames, 256x192) with a fixed occlusion
mask; the model is the shipped default, exported to an FP32 bundle and run with onnxruntime on
the CPU. Rounds alternate between the two so machine noise hits both alike. Target: >= 1.3x.
Writes JSON and markdown to benchmarks/results/.

    python benchmarks/stream_vs_loop.py [--frames 96] [--batch 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream_vs_loop")
    args = parser.parse_args()
    frames = pan_frames(args.frames)
    mask = occlusion(frames[0].shape[1], frames[0].shape[0])
    times: dict[str, list[float]] = {"per_frame_loop": [], "stream": []}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export_bundle(default_model_path(), Path(tmp) / "bundle", check=False).path
        with Inpainter(bundle) as inpaint:
            inpaint(frames[0], mask)  # warm-up
            for _ in range(args.rounds):
                start = time.perf_counter()
                for frame in frames:
                    inpaint(frame, mask)
                times["per_frame_loop"].append(time.perf_counter() - start)
                start = time.perf_counter()
                for _ in inpaint.stream(frames, mask, batch_size=args.batch):
                    pass
                times["stream"].append(time.perf_counter() - start)
            backend = inpaint.describe()
    fps = {k: args.frames / statistics.median(v) for k, v in times.items()}
    ratio = fps["stream"] / fps["per_frame_loop"]
    report = {"date": datetime.date.today().isoformat(), "device": f"CPU {platform.machine()}",
              "backend": backend["backend"], "providers": backend.get("providers"),
              "onnxruntime": metadata.version("onnxruntime"), "frames": args.frames, "size": "256x192",
              "batch": args.batch, "frames_per_s": fps, "speedup": ratio, "target": 1.3, "target_met": ratio >= 1.3,
              "command": f"python benchmarks/stream_vs_loop.py --frames {args.frames} --batch {args.batch}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["# Inpainter.stream() vs a per-frame loop", "",
             f"{report['date']}, {report['device']}, onnxruntime {report['onnxruntime']} (CPU provider), default "
             f"model as an FP32 bundle, {args.frames} frames of 256x192 with a fixed mask, stream batch {args.batch}. "
             f"Command: `{report['command']}`", "",
             "| path | frames/s |", "|---|---|",
             f"| per-frame loop | {fps['per_frame_loop']:.1f} |", f"| stream | {fps['stream']:.1f} |", "",
             f"stream() is **{ratio:.2f}x** the loop (target 1.3x: {'met' if ratio >= 1.3 else 'missed'})."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
