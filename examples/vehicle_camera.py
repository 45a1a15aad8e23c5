"""Vehicle camera with a fixed occlusion (a wiper blade and a dirt spot): one static mask for the
whole clip, frames streamed through the default model. Writes out/vehicle_camera.mp4.

    python examples/vehicle_camera.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cicm_deploy import Inpainter
from cicm_deploy.cli import default_model_path
from cicm_deploy.video import VideoWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip import pan_frames  # noqa: E402


def occlusion(width: int, height: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line([(20, height - 10), (width // 2, 30)], fill=255, width=9)  # the wiper blade
    draw.ellipse([width - 70, 40, width - 40, 70], fill=255)  # a dirt spot
    return np.asarray(canvas) > 0


def main(out_dir: Path) -> None:
    frames = pan_frames()
    mask = occlusion(frames[0].shape[1], frames[0].shape[0])
    dirty = [np.where(mask[:, :, None], 40, f).astype(np.uint8) for f in frames]  # what the camera records
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = VideoWriter(out_dir / "vehicle_camera.mp4", mask.shape[1], mask.shape[0], fps=12)
    start = time.perf_counter()
    with Inpainter(default_model_path()) as inpaint:
        for frame in inpaint.stream(dirty, mask, batch_size=4):  # the static mask is converted once
            writer.write(frame)
    writer.close()
    print(f"wrote {writer.path}: {writer.count} frames in {time.perf_counter() - start:.1f} s "
          f"({100 * mask.mean():.1f}% of each frame occluded)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("out"), help="where to write (default: out)")
    main(parser.parse_args().out_dir)
