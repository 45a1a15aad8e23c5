"""``cicm-deploy train`` and ``eval`` (registered by cicm_deploy.cli)."""

from __future__ import annotations

import importlib.util
import json
import os
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


def _apply_override(target: dict[str, Any], dotted: str, value: Any, known: dict[str, Any], section: str,
                    source: str = "--set") -> None:
    keys = dotted.split(".")
    dotted = f"{section}.{dotted}"
    node, spec = target, known
    for key in keys[:-1]:
        if not isinstance(spec.get(key), dict):
            raise UserError(f"{source} {dotted}: {key!r} is not a group of settings; known: {', '.join(sorted(spec))}")
        node, spec = node.setdefault(key, {}), spec[key]
    if keys[-1] not in spec:
        raise UserError(f"{source} {dotted}: unknown setting {keys[-1]!r}; known: {', '.join(sorted(spec))}")
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
              help="Continue a run from its checkpoint, in its folder (bit for bit: weights, optimizers, RNG "
                   "states; the model is the checkpoint's).")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
def train(data_dir: Path | None, out: Path | None, preset_name: str, config_file: Path | None,
          overrides: tuple[str, ...], steps: int | None, resume: Path | None, print_config: bool) -> None:
    """Train UNet-CICM (or the plain UNet) on a folder of photos.

    CPU or GPU (bfloat16 autocast on CUDA); on several GPUs or nodes run it under torchrun
    (`torchrun --nproc-per-node 8 -m cicm_deploy.cli train ...`). The objective is the paper's
    Eq. 9 with its weights; masks are free-form strokes and boxes over 0-60 % hole ratios. A
    progress bar shows losses and images/s; log.jsonl records them with validation PSNR; last.pt
    is written atomically at every validation, step_N.pt every checkpoint_every steps. Ctrl-C or
    SIGTERM finishes the current step, saves last.pt there and stops (Ctrl-C twice: at once,
    unsaved); --resume continues bit for bit, in the checkpoint's folder. Every model and training
    setting can be set with --config or --set.
    """
    require_torch("train")

    def run() -> Any:
        import dataclasses

        from cicm_deploy.config import ModelConfig
        from cicm_deploy.config import preset as get_preset
        from cicm_deploy.train.trainer import TrainConfig

        model_cfg = get_preset(preset_name).to_dict()
        train_cfg = TrainConfig().to_dict()
        loaded: dict[str, Any] = {}
        if config_file is not None:
            try:
                loaded = json.loads(config_file.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"--config {config_file}: cannot read it as JSON ({exc})") from None
            if not isinstance(loaded, dict):
                raise UserError(f"--config {config_file}: expected a JSON object {{\"model\": {{...}}, \"train\": {{...}}}}")
            unknown = sorted(set(loaded) - {"model", "train"})
            if unknown:
                raise UserError(f"--config {config_file}: unknown section(s) {', '.join(map(repr, unknown))}; "
                                "expected \"model\" and \"train\"")
        saved = None
        if resume is not None:
            from click.core import ParameterSource

            from cicm_deploy.checkpoint import read_checkpoint

            saved = read_checkpoint(resume)
            if not saved.get("trainer"):
                raise UserError(f"{resume} has no trainer state (written by `init` or exported?); --resume needs a "
                                "checkpoint written by `cicm-deploy train`")
            if click.get_current_context().get_parameter_source("preset_name") != ParameterSource.COMMANDLINE:
                model_cfg = saved["model_config"]  # model settings given below apply over the checkpoint's
            train_cfg = saved["trainer"].get("train_config", train_cfg)
            train_cfg["out"] = str(resume.parent)  # the run continues where its checkpoint is, unless --out says
        resolved = {"model": model_cfg, "train": train_cfg}
        for section in ("model", "train"):
            for key, value in _dotted(loaded.get(section) or {}):  # nested groups merge key by key
                _apply_override(resolved[section], key, value, {**resolved[section]}, section,
                                source=f"--config {config_file}:")
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
        if saved is not None:  # a resumed run keeps its checkpoint's model; asking for another one is an error
            kept = ModelConfig.from_dict(saved["model_config"])
            differ = [f"model.{key}" for key, value in model_config.to_dict().items() if kept.to_dict()[key] != value]
            if differ:
                raise UserError(f"{resume} holds a model with other {', '.join(differ)}; a resumed run keeps its "
                                "checkpoint's model: drop the --preset, --set model.* or config file settings "
                                "that change it")
            model_config = kept
        if print_config:
            click.echo(json.dumps({"model": model_config.to_dict(), "train": dataclasses.asdict(train_config)}, indent=2))
            return None
        if not train_config.data:
            raise UserError("no training data: pass --data DIR (a folder of photos; `cicm-deploy data fetch DIR` "
                            "builds one)")
        run_dir = Path(train_config.out)
        if resume is None and (run_dir / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; continue it with --resume {run_dir / 'last.pt'}, or "
                            "choose another --out")
        if resume is None and (run_dir / "log.jsonl").exists():
            periodic = sorted(run_dir.glob("step_*.pt"), key=lambda p: int(p.stem[5:]) if p.stem[5:].isdigit() else -1)
            if periodic:
                raise UserError(f"{run_dir} holds a run without last.pt; continue it from its latest checkpoint with "
                                f"--resume {periodic[-1]}, or choose another --out")
            raise UserError(f"{run_dir} holds the log of a run that saved no checkpoint (killed before its first "
                            f"save); delete {run_dir} to start over, or choose another --out")
        from cicm_deploy.train.run import run_training
        from cicm_deploy.train.trainer import TrainingStopped

        try:
            return run_training(model_config, train_config, resume=str(resume) if resume else None)
        except TrainingStopped as stop:
            if int(os.environ.get("RANK", "0")) == 0:
                kept = (f"last.pt holds step {stop.step}; continue with: cicm-deploy train --resume "
                        f"{stop.checkpoint} --steps {train_config.steps}" if stop.checkpoint else "nothing was saved")
                click.echo(f"stopped by {stop.signal_name}; {kept}", err=True)
            raise SystemExit(130 if stop.signal_name == "SIGINT" else 143) from None
        except FloatingPointError as exc:  # diverged: not the user's typo, but one line all the same
            raise click.ClickException(str(exc)) from None

    metrics = user_errors(run)
    if metrics and int(os.environ.get("RANK", "0")) == 0:
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


def _labels(targets: tuple[Path, ...]) -> list[str]:
    """Report labels from the targets' names (a bundle's folder, a checkpoint's stem); targets that
    would share one (run_a/last.pt, run_b/last.pt) are told apart by their folders."""
    names = [t.name if t.is_dir() else t.stem for t in targets]
    labels = [f"{t.parent.name}/{n}" if names.count(n) > 1 and t.parent.name else n for t, n in zip(targets, names)]
    return labels if len(set(labels)) == len(labels) else [str(t) for t in targets]


def _predictor(target: Path) -> Any:
    """predict(image_u8, mask_bool) -> u8 for a checkpoint (PyTorch) or a bundle (onnxruntime)."""
    if target.is_dir():
        from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(target).load().infer
    from cicm_deploy.checkpoint import load_model
    from cicm_deploy.predict import inpaint_array, pick_device

    model, _ = load_model(target, map_location=pick_device("auto"))
    return lambda image, mask: inpaint_array(model, image, mask)


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
@click.option("-o", "--out", type=click.Path(), default="out/quality", show_default=True,
              help="Report path without suffix: writes .json, .md and _examples.png (a folder, existing or "
                   "ending in /: its quality.*).")
@click.option("--examples", default=4, show_default=True, type=click.IntRange(min=0), help="Rows in the example grid.")
@click.option("--title", default="Inpainting quality", show_default=True, help="Report title.")
@click.option("--note", "extra_notes", multiple=True, help="A paragraph to add to the report (repeatable).")
def evaluate_cmd(targets: tuple[Path, ...], data_dir: Path, split: str, val_fraction: float, size: int, per_bin: int,
                 baselines: bool, names: tuple[str, ...], out: str, examples: int, title: str,
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

        from cicm_deploy.bench import report_prefix

        if names and len(names) != len(targets):
            raise UserError(f"{len(names)} --name values for {len(targets)} targets; give one per target or none")
        if len(set(names)) != len(names):
            raise UserError(f"--name values must differ: {', '.join(names)}")
        try:
            prefix = report_prefix(out, "quality")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        needed = {"skimage": "scikit-image", **({"cv2": "OpenCV", "scipy": "SciPy"} if baselines else {})}
        missing = [name for module, name in needed.items() if importlib.util.find_spec(module) is None]
        if missing:
            raise UserError(f"eval needs {' and '.join(missing)}: pip install 'cicm-deploy[eval]'")
        labels = list(names) or _labels(targets)
        taken = [label for label in labels if baselines and label in BASELINES]
        if taken:
            raise UserError(f"{', '.join(taken)} names a baseline; give the target another --name")
        methods = {}
        for label, target in zip(labels, targets):
            methods[label] = _predictor(target)
        if baselines:
            methods.update(BASELINES)
        data = build_eval_set(str(data_dir), size=size, per_bin=per_bin, split=split, val_fraction=val_fraction)
        result = evaluate(methods, data)
        result["setup"] = {"data": str(data_dir), "split": split, "val_fraction": val_fraction, "size": size,
                           "per_bin": per_bin, "images": sorted(set(data.sources)),
                           "targets": {n: str(t) for n, t in zip(labels, targets)}}
        step = max(1, len(data.images) // max(examples, 1))
        grid = example_grid(methods, data, list(range(0, len(data.images), step))[:examples],
                            prefix.with_name(prefix.name + "_examples.png"))
        photos = len(set(data.sources))
        pairing = " (each photo paired with several masks)" if len(data.images) > photos else ""
        notes = [f"{len(data.images)} evaluations ({per_bin} per bin) on center crops {size}x{size} of "
                 f"{photos} photos of the {split} split of `{data_dir}`{pairing}. Examples: input, mask, each "
                 "method, ground truth:", "", f"![examples]({grid.name})"]
        notes = [*[line for note in extra_notes for line in (note, "")], *notes]
        json_path, md_path = write_report(result, prefix, title, notes)
        for line in md_path.read_text().splitlines()[2:-1]:
            click.echo(line)
        click.echo(f"wrote {json_path}, {md_path}, {grid}")

    user_errors(go)
