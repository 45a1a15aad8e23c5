"""``cicm-deploy run`` and ``parity``: bundles on onnxruntime, no torch (registered by cicm_deploy.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cicm_deploy.cli_support import UserError, user_errors


@click.command("run")
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

        from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend

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

    user_errors(go)


@click.command()
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
        from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend
        from cicm_deploy.runtimes.parity import check_parity, polygraphy_command, save_polygraphy_data

        with OnnxRuntimeBackend(bundle, providers=providers or None) as runtime:
            if polygraphy_dir is not None:
                paths = save_polygraphy_data(runtime.bundle, polygraphy_dir)
                click.echo("polygraphy files written; the same check with the Polygraphy CLI"
                           + (" (needs --routing onnx: the CLI cannot load the reference op)" if runtime.bundle.custom_ops
                              else "") + ":")
                click.echo("  " + " ".join(polygraphy_command(runtime.bundle, *paths)))
            return check_parity(runtime)

    report = user_errors(go)
    for line in report.lines():
        click.echo(line)
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.passed:
        raise click.ClickException(f"{bundle} fails parity on {backend}")
