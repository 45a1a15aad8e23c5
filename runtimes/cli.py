"""``cicm-deploy run`` and ``parity``: bundles on onnxruntime, no torch (registered by cicm_deploy.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cicm_deploy.cli_support import UserError, comma_list, user_errors
from cicm_deploy.files import atomic_write, file_in_the_way


@click.command("run")
@click.argument("bundle", metavar="BUNDLE_OR_ENGINE", type=click.Path(path_type=Path))
@click.option("--input", "inputs", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="npz with float32 `image` [B,3,H,W] in [0,1] and `mask` [B,1,H,W] (1 = hole).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="npz to write the outputs to (default: print a summary only).")
@click.option("--provider", "providers", multiple=True, callback=comma_list,
              help="onnxruntime execution provider(s), in order: repeat the option or separate them with commas "
                   "(default: TensorRT, CUDA, CPU as available).")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="Engine only: the CICMAugment plugin library it was built with.")
def run_bundle(bundle: Path, inputs: Path, output: Path | None, providers: tuple[str, ...], plugin: Path | None) -> None:
    """Run a bundle (onnxruntime) or an engine (TensorRT) on raw graph inputs from an npz file.

    Inputs are the graph's own tensors: height and width must be multiples of the bundle's
    stride. Writes every graph output (`inpainted`, `route`) to OUTPUT.
    """
    def go() -> None:
        import zipfile

        import numpy as np

        from cicm_deploy.runtimes.factory import open_runtime

        if output is not None:
            _check_output_path(output, inputs, bundle)
        try:
            data = np.load(inputs, allow_pickle=False)
            if not hasattr(data, "files"):  # a .npy file: one bare array
                raise ValueError("it holds one array, not named inputs")
            with data:
                feeds = {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if not inputs.exists():
                raise UserError(f"{inputs} does not exist") from None
            with open(inputs, "rb") as head:
                magic = head.read(6)
            # numpy takes bytes it does not recognise for a pickle, in words that change between releases
            if not magic.startswith((b"PK", b"\x93NUMPY")):
                why = "its bytes are neither an npz archive nor a numpy array"
            else:
                why = str(exc).split(" when ")[0]
            raise UserError(f"{inputs} is not an npz archive of graph inputs (numpy.savez with `image` and `mask`): "
                            f"{why}") from None
        with open_runtime(bundle, plugin=plugin, providers=providers) as runtime:
            outputs = runtime.run(feeds)
            device = runtime.describe()["device"]
        for name, value in outputs.items():
            click.echo(f"{name}: {value.dtype} {list(value.shape)}")
        click.echo(f"inference {1000 * runtime.last_inference_time:.1f} ms on {device}")
        if output is not None:
            atomic_write(output, lambda handle: np.savez_compressed(handle, **outputs))  # whole or untouched
            click.echo(f"wrote {output}")

    user_errors(go)


def _check_output_path(output: Path, inputs: Path, target: Path) -> None:
    """-o is an npz (so never an engine or its .json sidecar), not the input, not inside the bundle."""
    if output.suffix != ".npz":
        raise UserError(f"-o {output}: outputs are written as an npz archive; give a path ending in .npz")
    where = output.resolve()
    if where == inputs.resolve():
        raise UserError(f"-o {output} is the --input file; write the outputs to another file")
    blocker = file_in_the_way(where)
    if blocker is not None:  # before the run, not after it
        raise UserError(f"{output}: {blocker} is a file, where a folder is needed; choose another path")
    if target.is_dir() and where.is_relative_to(target.resolve()):
        raise UserError(f"-o {output} is inside the bundle {target}, which must stay as exported (its files are "
                        "hashed); write the outputs elsewhere")


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="Runtime to check against the bundle's PyTorch FP32 goldens.")
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path),
              help="With --backend tensorrt: the engine built from BUNDLE by `cicm-deploy build`.")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="With --backend tensorrt: the CICMAugment plugin library the engine was built with.")
@click.option("--provider", "providers", multiple=True, callback=comma_list,
              help="onnxruntime execution provider(s), in order: repeat the option or separate them with commas "
                   "(default: TensorRT, CUDA, CPU as available).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON.")
@click.option("--save-polygraphy", "polygraphy_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write the goldens as Polygraphy CLI files and print the `polygraphy run` command.")
def parity(bundle: Path, backend: str, engine: Path | None, plugin: Path | None, providers: tuple[str, ...],
           json_path: Path | None, polygraphy_dir: Path | None) -> None:
    """Check a runtime against the bundle's PyTorch FP32 goldens (Polygraphy comparator).

    Reports max/mean absolute error, image PSNR and routing agreement per output against the
    tolerances in the manifest (FP32: max abs <= 1e-4, routes identical; FP16: PSNR >= 45 dB,
    routes >= 99.9 %). Exits with status 1 when a tolerance is missed. No PyTorch needed.
    """
    if (backend == "tensorrt") != (engine is not None):
        raise UserError("--backend tensorrt needs --engine ENGINE (and --engine needs --backend tensorrt)")

    if json_path is not None:  # before the check, not after it
        user_errors(lambda: json_path.parent.mkdir(parents=True, exist_ok=True))

    def go() -> Any:
        from cicm_deploy.runtimes.factory import open_runtime
        from cicm_deploy.runtimes.parity import check_parity, polygraphy_command, save_polygraphy_data

        with open_runtime(engine or bundle, bundle=bundle, plugin=plugin, providers=providers) as runtime:
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
        user_errors(lambda: json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n"))
    if not report.passed:
        raise click.ClickException(f"{bundle} fails parity on {backend}")


def _shape(value: str | None, what: str) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        b, h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise UserError(f"{what} {value!r} is not BxHxW (e.g. 1x256x256)") from None
    if min(b, h, w) < 1:
        raise UserError(f"{what} {value!r}: batch, height and width must each be at least 1")
    return b, h, w


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Engine file to write; a JSON sidecar is written beside it.")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="CICMAugment plugin library (runtimes/plugin, built with CMake); default: the Python plugin.")
@click.option("--min-shape", help="Smallest input, BxHxW (default 1x64x64).")
@click.option("--opt-shape", help="Input to optimize for, BxHxW (default 1x256x256).")
@click.option("--max-shape", help="Largest input, BxHxW (default 4x1024x1024).")
@click.option("--workspace", "workspace_mb", type=int, help="Workspace memory limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="Timing cache to read and update (faster rebuilds).")
@click.option("--rtx", is_flag=True, help="Use TensorRT for RTX (module tensorrt_rtx) instead of TensorRT.")
@click.option("--sm", help="With --rtx: the compute capability to build for ahead of time (e.g. 86, 89, 120).")
def build(bundle: Path, output: Path, plugin: Path | None, min_shape: str | None, opt_shape: str | None,
          max_shape: str | None, workspace_mb: int | None, timing_cache: Path | None, rtx: bool, sm: str | None) -> None:
    """Build a TensorRT engine from a bundle, on the target (Jetson or desktop GPU).

    The network is strongly typed: an FP16 bundle gives FP16 convolutions and FP32 routing with
    no precision flags. A plugin-routed bundle needs the CICMAugment plugin: the C++ library
    (--plugin) or, by default, the Python plugin (which calls the compiled kernel at run time).
    Dynamic batch/height/width get one optimization profile. A JSON sidecar beside the engine
    records TensorRT, GPU, plugin and bundle so a mismatched engine is refused clearly.
    """
    def go() -> dict:
        from .tensorrt_build import EngineBuildError, build_engine

        try:
            return build_engine(bundle, output, rtx=rtx, sm=sm, plugin=plugin, workspace_mb=workspace_mb,
                                timing_cache=timing_cache, min_shape=_shape(min_shape, "--min-shape"),
                                opt_shape=_shape(opt_shape, "--opt-shape"), max_shape=_shape(max_shape, "--max-shape"),
                                progress=lambda message: click.echo(f"  {message}", err=True))
        except EngineBuildError as exc:
            raise UserError(str(exc)) from None

    sidecar = user_errors(go)
    if sidecar["tensorrt_module"] != "tensorrt_rtx":
        target = sidecar["gpu"]["name"] if sidecar["gpu"] else "this GPU"
    elif sidecar["target_compute_capability"]:
        target = f"{sidecar['target_compute_capability']} (ahead of time)"
    else:
        target = "compute capability 8.0 and later (TensorRT for RTX's portable default)"
    click.echo(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB) with {sidecar['tensorrt_module']} "
               f"{sidecar['tensorrt_version']} for {target}; {sidecar['precision']}, routing {sidecar['routing']}, "
               f"profile min {sidecar['profile']['min']} opt {sidecar['profile']['opt']} max {sidecar['profile']['max']}")


@click.command()
@click.argument("model", metavar="BUNDLE|ENGINE|CHECKPOINT", type=click.Path(path_type=Path))
@click.option("--port", default=8000, show_default=True,
              help="HTTP port; gRPC listens on PORT+1 and metrics on PORT+2 unless given below.")
@click.option("--grpc-port", type=int, help="gRPC port (default: PORT+1).")
@click.option("--metrics-port", type=int, help="Prometheus metrics port (default: PORT+2).")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Largest batch Triton's dynamic batcher forms from same-sized requests.")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(min=1),
              help="Model instances, each with its own session or engine (parallel requests; not for checkpoints).")
@click.option("--queue-delay-us", default=2000, show_default=True, type=click.IntRange(min=0),
              help="How long a request may wait for others to batch with, in microseconds.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt", "torch"]), default="auto",
              show_default=True, help="Inference backend inside the server (auto: from what MODEL is).")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="Engine only: the CICMAugment plugin library it was built with.")
@click.option("--exit-timeout", default=10, show_default=True, type=click.IntRange(0, 25),
              help="On Ctrl-C or SIGTERM, seconds Triton waits for requests in flight before it exits (an idle "
                   "client connection holds it for the whole time; at most 25: PyTriton kills the server 30 s "
                   "after asking it to stop).")
@click.option("--verbose", is_flag=True,
              help="Show Triton's and PyTriton's own logs on the console (otherwise Triton's goes to a file, named "
                   "when the server starts and removed after a clean stop).")
def serve(model: Path, port: int, grpc_port: int | None, metrics_port: int | None, max_batch: int, instances: int,
          queue_delay_us: int, backend: str, plugin: Path | None, exit_timeout: int, verbose: bool) -> None:
    """Serve MODEL on Triton Inference Server (PyTriton), over HTTP and gRPC, with metrics.

    The model `cicm_inpaint` takes uint8 frames `image` [H, W, 3] and masks `mask` [H, W]
    (255 = hole) of any size and returns `inpainted` uint8 [H, W, 3]; Triton batches
    same-sized requests (dynamic batching). Stops cleanly on Ctrl-C or SIGTERM. For a stock
    Triton server, write a model repository with `cicm-deploy triton-repo` instead.
    """
    def go() -> None:
        import logging
        import os
        import signal
        import tempfile
        import threading
        import time

        from cicm_deploy.inpainter import Inpainter
        from cicm_deploy.runtimes.triton import (START_ATTEMPTS, ServeConfig, bind_inpainter, check_ports_free,
                                                 failure_summary, import_pytriton, instance_handshake_race,
                                                 libpython_first, triton_config)

        config = ServeConfig(http_port=port, grpc_port=grpc_port or port + 1, metrics_port=metrics_port or port + 2,
                             max_batch=max_batch, instances=instances, queue_delay_us=queue_delay_us,
                             exit_timeout_s=exit_timeout)
        check_ports_free(config)
        import_pytriton()
        from pytriton.triton import Triton

        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
        try:  # one runtime per instance (onnxruntime splits the CPU threads between them)
            inpainter = Inpainter(model, backend=backend, plugin=plugin, workers=instances)
        except ValueError as exc:
            raise UserError(str(exc).replace("workers > 1", f"--instances {instances}")) from None
        try:
            libpython_first()
            stop_requested = threading.Event()
            starting = True

            def stop(signum: int, frame: object) -> None:
                # The first signal only asks: the serving loop, and the start once PyTriton's start
                # returns, look at the event. A KeyboardInterrupt raised into PyTriton's start is
                # printed and dropped by its HTTP client's gevent hub (measured: a SIGTERM just as the
                # model became ready was lost and the server went on serving). A second signal during
                # the start is raised, for a start that hangs (PyTriton waits up to minutes).
                if starting and stop_requested.is_set():
                    raise KeyboardInterrupt
                stop_requested.set()

            def stop_server(server: Any) -> None:
                try:
                    server.stop()
                except Exception as exc:  # what is left behind is PyTriton's workspace: say so, go on
                    click.echo(f"warning: stopping Triton failed ({type(exc).__name__}: {failure_summary(exc)})",
                               err=True)

            log_file = None
            if not verbose:  # kept where the server fails, removed after a clean stop
                handle, name = tempfile.mkstemp(prefix="cicm-deploy-triton-", suffix=".log")
                os.close(handle)
                log_file = Path(name)
            where_log = "run with --verbose for its log" if verbose else f"its log: {log_file}"
            triton, failed_start, clean = None, None, False
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                for sig in previous:
                    signal.signal(sig, stop)
                for attempt in range(1, START_ATTEMPTS + 1):
                    if stop_requested.is_set():
                        break
                    triton = Triton(config=triton_config(config, log_verbose=1 if verbose else 0, log_file=log_file))
                    bind_inpainter(triton, [inpainter] * instances, config)
                    try:
                        triton.run()
                        failed_start = None
                        break
                    except Exception as exc:  # whatever stops the start (a timeout, a PyTriton error): one line
                        failed_start = exc
                        stop_server(triton)
                        if stop_requested.is_set():
                            break
                        if attempt < START_ATTEMPTS and instances > 1 and instance_handshake_race(str(exc)):
                            click.echo(f"the model instances did not connect at start ({failure_summary(exc)}): "
                                       "PyTriton's start-up race between instances; starting again "
                                       f"(start {attempt + 1} of {START_ATTEMPTS})", err=True)
                            continue
                        raise click.ClickException(f"the Triton server did not start ({type(exc).__name__}: "
                                                   f"{failure_summary(exc)}); {where_log}") from None
                starting = False
                if failed_start is not None:  # asked to stop while a start was failing: say how it failed
                    click.echo(f"stopping during the start, which failed ({type(failed_start).__name__}: "
                               f"{failure_summary(failed_start)}); {where_log}", err=True)
                elif not stop_requested.is_set():
                    info = inpainter.describe()
                    click.echo(f"serving {config.model_name} ({info.get('backend')}, {info.get('precision')}, "
                               f"{instances} instance(s), max batch {max_batch}) on HTTP :{config.http_port}, "
                               f"gRPC :{config.grpc_port}, metrics http://localhost:{config.metrics_port}/metrics; "
                               + ("" if verbose else f"Triton's log: {log_file}; ") + "Ctrl-C or SIGTERM stops",
                               err=True)
                    while triton.is_alive() and not stop_requested.is_set():
                        time.sleep(0.2)
                    if not stop_requested.is_set():
                        raise click.ClickException(f"the Triton server stopped unexpectedly ({where_log})")
                if failed_start is None:
                    click.echo(f"stopping (requests in flight get up to {exit_timeout} s)", err=True)
                clean = failed_start is None
            finally:
                # The stop is bounded (--exit-timeout, then PyTriton's kill): further signals must not
                # cut it short, which would leave PyTriton's workspace behind.
                for sig in previous:
                    signal.signal(sig, signal.SIG_IGN)
                try:
                    if triton is not None:
                        stop_server(triton)
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)
            if clean and log_file is not None:  # kept when the server or its start failed
                log_file.unlink(missing_ok=True)
        finally:
            inpainter.close()
        click.echo("stopped", err=True)

    user_errors(go)


@click.command("triton-repo")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model repository directory to write.")
@click.option("--engine", type=click.Path(dir_okay=False, path_type=Path),
              help="An engine built from BUNDLE on the serving machine (`cicm-deploy build`): adds a TensorRT model.")
@click.option("--plugin", type=click.Path(dir_okay=False, path_type=Path),
              help="With an --engine that contains the CICMAugment plugin: the library it was built with; copied "
                   "into the repository.")
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(min=1), help="max_batch_size of each model.")
@click.option("--instances", default=1, show_default=True, type=click.IntRange(min=1),
              help="Instances per model (instance_group count).")
@click.option("--onnx-kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="Where the onnxruntime model's instances run.")
@click.option("--force", is_flag=True, help="Replace an earlier repository at OUT (never a folder of other files).")
def triton_repo(bundle: Path, out: Path, engine: Path | None, plugin: Path | None, max_batch: int, instances: int,
                onnx_kind: str, force: bool) -> None:
    """Write a Triton model repository for a stock `tritonserver` from BUNDLE.

    An `onnx`-routed bundle becomes `cicm_inpaint_onnx` (Triton's onnxruntime backend); with
    --engine, `cicm_inpaint_trt` (its TensorRT backend) is added, and --plugin is copied into
    REPO/plugins/ for the server to preload. Each model gets a config.pbtxt with dynamic
    batching up to --max-batch (none for a bundle exported with a fixed --batch; an engine's
    profile can cap it lower: both are reported) and an instance group; REPO/README.md gives the
    server command. These models take the graph's float32 NCHW tensors (H and W multiples of the
    bundle's stride).
    """
    def go() -> None:
        from cicm_deploy.runtimes.triton import write_model_repository

        written = write_model_repository(bundle, out, engine=engine, plugin=plugin, max_batch=max_batch,
                                         instances=instances, onnx_kind=f"KIND_{onnx_kind.upper()}", force=force,
                                         on_note=lambda note: click.echo(f"note: {note}", err=True))
        for path in written:
            click.echo(f"wrote {path}")
        click.echo(f"start a server: see {out / 'README.md'}")

    user_errors(go)
