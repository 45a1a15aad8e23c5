"""The ``cicm-deploy`` command line.

Heavy libraries are imported inside the commands that need them: ``--help``, ``--version``,
``doctor`` and the runtime commands work on a machine without torch. User errors are printed as
one line (what was given, what was expected, how to fix it) and exit with status 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from . import __version__
from .cli_support import MASK_HELP, UserError, require_torch, user_errors

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
    from .environment import next_steps, probe_all

    report = probe_all()
    steps = next_steps(report)
    if as_json:
        click.echo(json.dumps({**report, "next_steps": steps}, indent=2))
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
    if steps:
        click.echo("[next steps]")
        for step in steps:
            click.echo(f"  - {step}")


@cli.command()
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", default="tiny", show_default=True,
              help="Model preset: default, default-unet, paper, unet, tiny, tiny-unet (*unet: the plain UNet).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def init(output: Path, preset: str, seed: int, force: bool) -> None:
    """Write a fresh, untrained checkpoint from a preset.

    The weights are random: use it to try the pipeline (inpaint, export, runtimes) end to end
    before a model is trained. `cicm-deploy train` produces real ones.
    """
    require_torch("init")

    def run() -> None:
        import torch

        from .checkpoint import save_checkpoint
        from .config import preset as get_preset
        from .files import CHECKPOINT_KIND, file_kind
        from .model import UNetCICM

        # `init photo.png` is a slip (for inpaint, or an argument order), not a wish for a checkpoint named so
        other = file_kind(output)
        if other not in (None, CHECKPOINT_KIND):
            raise UserError(f"{output} is named like {other}, not a checkpoint; "
                            f"name it .pt (e.g. {output.with_suffix('.pt').name})")
        if output.exists() and not force:
            raise UserError(f"{output} exists; pass --force to overwrite it or choose another path")
        config = get_preset(preset)
        torch.manual_seed(seed)
        model = UNetCICM(config)
        save_checkpoint(output, model, step=0, metrics={"untrained": True, "preset": preset, "seed": seed})
        params = sum(p.numel() for p in model.parameters())
        click.echo(f"wrote {output}: untrained '{preset}' model, {params:,} parameters, stride {config.stride}")

    user_errors(run)


@cli.command(epilog=MASK_HELP)
@click.argument("image", type=click.Path(path_type=Path))
@click.argument("mask", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the inpainted image (png, jpg, webp, bmp, tif).")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Run a checkpoint with PyTorch (written by `cicm-deploy train` or `init`).")
@click.option("--bundle", type=click.Path(path_type=Path),
              help="Run an export bundle with onnxruntime (no PyTorch needed).")
@click.option("--engine", type=click.Path(path_type=Path),
              help="Run a TensorRT engine built by `cicm-deploy build` (no PyTorch needed).")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="With --engine: the CICMAugment plugin library it was built with.")
@click.option("--mask-invert", is_flag=True, help="Treat black mask pixels as the hole.")
@click.option("--device", default="auto", show_default=True, help="PyTorch device: auto, cpu, cuda or cuda:N.")
def inpaint(image: Path, mask: Path, output: Path, checkpoint: Path | None, bundle: Path | None,
            engine: Path | None, plugin: Path | None, mask_invert: bool, device: str) -> None:
    """Inpaint one image with a checkpoint (PyTorch), a bundle (onnxruntime) or an engine (TensorRT).

    IMAGE is any RGB or grayscale photo; MASK an image of the same size whose white pixels mark
    the hole. Any size works (the image is padded to the network stride and cropped back), and
    pixels outside the hole are written unchanged. Give exactly one of --checkpoint, --bundle or
    --engine.
    """
    if sum(x is not None for x in (checkpoint, bundle, engine)) != 1:
        raise UserError("give exactly one of --checkpoint CKPT (PyTorch), --bundle DIR (onnxruntime) or "
                        "--engine FILE (TensorRT)")
    if engine is not None and engine.is_dir():
        raise UserError(f"--engine {engine} is a directory (a bundle?); run bundles with --bundle {engine}")
    if bundle is not None and bundle.is_file():
        raise UserError(f"--bundle {bundle} is a file; a bundle is the directory `cicm-deploy export` writes "
                        "(TensorRT engines go with --engine)")
    if plugin is not None and engine is None:
        raise UserError("--plugin goes with --engine: a TensorRT engine loads the plugin library; bundles and "
                        "checkpoints do not use it")
    if device != "auto" and checkpoint is None:
        raise UserError(f"--device {device} goes with --checkpoint (PyTorch); a bundle runs on onnxruntime's best "
                        "provider and an engine on the GPU it was built for")
    if checkpoint is not None:
        require_torch("inpaint --checkpoint")
    for name, given in (("photo", image), ("mask", mask)):
        if output.exists() and given.exists() and os.path.samefile(output, given):
            raise UserError(f"-o {output} is the input {name}: writing it would replace the original; choose another "
                            "output path")

    def run() -> None:
        from .images import check_same_size, image_format, load_image, load_mask, save_image

        image_format(output)
        rgb = load_image(image)
        hole = load_mask(mask, invert=mask_invert)
        check_same_size(rgb, hole)
        if bundle is not None or engine is not None:
            from .runtimes.factory import open_runtime

            with open_runtime(engine or bundle, plugin=plugin) as runtime:
                result = runtime.infer(rgb, hole)
                where = f"{engine or bundle} on {runtime.describe()['device']}"
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
        click.echo(f"wrote {output} ({w}x{h} pixels, width x height; {100 * hole.mean():.1f}% hole) with {where}")

    user_errors(run)






DEFAULT_MODEL = "default.pt"


def default_model_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("cicm_deploy") / "assets" / "models" / DEFAULT_MODEL))


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("out/demo.png"),
              show_default=True, help="Where to write the before/after picture.")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Use this checkpoint instead of the default model.")
@click.option("--seed", default=7, show_default=True, type=click.IntRange(min=0), help="Seed of the generated mask.")
def demo(output: Path, checkpoint: Path | None, seed: int) -> None:
    """Inpaint the shipped demo photo under a generated mask with the default model.

    Writes one PNG: the photo with its hole, the inpainted result, and the original. Works
    offline: the model and the photo ship with the package.
    """
    require_torch("demo")

    def go() -> None:
        from importlib import resources

        import numpy as np

        from .checkpoint import load_model
        from .images import image_format, load_image, save_image
        from .predict import inpaint_array, pick_device
        from .runtimes.parity import psnr
        from .train.masks import BINS, free_form_mask

        image_format(output)
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
        click.echo(f"wrote {output}: hole ({100 * mask.mean():.0f}% of the photo) | inpainted | original; "
                   f"PSNR {psnr(photo, result, data_range=255.0):.2f} dB with {path.name} "
                   f"(step {data.get('step')})")

    user_errors(go)


@cli.command(epilog=MASK_HELP)
@click.argument("source", type=click.Path(path_type=Path))
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--mask", "mask_path", type=click.Path(path_type=Path),
              help="A fixed mask for every frame (a wiper, dirt, a burned-in logo).")
@click.option("--boxes", "boxes_path", type=click.Path(path_type=Path),
              help='Per-frame boxes, JSON lines {"frame": N, "boxes": [[x0, y0, x1, y1], ...]} (privacy removal).')
@click.option("--model", "model_path", type=click.Path(path_type=Path),
              help="Checkpoint (PyTorch), bundle directory (onnxruntime) or engine (TensorRT); default: the "
                   "shipped default model.")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path), help="Engine only: the plugin library.")
@click.option("--batch", "batch_size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Frames per inference batch.")
@click.option("--mask-invert", is_flag=True, help="Treat black mask pixels as the hole.")
def video(source: Path, target: Path, mask_path: Path | None, boxes_path: Path | None, model_path: Path | None,
          plugin: Path | None, batch_size: int, mask_invert: bool) -> None:
    """Inpaint a video: a fixed occlusion mask or per-frame privacy boxes.

    Reads SOURCE with OpenCV and writes TARGET (same frame rate, container by suffix, no audio),
    with a progress bar in frames/s. Reading and padding the next frames overlaps inference.
    Ctrl-C stops cleanly and leaves the frames written so far as a playable file.
    """
    if (mask_path is None) == (boxes_path is None):
        raise UserError("give exactly one of --mask MASK (fixed) or --boxes BOXES.jsonl (per frame)")

    def go() -> int:
        from tqdm import tqdm

        from .images import load_mask
        from .inpainter import Inpainter
        from .video import VideoError, boxes_warnings, check_mask, check_paths, inpaint_video, load_boxes, probe

        try:
            info = probe(source)
            check_paths(source, target)  # before the model loads
            mask = load_mask(mask_path, invert=mask_invert) if mask_path is not None else None
            check_mask(mask, info)  # before the model and the progress bar
            boxes = load_boxes(boxes_path, info.width, info.height) if boxes_path is not None else None
            warned = boxes_warnings(boxes, info.width, info.height, info.frames) if boxes is not None else []
            for note in warned:
                click.echo(f"warning: {boxes_path}: {note}", err=True)
            path = model_path or default_model_path()
            with Inpainter(path, plugin=plugin) as inpainter, \
                    tqdm(total=info.frames or None, unit="frame", desc="inpainting") as bar:
                try:
                    written = inpaint_video(inpainter, source, target, mask=mask, boxes=boxes,
                                            batch_size=batch_size, on_frame=lambda n: bar.update(1))
                except KeyboardInterrupt:
                    bar.close()
                    click.echo(f"stopped after {bar.n} frames; {target} holds them and plays" if bar.n else
                               f"stopped before the first frame; {target} was not written", err=True)
                    raise SystemExit(130) from None
            if boxes is not None and written != info.frames:  # the container's frame count was unknown or wrong
                for note in boxes_warnings(boxes, info.width, info.height, written):
                    if note not in warned:
                        click.echo(f"warning: {boxes_path}: {note}", err=True)
            return written
        except (VideoError, ValueError) as exc:
            raise UserError(str(exc)) from None

    frames = user_errors(go)
    click.echo(f"wrote {target}: {frames} frames")


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} is not a comma-separated list of integers (e.g. 1,4,16)") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} {text!r} must list positive integers")
    return values


@cli.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--backend", "backends", default="torch,torch-fp16,torch-compile,cuda-graphs,onnxruntime,tensorrt",
              show_default=True, help="Comma-separated backends; those that cannot run here are listed as skipped.")
@click.option("--batch", "batches", default="1,4", show_default=True, help="Batch sizes, comma-separated.")
@click.option("--size", "sizes", default="256", show_default=True,
              help="Square frame sides, comma-separated (padded up to the model's stride; the report names the "
                   "padded side).")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0),
              help="Untimed calls per case (torch-compile and cuda-graphs get at least 3: their first calls compile).")
@click.option("--iterations", default=20, show_default=True, type=click.IntRange(min=1), help="Timed calls per case.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and onnxruntime (default: all cores).")
@click.option("-o", "--out", type=click.Path(), default="out/bench", show_default=True,
              help="Report path without suffix (.json, .md, .png), or a folder (existing, or ending in /).")
@click.option("--plot", is_flag=True, help="Also plot latency against batch and size (needs matplotlib).")
def bench(target: Path, backends: str, batches: str, sizes: str, warmup: int, iterations: int,
          threads: int | None, out: str, plot: bool) -> None:
    """Latency and throughput of each backend on a checkpoint or a bundle, side by side.

    Like trtexec's summary: latency min/median/p90/p99 of the inference alone, images/s, host
    pre/post-processing time, peak host RSS and (on a GPU) peak device memory; plus each
    backend's speed-up over PyTorch eager in the same run. `torch-compile` compiles on first use
    (minutes on a CPU). Writes JSON and markdown (and a PNG with --plot).
    """
    def go() -> None:
        from .bench import report_prefix, run_bench, write_bench

        chosen = [b.strip() for b in backends.split(",") if b.strip()]
        if not chosen:
            raise UserError(f"--backend {backends!r} names no backend; e.g. --backend torch,onnxruntime")
        try:
            prefix = report_prefix(out)  # an unwritable -o fails here, not after the measurement
            report = run_bench(target, chosen, _int_list(batches, "--batch"), _int_list(sizes, "--size"),
                               warmup=warmup, iterations=iterations, threads=threads,
                               progress=lambda message: click.echo(f"  {message}...", err=True),
                               on_case=lambda partial: write_bench(partial, prefix))  # kept if interrupted
            paths = write_bench(report, prefix, plot=plot)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        for line in report.markdown():
            click.echo(line)
        click.echo("wrote " + ", ".join(str(p) for p in paths))
        if report.failed:
            # not the user's mistake: exit 1, after the report of what did run
            raise click.ClickException("; ".join(f"{b} failed at {why}" for b, why in report.failed.items())
                                       + " (the other backends' figures are in the report)")

    user_errors(go)


def _register_commands() -> None:
    from .export.cli import export
    from .runtimes.cli import build, parity, run_bundle, serve, triton_repo
    from .train.cli import evaluate_cmd, train
    from .train.data_cli import data

    for command in (export, build, run_bundle, parity, serve, triton_repo, train, evaluate_cmd, data):
        cli.add_command(command)


_register_commands()


def main() -> None:
    import warnings

    from . import CICMWarning

    python_format = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        """Warnings about the user's input as one line, like errors; others in Python's own format."""
        if issubclass(category, CICMWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            python_format(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    cli(prog_name="cicm-deploy")


if __name__ == "__main__":
    main()
