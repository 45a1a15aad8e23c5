"""The ``cicm-deploy`` command line.

Heavy libraries are imported inside the commands that need them: ``--help``, ``--version``,
``doctor`` and the runtime commands work on a machine without torch. User errors are printed as
one line (what was given, what was expected, how to fix it) and exit with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from . import __version__

MASK_HELP = "Mask convention: white (255) = hole, black = keep; --mask-invert flips it."


class UserError(click.ClickException):
    """A mistake in what the user gave: one line, exit status 2, no traceback."""

    exit_code = 2


def _user_errors(func: Callable[[], Any]) -> Any:
    """Run ``func``, turning the library's input errors into ``UserError``s."""
    from .config import ConfigError
    from .images import ImageError
    from .runtimes.base import BackendUnavailableError, RuntimeInputError
    from .runtimes.bundle import BundleError

    errors: tuple[type[BaseException], ...] = (ImageError, ConfigError, BundleError, RuntimeInputError,
                                               BackendUnavailableError)
    try:
        from .checkpoint import CheckpointError  # needs torch
        errors += (CheckpointError,)
    except ImportError:
        pass
    try:
        from .export.bundle import ExportError  # needs torch and onnx
        errors += (ExportError,)
    except ImportError:
        pass
    try:
        from .train.data import DataError
        errors += (DataError,)
    except ImportError:
        pass
    try:
        return func()
    except errors as exc:
        raise UserError(str(exc)) from None


def _require_torch(what: str) -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise UserError(f"{what} needs PyTorch, which is not installed here; "
                        "install it with: pip install 'cicm-deploy[train]'")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="cicm-deploy")
def cli() -> None:
    """Train, export and deploy CICM inpainting models.

    CICM (cross-image context memory) augments a UNet inpainter with learned feature sets shared
    across images. This tool trains it, exports it to ONNX (FP32 or FP16, standard ops or one
    TensorRT plugin op), and runs it with onnxruntime or TensorRT on desktop GPUs and Jetson.
    Run `cicm-deploy doctor` to see what this machine can run.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Report what this machine can run.

    Checks Python, PyTorch and CUDA (GPUs, compute capability), onnxruntime and its execution
    providers (and flags onnxruntime and onnxruntime-gpu installed together), TensorRT, and the
    CICMAugment plugin library. Works without PyTorch installed.
    """
    from .environment import probe_all

    report = probe_all()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for section, info in report.items():
        click.echo(f"[{section}]")
        for key, value in info.items():
            if isinstance(value, (list, dict)) and not value:
                value = "none"
            elif isinstance(value, list):
                value = ", ".join(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            click.echo(f"  {key:16s} {value}")
    problem = report["onnxruntime"].get("problem")
    if problem:
        click.secho(f"problem: {problem}", fg="red", err=True)


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", default="tiny", show_default=True,
              help="Model preset: paper, tiny, unet, tiny-unet.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def init(output: Path, preset: str, seed: int, force: bool) -> None:
    """Write a fresh, untrained checkpoint from a preset.

    The weights are random: use it to try the pipeline (inpaint, export, runtimes) end to end
    before a model is trained. `cicm-deploy train` produces real ones.
    """
    _require_torch("init")

    def run() -> None:
        import torch

        from .checkpoint import save_checkpoint
        from .config import preset as get_preset
        from .model import UNetCICM

        if output.exists() and not force:
            raise UserError(f"{output} exists; pass --force to overwrite it or choose another path")
        config = get_preset(preset)
        torch.manual_seed(seed)
        model = UNetCICM(config)
        save_checkpoint(output, model, step=0, metrics={"untrained": True, "preset": preset, "seed": seed})
        params = sum(p.numel() for p in model.parameters())
        click.echo(f"wrote {output}: untrained '{preset}' model, {params:,} parameters, stride {config.stride}")

    _user_errors(run)


@cli.command(epilog=MASK_HELP)
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("mask", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the inpainted image (png, jpg, webp, bmp, tif).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Run a checkpoint with PyTorch (written by `cicm-deploy train` or `init`).")
@click.option("--bundle", type=click.Path(path_type=Path),
              help="Run an export bundle with onnxruntime (no PyTorch needed).")
@click.option("--mask-invert", is_flag=True, help="Treat black mask pixels as the hole.")
@click.option("--device", default="auto", show_default=True, help="PyTorch device: auto, cpu, cuda or cuda:N.")
def inpaint(image: Path, mask: Path, output: Path, checkpoint: Path | None, bundle: Path | None,
            mask_invert: bool, device: str) -> None:
    """Inpaint one image with a checkpoint (PyTorch) or an export bundle (onnxruntime).

    IMAGE is any RGB or grayscale photo; MASK an image of the same size whose white pixels mark
    the hole. Any size works (the image is padded to the network stride and cropped back), and
    pixels outside the hole are written unchanged. Give exactly one of --checkpoint or --bundle.
    """
    if (checkpoint is None) == (bundle is None):
        raise UserError("give exactly one of --checkpoint CKPT (PyTorch) or --bundle DIR (onnxruntime)")
    if checkpoint is not None:
        _require_torch("inpaint --checkpoint")

    def run() -> None:
        from .images import check_same_size, load_image, load_mask, save_image

        rgb = load_image(image)
        hole = load_mask(mask, invert=mask_invert)
        check_same_size(rgb, hole)
        if bundle is not None:
            from .runtimes.onnxruntime import OnnxRuntimeBackend

            with OnnxRuntimeBackend(bundle) as runtime:
                result = runtime.infer(rgb, hole)
                where = f"{bundle} on {runtime.describe()['device']}"
        else:
            from .checkpoint import load_model
            from .predict import inpaint_array, pick_device

            try:
                target = pick_device(device)
            except (ValueError, RuntimeError) as exc:
                raise UserError(str(exc)) from None
            model, _ = load_model(checkpoint, map_location=target)
            result = inpaint_array(model, rgb, hole)
            where = f"{checkpoint} on {target}"
        save_image(output, result)
        h, w = hole.shape
        click.echo(f"wrote {output} ({w}x{h}, {100 * hole.mean():.1f}% hole) with {where}")

    _user_errors(run)


def _parse_hw(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise UserError(f"--static {value!r} is not HxW (e.g. 256x256)") from None
    return height, width


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory to write (default: next to the checkpoint, named after it and the options).")
@click.option("--fp16", is_flag=True, help="Mixed precision: FP16 convolutions, FP32 routing and composite.")
@click.option("--routing", type=click.Choice(["onnx", "plugin"]), default="onnx", show_default=True,
              help="onnx: standard ops; plugin: one CICMAugment node for the TensorRT plugin.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset (17 parses in TensorRT 10.x).")
@click.option("--static", "static", metavar="HxW", help="Fix height and width (default: dynamic).")
@click.option("--batch", type=int, help="Fix the batch size (default: dynamic).")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime parity check after writing.")
@click.option("--force", is_flag=True, help="Replace the output directory if it exists.")
def export(checkpoint: Path, output: Path | None, fp16: bool, routing: str, opset: int, static: str | None,
           batch: int | None, no_check: bool, force: bool) -> None:
    """Export a checkpoint to a bundle: model.onnx, manifest.json, parity.npz.

    The memory is frozen into constants; the graph takes `image` [B,3,H,W] in [0,1] and `mask`
    [B,1,H,W] (1 = hole) and returns `inpainted` (the composite) and `route` (bottleneck routes),
    with batch, height and width dynamic unless fixed. The bundle carries PyTorch FP32 outputs
    on 16 real photos for parity checks on the target; after writing, onnxruntime is checked
    against them here and the command fails if the bundle misses its tolerances.
    """
    _require_torch("export")
    static_hw = _parse_hw(static)
    if output is None:
        output = checkpoint.with_name(f"{checkpoint.stem}_{'fp16' if fp16 else 'fp32'}_{routing}")

    def run() -> Any:
        from .export.bundle import export_bundle

        result = export_bundle(checkpoint, output, fp16=fp16, routing=routing, opset=opset, static_hw=static_hw,
                               batch=batch, check=not no_check, force=force,
                               progress=lambda message: click.echo(f"  {message}...", err=True))
        return result

    result = _user_errors(run)
    manifest = result.manifest
    peak = manifest["largest_fp32_intermediates"][0]
    click.echo(f"wrote {result.path}: {manifest['precision']}, routing {manifest['routing']}, opset "
               f"{manifest['opset']}, stride {manifest['stride']}; largest FP32 intermediate "
               f"{peak['max_abs']:.3g} ({peak['tensor']})")
    if result.parity is not None:
        for line in result.parity.lines():
            click.echo(line)
        if not result.parity.passed:
            raise click.ClickException(f"the bundle in {result.path} fails its parity tolerances (kept for inspection)")


@cli.command("run")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "inputs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="npz with float32 `image` [B,3,H,W] in [0,1] and `mask` [B,1,H,W] (1 = hole).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="npz to write the outputs to (default: print a summary only).")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime execution provider(s), in order (default: TensorRT, CUDA, CPU as available).")
def run_bundle(bundle: Path, inputs: Path, output: Path | None, providers: tuple[str, ...]) -> None:
    """Run a bundle on raw graph inputs from an npz file (onnxruntime, no PyTorch).

    Inputs are the graph's own tensors: height and width must be multiples of the bundle's
    stride. Writes every graph output (`inpainted`, `route`) to OUTPUT.
    """
    def go() -> None:
        import numpy as np

        from .runtimes.onnxruntime import OnnxRuntimeBackend

        try:
            with np.load(inputs, allow_pickle=False) as data:
                feeds = {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise UserError(f"{inputs} is not a readable npz file ({exc})") from None
        with OnnxRuntimeBackend(bundle, providers=providers or None) as runtime:
            outputs = runtime.run(feeds)
            device = runtime.describe()["device"]
        for name, value in outputs.items():
            click.echo(f"{name}: {value.dtype} {list(value.shape)}")
        click.echo(f"inference {1000 * runtime.last_inference_time:.1f} ms on {device}")
        if output is not None:
            np.savez_compressed(output, **outputs)
            click.echo(f"wrote {output}")

    _user_errors(go)


@cli.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["onnxruntime"]), default="onnxruntime", show_default=True,
              help="Runtime to check against the bundle's PyTorch FP32 goldens.")
@click.option("--provider", "providers", multiple=True,
              help="onnxruntime execution provider(s), in order (default: TensorRT, CUDA, CPU as available).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON.")
@click.option("--save-polygraphy", "polygraphy_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the goldens as Polygraphy CLI files and print the `polygraphy run` command.")
def parity(bundle: Path, backend: str, providers: tuple[str, ...], json_path: Path | None,
           polygraphy_dir: Path | None) -> None:
    """Check a runtime against the bundle's PyTorch FP32 goldens (Polygraphy comparator).

    Reports max/mean absolute error, image PSNR and routing agreement per output against the
    tolerances in the manifest (FP32: max abs <= 1e-4, routes identical; FP16: PSNR >= 45 dB,
    routes >= 99.9 %). Exits with status 1 when a tolerance is missed. No PyTorch needed.
    """
    def go() -> Any:
        from .runtimes.onnxruntime import OnnxRuntimeBackend
        from .runtimes.parity import check_parity, polygraphy_command, save_polygraphy_data

        with OnnxRuntimeBackend(bundle, providers=providers or None) as runtime:
            if polygraphy_dir is not None:
                paths = save_polygraphy_data(runtime.bundle, polygraphy_dir)
                click.echo("polygraphy files written; the same check with the Polygraphy CLI"
                           + (" (needs --routing onnx: the CLI cannot load the reference op)" if runtime.bundle.custom_ops
                              else "") + ":")
                click.echo("  " + " ".join(polygraphy_command(runtime.bundle, *paths)))
            return check_parity(runtime)

    report = _user_errors(go)
    for line in report.lines():
        click.echo(line)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.passed:
        raise click.ClickException(f"{bundle} fails parity on {backend}")


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


@cli.command()
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
    _require_torch("train")

    def run() -> Any:
        import dataclasses

        from .config import ModelConfig
        from .config import preset as get_preset
        from .train.trainer import TrainConfig

        model_cfg = get_preset(preset_name).to_dict()
        train_cfg = TrainConfig().to_dict()
        if resume is not None:
            from .checkpoint import read_checkpoint

            saved = read_checkpoint(resume)
            model_cfg = saved["model_config"]
            train_cfg = (saved.get("trainer") or {}).get("train_config", train_cfg)
        resolved = {"model": model_cfg, "train": train_cfg}
        if config_file is not None:
            try:
                loaded = json.loads(config_file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"--config {config_file}: cannot read it as JSON ({exc})") from None
            for section in ("model", "train"):
                for key, value in (loaded.get(section) or {}).items():
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
        from .train.run import run_training

        return run_training(model_config, train_config, resume=str(resume) if resume else None)

    metrics = _user_errors(run)
    if metrics:
        click.echo(f"done: {json.dumps(metrics)}")


def _predictor(target: Path) -> tuple[str, Any]:
    """(label, predict(image_u8, mask_bool) -> u8) for a checkpoint (PyTorch) or a bundle (onnxruntime)."""
    if target.is_dir():
        from .runtimes.onnxruntime import OnnxRuntimeBackend

        runtime = OnnxRuntimeBackend(target).load()
        return target.name, runtime.infer
    from .checkpoint import load_model
    from .predict import inpaint_array, pick_device

    model, _ = load_model(target, map_location=pick_device("auto"))
    return target.stem, lambda image, mask: inpaint_array(model, image, mask)


@cli.command("eval")
@click.argument("targets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="Photo folder; its validation split (by path hash) is evaluated.")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default="val", show_default=True)
@click.option("--val-fraction", default=0.05, show_default=True, help="As used for training.")
@click.option("--size", default=256, show_default=True, help="Evaluation crop side.")
@click.option("--per-bin", default=8, show_default=True, help="Masks per hole-ratio bin (0-20/20-40/40-60 %).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Also evaluate OpenCV's Telea and Navier-Stokes inpainting.")
@click.option("--name", "names", multiple=True, help="Label for each target, in order (default: file names).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("reports/quality"), show_default=True,
              help="Report path without suffix: writes .json, .md and _examples.png.")
@click.option("--examples", default=4, show_default=True, help="Rows in the example grid.")
def evaluate_cmd(targets: tuple[Path, ...], data_dir: Path, split: str, val_fraction: float, size: int, per_bin: int,
                 baselines: bool, names: tuple[str, ...], out: Path, examples: int) -> None:
    """Measure PSNR, SSIM and L1 per hole-ratio bin for checkpoints or bundles.

    Each TARGET is a checkpoint (run with PyTorch) or a bundle directory (onnxruntime). The
    photos are center crops of the folder's validation split, the masks the fixed seeded
    evaluation set; OpenCV's Telea and Navier-Stokes run on the same pairs. Writes a JSON and a
    markdown report and a PNG grid of examples (input, mask, each method, ground truth).
    """
    def go() -> None:
        from .train.evaluate import BASELINES, build_eval_set, evaluate, example_grid, write_report

        if names and len(names) != len(targets):
            raise UserError(f"{len(names)} --name values for {len(targets)} targets; give one per target or none")
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
        notes = [f"{len(data.images)} evaluations ({per_bin} per bin) on center crops {size}x{size} of "
                 f"{len(set(data.sources))} photos of the {split} split of `{data_dir}`."]
        json_path, md_path = write_report(result, out, "Inpainting quality", notes)
        step = max(1, len(data.images) // max(examples, 1))
        grid = example_grid(methods, data, list(range(0, len(data.images), step))[:examples],
                            out.with_name(out.name + "_examples.png"))
        for line in md_path.read_text().splitlines()[2:-2]:
            click.echo(line)
        click.echo(f"wrote {json_path}, {md_path}, {grid}")

    _user_errors(go)


DEFAULT_MODEL = "default.pt"


def default_model_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("cicm_deploy") / "assets" / "models" / DEFAULT_MODEL))


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("out/demo.png"),
              show_default=True, help="Where to write the before/after picture.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Use this checkpoint instead of the default model.")
@click.option("--seed", default=7, show_default=True, help="Seed of the generated mask.")
def demo(output: Path, checkpoint: Path | None, seed: int) -> None:
    """Inpaint the shipped demo photo under a generated mask with the default model.

    Writes one PNG: the photo with its hole, the inpainted result, and the original. Works
    offline: the model and the photo ship with the package.
    """
    _require_torch("demo")

    def go() -> None:
        from importlib import resources

        import numpy as np

        from .checkpoint import load_model
        from .images import load_image, save_image
        from .predict import inpaint_array, pick_device
        from .train.masks import BINS, free_form_mask

        path = checkpoint or default_model_path()
        if checkpoint is None and not path.is_file():
            raise UserError(f"the default model is missing from this install ({path}); reinstall cicm-deploy, or "
                            "pass --checkpoint CKPT")
        photo = load_image(Path(str(resources.files("cicm_deploy") / "assets" / "demo" / "chambord.jpg")))
        mask = free_form_mask(photo.shape[0], photo.shape[1], np.random.default_rng(seed), BINS[1])
        model, data = load_model(path, map_location=pick_device("auto"))
        result = inpaint_array(model, photo, mask)
        holed = photo.copy()
        holed[mask] = 255
        save_image(output, np.concatenate([holed, result, photo], axis=1))
        mse = float(np.mean((photo.astype(np.float64) - result.astype(np.float64)) ** 2))
        click.echo(f"wrote {output}: hole ({100 * mask.mean():.0f}% of the photo) | inpainted | original; "
                   f"PSNR {10 * np.log10(255.0**2 / max(mse, 1e-12)):.2f} dB with {path.name} "
                   f"(step {data.get('step')})")

    _user_errors(go)


def _register_groups() -> None:
    from .train.data_cli import data

    cli.add_command(data)


_register_groups()


def main() -> None:
    cli(prog_name="cicm-deploy")


if __name__ == "__main__":
    main()
