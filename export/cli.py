"""``cicm-deploy export``: checkpoint -> bundle (registered by cicm_deploy.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cicm_deploy.cli_support import UserError, require_torch, sigterm_as_exit, user_errors


DEFAULT_OPSET = 17


def _parse_hw(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise UserError(f"--static {value!r} is not HxW (e.g. 256x256)") from None
    return height, width


def default_name(stem: str, *, fp16: bool, routing: str, opset: int, static_hw: tuple[int, int] | None,
                 batch: int | None) -> str:
    """``default_fp16_onnx``, plus whatever departs from the defaults: ``_256x256``, ``_b4``, ``_opset18``;
    two exports that differ in any option get different folders."""
    parts = [stem, "fp16" if fp16 else "fp32", routing]
    if static_hw is not None:
        parts.append(f"{static_hw[0]}x{static_hw[1]}")
    if batch is not None:
        parts.append(f"b{batch}")
    if opset != DEFAULT_OPSET:
        parts.append(f"opset{opset}")
    return "_".join(parts)


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Bundle directory to write (default: next to the checkpoint, named after it and the options).")
@click.option("--fp16", is_flag=True, help="Mixed precision: FP16 convolutions, FP32 routing and composite.")
@click.option("--routing", type=click.Choice(["onnx", "plugin"]), default="onnx", show_default=True,
              help="onnx: standard ops; plugin: one CICMAugment node for the TensorRT plugin.")
@click.option("--opset", default=DEFAULT_OPSET, show_default=True, help="ONNX opset (17 parses in TensorRT 10.x).")
@click.option("--static", "static", metavar="HxW", help="Fix height and width (default: dynamic).")
@click.option("--batch", type=int, help="Fix the batch size (default: dynamic).")
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime parity check after writing.")
@click.option("--force", is_flag=True, help="Replace an earlier bundle at OUTPUT (never a folder of other files).")
def export(checkpoint: Path, output: Path | None, fp16: bool, routing: str, opset: int, static: str | None,
           batch: int | None, no_check: bool, force: bool) -> None:
    """Export a checkpoint to a bundle: model.onnx, manifest.json, parity.npz.

    The memory is frozen into constants; the graph takes `image` [B,3,H,W] in [0,1] and `mask`
    [B,1,H,W] (1 = hole) and returns `inpainted` (the composite) and `route` (bottleneck routes),
    with batch, height and width dynamic unless fixed. The bundle carries PyTorch FP32 outputs
    on 16 real photos for parity checks on the target; after writing, onnxruntime is checked
    against them here and the command fails if the bundle misses its tolerances.
    """
    require_torch("export")
    static_hw = _parse_hw(static)
    if output is None:
        output = checkpoint.with_name(default_name(checkpoint.stem, fp16=fp16, routing=routing, opset=opset,
                                                   static_hw=static_hw, batch=batch))

    def run() -> Any:
        from cicm_deploy.export.bundle import export_bundle

        with sigterm_as_exit():  # the staging folder is removed, not left behind
            return export_bundle(checkpoint, output, fp16=fp16, routing=routing, opset=opset, static_hw=static_hw,
                                 batch=batch, check=not no_check, force=force,
                                 progress=lambda message: click.echo(f"  {message}...", err=True))

    result = user_errors(run)
    manifest = result.manifest
    peak = manifest["largest_fp32_intermediates"][0]
    half = (manifest.get("largest_fp16_tensors") or [None])[0]
    click.echo(f"wrote {result.path}: {manifest['precision']}, routing {manifest['routing']}, opset "
               f"{manifest['opset']}, stride {manifest['stride']}; largest FP32 intermediate "
               f"{peak['max_abs']:.3g} ({peak['tensor']})"
               + (f"; largest tensor held in FP16 {half['max_abs']:.3g} ({half['tensor']}, headroom "
                  f"{half['fp16_headroom']:.0f}x)" if half else ""))
    if result.parity_skipped is not None:
        click.echo(f"warning: the bundle's parity was NOT checked: {result.parity_skipped}. Check it where that is "
                   f"installed: cicm-deploy parity {result.path}", err=True)
    if result.parity is not None:
        for line in result.parity.lines():
            click.echo(line)
        if not result.parity.passed:
            raise click.ClickException(f"the bundle in {result.path} fails its parity tolerances (kept for inspection)")
