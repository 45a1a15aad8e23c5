"""Surveillance privacy removal: a box that follows a subject through the clip is inpainted away in
every frame, given as per-frame boxes (JSON lines, as a detector would produce them). Writes the
source clip out/camera.avi, the boxes out/privacy_boxes.jsonl and the result out/privacy.avi.

    python examples/privacy_boxes.py [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from cicm_deploy import Inpainter
from cicm_deploy.cli import default_model_path
from cicm_deploy.video import VideoWriter, inpaint_video, load_boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clip import pan_frames  # noqa: E402


def main(out_dir: Path) -> None:
    frames = pan_frames()
    height, width = frames[0].shape[:2]
    out_dir.mkdir(parents=True, exist_ok=True)
    source = VideoWriter(out_dir / "camera.avi", width, height, fps=12)
    for frame in frames:
        source.write(frame)
    source.close()
    boxes_path = out_dir / "privacy_boxes.jsonl"
    with open(boxes_path, "w") as handle:  # a subject walking left to right; absent in the last frames
        for index in range(len(frames) - 4):
            x = 10 + 8 * index
            handle.write(json.dumps({"frame": index, "boxes": [[x, 90, x + 40, 170]]}) + "\n")
    start = time.perf_counter()
    with Inpainter(default_model_path()) as inpaint:
        written = inpaint_video(inpaint, source.path, out_dir / "privacy.avi",
                                boxes=load_boxes(boxes_path, width, height), batch_size=4)
    print(f"wrote {out_dir / 'privacy.avi'}: {written} frames in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=Path("out"), help="where to write (default: out)")
    main(parser.parse_args().out_dir)
