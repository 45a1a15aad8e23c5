"""``cicm-deploy train`` and ``eval`` (registered by cicm_deploy.cli)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from cicm_deploy.cli_support import UserError, require_torch, user_errors


def _parse_value(text: str) -> Any:
    """A --set value: JSON where it parses (numbers, true/false, lists), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _apply_override(target: dict[str, Any], dotted: str, value: Any, known: dict[str, Any], section: str) -> None:
    keys = dotted.split(".")
    dotted = f"{section}.{dotted}"
    node, spec = target, known
    for key in keys[:-1]:
        if not isinstance(spec.get(key), dict):
            raise UserError(f"--set {dotted}: {key!r} is not a group of settings; known: {', '.join(sorted(spec))}")
        node, spec = node.setdefault(key, {}), spec[key]
    if keys[-1] not in spec:
        raise UserError(f"--set {dotted}: unknown setting {keys[-1]!r}; known: {', '.join(sorted(spec))}")
    node[keys[-1]] = value


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path),
              help="Folder of training photos (recursive); `cicm-deploy data fetch DIR` builds one.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (checkpoints, log.jsonl).")
@click.option("--preset", "preset_name", default="default", show_default=True,
              help="Model preset: default, default-unet, paper, unet, tiny, tiny-unet (*unet: the plain UNet).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file {\"model\": {...}, \"train\": {...}} applied over the preset and defaults.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any setting, e.g. --set train.steps=500 --set model.memory.num_sets=8.")
@click.option("--steps", type=int, help="Shortcut for --set train.steps=N.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path),
              help="Continue a run from its checkpoint (bit for bit: weights, optimizers, RNG states).")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
def train(data_dir: Path | None, out: Path | None, preset_name: str, config_file: Path | None,
          overrides: tuple[str, ...], steps: int | None, resume: Path | None, print_config: bool) -> None:
    """Train UNet-CICM (or the plain UNet) on a folder of photos.

    CPU or GPU (bfloat16 autocast on CUDA); on several GPUs or nodes run it under torchrun
    (`torchrun --nproc-per-node 8 -m cicm_deploy.cli train ...`). The objective is the paper's
    Eq. 9 with its weights; masks are free-form strokes and boxes over 0-60 % hole ratios. A
    progress bar shows losses and images/s; log.jsonl records them with validation PSNR; last.pt
    is written atomically at every validation and on exit (Ctrl-C included), step_N.pt every
    checkpoint_every steps. Every model and training setting can be set with --config or --set.
    """
    require_torch("train")

    def run() -> Any:
        import dataclasses

        from cicm_deploy.config import ModelConfig
        from cicm_deploy.config import preset as get_preset
        from cicm_deploy.train.trainer import TrainConfig

        model_cfg = get_preset(preset_name).to_dict()
        train_cfg = TrainConfig().to_dict()
        if resume is not None:
            from cicm_deploy.checkpoint import read_checkpoint

            saved = read_checkpoint(resume)
            model_cfg = saved["model_config"]
            train_cfg = (saved.get("trainer") or {}).get("train_config", train_cfg)
        resolved = {"model": model_cfg, "train": train_cfg}
        if config_file is not None:
            try:
                loaded = json.loads(config_file.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"--config {config_file}: cannot read it as JSON ({exc})") from None
            if not isinstance(loaded, dict):
                raise UserError(f"--config {config_file}: expected a JSON object {{\"model\": {{...}}, \"train\": {{...}}}}")
            for section in ("model", "train"):
                for key, value in _dotted(loaded.get(section) or {}):  # nested groups merge key by key
                    _apply_override(resolved[section], key, value, {**resolved[section]}, section)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.startswith(("model.", "train.")):
                raise UserError(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE")
            section, _, rest = key.partition(".")
            _apply_override(resolved[section], rest, _parse_value(value), resolved[section], section)
        if steps is not None:
            resolved["train"]["steps"] = steps
        if data_dir is not None:
            resolved["train"]["data"] = str(data_dir)
        if out is not None:
            resolved["train"]["out"] = str(out)
        try:
            model_config = ModelConfig.from_dict(resolved["model"])
            train_config = TrainConfig.from_dict(resolved["train"])
        except (TypeError, ValueError) as exc:
            raise UserError(f"invalid configuration: {exc}") from None
        if print_config:
            click.echo(json.dumps({"model": model_config.to_dict(), "train": dataclasses.asdict(train_config)}, indent=2))
            return None
        if not train_config.data:
            raise UserError("no training data: pass --data DIR (a folder of photos; `cicm-deploy data fetch DIR` "
                            "builds one)")
        run_dir = Path(train_config.out)
        if resume is None and any((run_dir / name).exists() for name in ("last.pt", "log.jsonl")):
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir / 'last.pt'}, or "
                            "choose another --out")
        from cicm_deploy.train.run import run_training

        return run_training(model_config, train_config, resume=str(resume) if resume else None)

    metrics = user_errors(run)
    if metrics:
        click.echo(f"done: {json.dumps(metrics)}")


def _dotted(group: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """{"memory": {"num_sets": 8}} -> [("memory.num_sets", 8)]: a nested group sets only the keys it names."""
    pairs: list[tuple[str, Any]] = []
    for key, value in group.items():
        if isinstance(value, dict) and value:
            pairs += _dotted(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _predictor(target: Path) -> tuple[str, Any]:
    """(label, predict(image_u8, mask_bool) -> u8) for a checkpoint (PyTorch) or a bundle (onnxruntime)."""
    if target.is_dir():
        from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

        runtime = OnnxRuntimeBackend(target).load()
        return target.name, runtime.infer
    from cicm_deploy.checkpoint import load_model
    from cicm_deploy.predict import inpaint_array, pick_device

    model, _ = load_model(target, map_location=pick_device("auto"))
    return target.stem, lambda image, mask: inpaint_array(model, image, mask)


@click.command("eval")
@click.argument("targets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Photo folder; its validation split (by path hash) is evaluated.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option("--val-fraction", default=0.05, show_default=True, type=click.FloatRange(0, 1, max_open=True), help="As used for training.")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=8), help="Evaluation crop side.")
@click.option("--per-bin", default=8, show_default=True, type=click.IntRange(min=1), help="Masks per hole-ratio bin (0-20/20-40/40-60 %).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also evaluate OpenCV's Telea and Navier-Stokes inpainting and the exact harmonic fill.")
@click.option("--name", "names", multiple=True, help="Label for each target, in order (default: file names).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("reports/quality"), show_default=True,
              help="Report path without suffix: writes .json, .md and _examples.png.")
@click.option("--examples", default=4, show_default=True, type=click.IntRange(min=0), help="Rows in the example grid.")
@click.option("--title", default="Inpainting quality", show_default=True, help="Report title.")
@click.option("--note", "extra_notes", multiple=True, help="A paragraph to add to the report (repeatable).")
def evaluate_cmd(targets: tuple[Path, ...], data_dir: Path, split: str, val_fraction: float, size: int, per_bin: int,
                 baselines: bool, names: tuple[str, ...], out: Path, examples: int, title: str,
                 extra_notes: tuple[str, ...]) -> None:
    """Measure PSNR, SSIM and L1 per hole-ratio bin for checkpoints or bundles.

    Each TARGET is a checkpoint (run with PyTorch) or a bundle directory (onnxruntime). The
    photos are center crops of the folder's validation split, the masks the fixed seeded
    evaluation set; OpenCV's Telea and Navier-Stokes inpainting and the exact harmonic fill (a
    sparse solve of Laplace's equation in the hole) run on the same pairs. Writes a JSON and a
    markdown report and a PNG grid of examples (input, mask, each method, ground truth).
    """
    def go() -> None:
        from cicm_deploy.train.evaluate import BASELINES, build_eval_set, evaluate, example_grid, write_report

        if names and len(names) != len(targets):
            raise UserError(f"{len(names)} --name values for {len(targets)} targets; give one per target or none")
        needed = {"skimage": "scikit-image", **({"cv2": "OpenCV", "scipy": "SciPy"} if baselines else {})}
        missing = [name for module, name in needed.items() if importlib.util.find_spec(module) is None]
        if missing:
            raise UserError(f"eval needs {' and '.join(missing)}: pip install 'cicm-deploy[eval]'")
        methods = {}
        for index, target in enumerate(targets):
            label, predict = _predictor(target)
            methods[names[index] if names else label] = predict
        if baselines:
            methods.update(BASELINES)
        data = build_eval_set(str(data_dir), size=size, per_bin=per_bin, split=split, val_fraction=val_fraction)
        result = evaluate(methods, data)
        result["setup"] = {"data": str(data_dir), "split": split, "val_fraction": val_fraction, "size": size,
                           "per_bin": per_bin, "images": sorted(set(data.sources)),
                           "targets": {n: str(t) for n, t in zip(methods, targets)}}
        step = max(1, len(data.images) // max(examples, 1))
        grid = example_grid(methods, data, list(range(0, len(data.images), step))[:examples],
                            out.with_name(out.name + "_examples.png"))
        notes = [f"{len(data.images)} evaluations ({per_bin} per bin) on center crops {size}x{size} of "
                 f"{len(set(data.sources))} photos of the {split} split of `{data_dir}` (each photo paired with "
                 "several masks). Examples: input, mask, each method, ground truth:", "", f"![examples]({grid.name})"]
        notes = [*[line for note in extra_notes for line in (note, "")], *notes]
        json_path, md_path = write_report(result, out, title, notes)
        for line in md_path.read_text().splitlines()[2:-1]:
            click.echo(line)
        click.echo(f"wrote {json_path}, {md_path}, {grid}")

    user_errors(go)
