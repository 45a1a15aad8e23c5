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

    errors: tuple[type[BaseException], ...] = (ImageError, ConfigError)
    try:
        from .checkpoint import CheckpointError  # needs torch
        errors += (CheckpointError,)
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
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path),
              help="A checkpoint written by `cicm-deploy train` or `cicm-deploy init`.")
@click.option("--mask-invert", is_flag=True, help="Treat black mask pixels as the hole.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
def inpaint(image: Path, mask: Path, output: Path, checkpoint: Path, mask_invert: bool, device: str) -> None:
    """Inpaint one image with a checkpoint (PyTorch backend).

    IMAGE is any RGB or grayscale photo; MASK an image of the same size whose white pixels mark
    the hole. Any size works (the image is padded to the network stride and cropped back), and
    pixels outside the hole are written unchanged.
    """
    _require_torch("inpaint")

    def run() -> None:
        from .checkpoint import load_model
        from .images import check_same_size, load_image, load_mask, save_image
        from .predict import inpaint_array, pick_device

        rgb = load_image(image)
        hole = load_mask(mask, invert=mask_invert)
        check_same_size(rgb, hole)
        try:
            target = pick_device(device)
        except (ValueError, RuntimeError) as exc:
            raise UserError(str(exc)) from None
        model, _ = load_model(checkpoint, map_location=target)
        result = inpaint_array(model, rgb, hole)
        save_image(output, result)
        h, w = hole.shape
        click.echo(f"wrote {output} ({w}x{h}, {100 * hole.mean():.1f}% hole) with {checkpoint} on {target}")

    _user_errors(run)


def main() -> None:
    cli(prog_name="cicm-deploy")


if __name__ == "__main__":
    main()
