"""``cicm-deploy export``: checkpoint -> bundle directory (DESIGN §3).

Steps: load the checkpoint; trace to ONNX (memory frozen into initializers); optionally make it
mixed FP16; optionally replace the routing with the CICMAugment op; check it with
``onnx.checker.check_model(full_check=True)``; compute the parity goldens with PyTorch FP32;
record the largest FP32 intermediates (FP16 tops out at 65504); write ``model.onnx`` (one file),
``parity.npz`` and ``manifest.json`` into a temporary directory that replaces the target only
when complete; then (unless told not to) run onnxruntime on the goldens and record the result.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from cicm_deploy import __version__
from cicm_deploy.checkpoint import load_model
from cicm_deploy.custom_op import CICM_AUGMENT
from cicm_deploy.files import as_if_created, file_in_the_way, listing
from cicm_deploy.runtimes.bundle import (BUNDLE_FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, PARITY_FILE, TOLERANCES,
                                         sha256_file)

from .fp16 import (FP16_MAX, constant_computations, convert_to_mixed_fp16, fp32_node_names, half_tensors,
                   largest_magnitudes, precision_report)
from .goldens import PIXELS_PER_CALL, make_goldens, plan_sets
from .onnx_export import MAX_IR_VERSION, export_onnx, ops_outside_tensorrt
from .plugin_rewrite import check_plugin_compatible, rewrite_to_plugin

ROUTINGS = ("onnx", "plugin")


class ExportError(ValueError):
    """Export options or a model that cannot produce a valid bundle."""


@dataclass
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    parity: Any = None  # runtimes.parity.ParityReport when checked
    parity_skipped: str | None = None  # why the check asked for could not run here


def _versions() -> dict[str, str]:
    names = ["torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "onnxruntime-extensions",
             "polygraphy", "numpy"]
    found = {"cicm-deploy": __version__}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _io_specs(proto: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        shape = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return [spec(v) for v in proto.graph.input], [spec(v) for v in proto.graph.output]


# A fixed batch is probed for its largest intermediates as one call that keeps every activation
# (about 2.3 KB per pixel for the default model, measured: --batch 512 at 128x128 took 19.5 GB,
# --batch 128 5.2 GB): bounded there. A dynamic batch probes a few images whatever it serves.
MAX_FIXED_BATCH_PIXELS = 2**21


def check_options(routing: str, opset: int, static_hw: tuple[int, int] | None, batch: int | None) -> None:
    """The options that need no model, checked before anything is read or written."""
    if routing not in ROUTINGS:
        raise ExportError(f"routing {routing!r} is not known; expected one of {', '.join(ROUTINGS)}")
    if not 13 <= opset <= 20:
        raise ExportError(f"opset {opset} is not supported; expected 13..20 (17 parses in TensorRT 10.x and "
                          "current onnxruntime)")
    if static_hw is not None and min(static_hw) <= 0:
        raise ExportError(f"static size {static_hw[0]}x{static_hw[1]} must be positive multiples of the network "
                          "stride")
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be at least 1, got {batch}")


def check_model_options(model: Any, routing: str, static_hw: tuple[int, int] | None, batch: int | None) -> None:
    """The options that depend on the model: its stride, what the plugin can express, the fixed batch's cost."""
    stride = model.config.stride
    if static_hw is not None and (static_hw[0] % stride or static_hw[1] % stride):
        raise ExportError(f"static size {static_hw[0]}x{static_hw[1]} must be positive multiples of the network "
                          f"stride {stride}")
    if batch is not None and batch > 1:
        height, width, _ = plan_sets(stride, static_hw, batch)[0]  # the set the probe runs
        most = max(1, MAX_FIXED_BATCH_PIXELS // (height * width))
        if batch > most:
            raise ExportError(
                f"--batch {batch} is too large to export at {height}x{width}: the exporter checks a fixed batch in "
                f"one call that holds every activation of {batch} images; at most {most} here. For larger batches "
                "export with a dynamic batch (leave out --batch) and give the engine its range (`cicm-deploy build "
                "--max-shape`) or Triton its --max-batch")
    if routing == "plugin":
        try:
            check_plugin_compatible(model)
        except ValueError as exc:
            raise ExportError(str(exc)) from None


def export_bundle(checkpoint: str | os.PathLike, output: str | os.PathLike, *, fp16: bool = False,
                  routing: str = "onnx", opset: int = 17, static_hw: tuple[int, int] | None = None,
                  batch: int | None = None, check: bool = True, force: bool = False,
                  progress: Callable[[str], None] = lambda message: None) -> ExportResult:
    output = Path(output)
    check_options(routing, opset, static_hw, batch)
    target = output.resolve()
    if target == Path.cwd() or target in Path.cwd().parents:  # the bundle replaces OUTPUT as a whole
        raise ExportError(f"{output} holds the current directory, which the bundle would replace; choose another "
                          "-o (e.g. -o model_bundle)")
    if Path(checkpoint).resolve().is_relative_to(target):
        raise ExportError(f"{output} holds the checkpoint {checkpoint}, which replacing it would delete; choose "
                          "another -o")
    progress("loading checkpoint")
    model, data = load_model(checkpoint, map_location="cpu")
    check_model_options(model, routing, static_hw, batch)
    if output.exists() and not force:
        raise ExportError(f"{output} exists; pass --force to replace it or choose another directory")
    if output.exists():
        _check_replaceable(output)
    staging = _staging_folder(output, target)  # now: a folder that cannot be written fails before the work
    try:
        result = _export_into(staging, model, data, checkpoint, fp16=fp16, routing=routing, opset=opset,
                              static_hw=static_hw, batch=batch, progress=progress)
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:  # an error, Ctrl-C, or SIGTERM where the caller turns it into an exception
        shutil.rmtree(staging, ignore_errors=True)
        raise

    result.path = output
    if check:
        result.parity, result.parity_skipped = _check_with_onnxruntime(output, progress)
        result.manifest["parity"]["export_check"] = (result.parity.to_dict() if result.parity is not None
                                                     else {"checked": False, "why": result.parity_skipped})
        _write_manifest(output, result.manifest)
    return result


def _staging_folder(output: Path, target: Path) -> Path:
    """An empty hidden folder beside OUTPUT (never inside it) that becomes the bundle when complete."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except (FileExistsError, NotADirectoryError):  # a file where a parent folder should be
        blocker = file_in_the_way(target) or target.parent
        raise ExportError(f"-o {output}: {blocker} is a file, so no folder can be made inside it; choose another "
                          "-o") from None
    except OSError as exc:
        raise ExportError(f"-o {output}: cannot write in {target.parent} ({exc.strerror or exc}); choose another "
                          "-o") from None


def _export_into(staging: Path, model: Any, data: dict[str, Any], checkpoint: str | os.PathLike, *, fp16: bool,
                 routing: str, opset: int, static_hw: tuple[int, int] | None, batch: int | None,
                 progress: Callable[[str], None]) -> ExportResult:
    """Trace, convert, check and write the bundle's files into ``staging``."""
    levels = [str(level) for level in model.config.cicm_levels]

    progress("tracing the model to ONNX")
    fp32_proto = export_onnx(model, opset=opset, static_hw=static_hw, batch=batch)
    progress("computing the PyTorch FP32 goldens")
    sets = plan_sets(model.config.stride, static_hw, batch)
    arrays, set_names = make_goldens(model, sets)
    first = set_names[0]
    pixels = arrays[f"{first}.image"][0, 0].size
    probe = max(batch or 1, PIXELS_PER_CALL // 4 // pixels)  # the probe keeps every activation: fewer images
    feeds = {"image": arrays[f"{first}.image"][:probe], "mask": arrays[f"{first}.mask"][:probe]}
    progress("measuring the largest intermediates")
    every_peak = largest_magnitudes(fp32_proto, feeds, top=None)
    peaks = every_peak[:5]
    constant_nodes = constant_computations(fp32_proto) if fp16 else set()
    keep32 = fp32_node_names(fp32_proto, levels) | constant_nodes
    half = half_tensors(fp32_proto, keep32) if fp16 else set()
    half_peaks = [(name, value) for name, value in every_peak if name in half][:5]

    proto = fp32_proto
    if fp16:
        progress("converting to mixed FP16")
        proto = convert_to_mixed_fp16(proto, keep32)
    if routing == "plugin":
        progress("replacing the routing with CICMAugment")
        proto = rewrite_to_plugin(proto, model)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails the ONNX checker: {str(exc).splitlines()[0]}") from None

    inputs, outputs = _io_specs(proto)
    convs = precision_report(proto)
    manifest: dict[str, Any] = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source_checkpoint": {"file": Path(checkpoint).name, "sha256": sha256_file(checkpoint),
                              "step": data.get("step")},
        "model_config": model.config.to_dict(),
        "precision": "fp16" if fp16 else "fp32",
        "routing": routing,
        "opset": opset,
        "ir_version": proto.ir_version,
        "stride": model.config.stride,
        "inputs": inputs,
        "outputs": outputs,
        "custom_ops": ([{"name": CICM_AUGMENT.name, "domain": CICM_AUGMENT.domain, "version": CICM_AUGMENT.version,
                         "namespace": CICM_AUGMENT.namespace}] if routing == "plugin" else []),
        "tolerances": TOLERANCES["fp16" if fp16 else "fp32"],
        "ops_outside_tensorrt_parser": ops_outside_tensorrt(proto, frozenset({CICM_AUGMENT.name})),
        "precision_map": {"conv_fp16": len(convs["float16"]), "conv_fp32": len(convs["float32"]),
                          "fp32_blocks": (["memory (routing, softmax, weighted sum)", "composite"]
                                          + [f"{len(constant_nodes)} computations on constants only (a fixed shape's "
                                             "neighbour counts, folded when the graph loads)"] * bool(constant_nodes)
                                          if fp16 else [])},
        "largest_fp32_intermediates": [{"tensor": name, "max_abs": value, "fp16_headroom": FP16_MAX / max(value, 1e-30)}
                                       for name, value in peaks],
        **({"largest_fp16_tensors": [{"tensor": name, "max_abs": value, "fp16_headroom": FP16_MAX / max(value, 1e-30)}
                                     for name, value in half_peaks]} if fp16 else {}),
        "parity": {"sets": set_names, "images": int(sum(count for _, _, count in sets)),
                   "shapes": [{"count": c, "height": h, "width": w} for h, w, c in sets], "export_check": None},
        "versions": _versions(),
    }

    progress("writing the bundle")
    onnx.save_model(proto, str(staging / MODEL_FILE), save_as_external_data=False)
    np.savez_compressed(staging / PARITY_FILE, **arrays)
    manifest["files"] = {name: sha256_file(staging / name) for name in (MODEL_FILE, PARITY_FILE)}
    _write_manifest(staging, manifest)
    as_if_created(staging)  # mkdtemp's 0700 would keep other users (Triton, a board's service) out
    return ExportResult(staging, manifest)


def _check_replaceable(output: Path) -> None:
    """--force replaces an earlier bundle (or an empty folder), never a folder of other files."""
    if not output.is_dir():
        raise ExportError(f"{output} is a file, not a bundle directory; choose another -o")
    if (output / MANIFEST_FILE).is_file() or not any(output.iterdir()):
        return
    shown = listing(sorted(entry.name for entry in output.iterdir()))
    raise ExportError(f"{output} is not an export bundle (no {MANIFEST_FILE}; it holds {shown}): --force replaces "
                      "only an earlier bundle; choose another -o (e.g. a new folder)")


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST_FILE)


def _check_with_onnxruntime(path: Path, progress: Callable[[str], None]) -> tuple[Any, str | None]:
    """(the parity report, None), or (None, why the check cannot run on this machine)."""
    from cicm_deploy.runtimes.base import BackendUnavailableError
    from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend
    from cicm_deploy.runtimes.parity import check_parity

    progress("checking parity with onnxruntime")
    try:
        with OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"]) as runtime:
            return check_parity(runtime), None
    except BackendUnavailableError as exc:
        return None, str(exc)
