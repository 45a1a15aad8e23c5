"""Copy trained runs into the package as the shipped default models, with their provenance.

    python scripts/ship_models.py runs/default runs/default-unet --data data/photos

For each run: a release checkpoint (weights, config, step, metrics; no optimizer state) in
cicm_deploy/assets/models/<preset>.pt and a sidecar <preset>.json with the training config, a
summary of log.jsonl (first/last losses, validation PSNR over time, images/s) and the data
manifest's hash. The photo set's manifest is copied to reports/data_manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from cicm_deploy.checkpoint import read_checkpoint, save_release

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "cicm_deploy" / "assets" / "models"


def log_summary(log: Path) -> dict:
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    val = [(r["step"], r["val_psnr"]) for r in rows if "val_psnr" in r]
    keys = ("inpaint", "adversarial", "ratio", "inter", "intra", "total", "discriminator")
    return {"steps_logged": len(rows), "first": {k: rows[0].get(k) for k in keys}, "last": {k: rows[-1].get(k) for k in keys},
            "val_psnr": val, "images_per_s_last": rows[-1].get("images_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--checkpoint", default="last.pt", help="which checkpoint of each run to ship")
    args = parser.parse_args()
    manifest = args.data / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    (ROOT / "reports").mkdir(exist_ok=True)
    shutil.copyfile(manifest, ROOT / "reports" / "data_manifest.json")
    MODELS.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        source = run / args.checkpoint
        data = read_checkpoint(source)
        name = run.name
        target = save_release(source, MODELS / f"{name}.pt", data_manifest_sha256=digest)
        sidecar = {"checkpoint": target.name, "step": data["step"], "model_config": data["model_config"],
                   "train_config": data["trainer"]["train_config"], "log": log_summary(run / "log.jsonl"),
                   "data_manifest": "reports/data_manifest.json", "data_manifest_sha256": digest,
                   "command": f"cicm-deploy train --preset {name} --data {args.data} (see scripts/train_default_model.sh)"}
        (MODELS / f"{name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        print(f"shipped {source} -> {target} ({target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
