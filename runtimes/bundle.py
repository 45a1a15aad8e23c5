"""Reading and verifying export bundles (DESIGN §3). No torch, no onnx.

A bundle is a directory with ``model.onnx``, ``manifest.json`` and ``parity.npz``. Opening one
checks the manifest's format version and every file's sha256, so a truncated copy or an edited
model is caught before any runtime loads it. Every failure is one ``BundleError`` line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

BUNDLE_FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
PARITY_FILE = "parity.npz"

# A route whose two best sets score within this fraction of the scores' bound of each other (the
# goldens' route_margin, ContextMemory.route_margins) is a tie: two implementations of the same FP32
# sums may round it either way, so parity accepts either set there and counts it apart. Such ties
# are rare (none of the default model's 5,120 golden positions; a test model whose set vectors
# copy real features had one, 1.5e-8 apart on scores of 0.09, which onnxruntime routed to the
# other set on one machine and not on others). Bundles written before margins were stored have no
# route_margin and no such tolerance: their routes are compared exactly, as before.
ROUTE_TIE_MARGIN = 1e-5
# The parity contract (DESIGN §3). The exporter writes these into every manifest; a manifest may
# hold tighter ones, never looser (parity would otherwise pass what the contract fails).
TOLERANCES = {
    "fp32": {"inpainted_max_abs": 1e-4, "route_agreement": 1.0, "route_tie_margin": ROUTE_TIE_MARGIN},
    # FP16 is judged on images (DESIGN §3); mean abs <= 10^(-45/20) follows from PSNR >= 45 dB
    # and is what Polygraphy's comparator checks alongside.
    "fp16": {"psnr_db": 45.0, "inpainted_mean_abs": 10 ** (-45 / 20), "route_agreement": 0.999,
             "route_tie_margin": ROUTE_TIE_MARGIN},
}
OPTIONAL_TOLERANCES = ("route_tie_margin",)  # absent from bundles written before it existed
HIGHER_IS_STRICTER = ("psnr_db", "route_agreement")
INPUT_NAMES = ("image", "mask")
OUTPUT_NAMES = ("inpainted", "route")
DTYPES = ("float32", "float16", "int32", "int64")


class BundleError(ValueError):
    """A directory that is not a usable export bundle."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class GoldenSet:
    """Golden inputs and PyTorch FP32 outputs: one batch of images of one size."""

    name: str  # "s0", "s1", ...
    image: np.ndarray  # float32 [N, 3, H, W] in [0, 1]
    mask: np.ndarray  # float32 [N, 1, H, W], 1 = hole
    inpainted: np.ndarray  # float32 [N, 3, H, W]: PyTorch FP32 composite
    route: np.ndarray | None  # int32 [N, h, w]: PyTorch bottleneck routes (None for a plain UNet)
    bins: list[str]  # hole-ratio bin of each image
    route_margin: np.ndarray | None = None  # float32 [N, h, w]: each route's margin from a tie (None: not stored)

    def ties(self, margin: float) -> np.ndarray | None:
        """bool [N, h, w]: routes within ``margin`` of a tie (either set is right there); None without margins."""
        return None if self.route_margin is None else self.route_margin < margin


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def shape_summary(self) -> str:
        """'8x128x128, 8x128x192'; sets of one shape are counted, not repeated: '8 sets of 2x64x64'."""
        counts: dict[str, int] = {}
        for g in self.manifest["parity"]["shapes"]:
            shape = f"{g['count']}x{g['height']}x{g['width']}"
            counts[shape] = counts.get(shape, 0) + 1
        return ", ".join(shape if n == 1 else f"{n} sets of {shape}" for shape, n in counts.items())

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def parity_path(self) -> Path:
        return self.path / PARITY_FILE

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def routing(self) -> str:
        return self.manifest["routing"]

    @property
    def stride(self) -> int:
        return int(self.manifest["stride"])

    @property
    def custom_ops(self) -> list[dict[str, str]]:
        return list(self.manifest.get("custom_ops", []))

    @property
    def output_names(self) -> list[str]:
        return [o["name"] for o in self.manifest["outputs"]]

    @property
    def tolerances(self) -> dict[str, float]:
        return dict(self.manifest["tolerances"])

    def goldens(self) -> list[GoldenSet]:
        """The parity inputs and reference outputs, one batch per set, as the manifest lists them."""
        unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)
        try:
            data = np.load(self.parity_path, allow_pickle=False)
        except unreadable as exc:
            raise BundleError(f"{self.parity_path} cannot be read as an npz archive ({exc})") from None
        sets = []
        routed = "route" in self.output_names  # a plain UNet has no routes; a CICM graph's goldens all have them
        fixed = self.manifest["inputs"][0]["shape"]  # image [B, 3, H, W]: an int is a dimension the graph fixes
        with data:
            for name, shape in zip(self.manifest["parity"]["sets"], self.manifest["parity"]["shapes"]):
                keys = [f"{name}.{part}" for part in ("image", "mask", "inpainted", "bins", "route")[:4 + routed]]
                missing = [key for key in keys if key not in data.files]
                if missing:
                    raise BundleError(f"{self.parity_path} lacks {', '.join(missing)}; re-export the bundle")
                margin_key = f"{name}.route_margin"  # bundles written before margins were stored lack it
                try:
                    golden = GoldenSet(name, data[keys[0]], data[keys[1]], data[keys[2]],
                                       data[keys[4]] if routed else None, [str(b) for b in data[keys[3]]],
                                       data[margin_key] if routed and margin_key in data.files else None)
                except unreadable as exc:
                    raise BundleError(f"{self.parity_path} cannot be read ({exc}); re-export the bundle") from None
                if golden.route_margin is not None and golden.route_margin.shape != golden.route.shape:
                    raise BundleError(f"{self.parity_path} set {name} holds route margins "
                                      f"{list(golden.route_margin.shape)} for routes {list(golden.route.shape)}; "
                                      "re-export the bundle")
                listed = (shape["count"], 3, shape["height"], shape["width"])
                if golden.image.shape != listed or golden.inpainted.shape != listed:
                    raise BundleError(f"{self.parity_path} set {name} holds images {list(golden.image.shape)}, the "
                                      f"manifest lists {list(listed)}; re-export the bundle")
                if any(isinstance(want, int) and want != got for want, got in zip(fixed, listed)):
                    raise BundleError(f"{self.parity_path} set {name} holds images {list(listed)}, the graph takes "
                                      f"{fixed}; re-export the bundle")
                sets.append(golden)
        return sets


def open_bundle(path: str | os.PathLike, verify: bool = True) -> Bundle:
    """Open a bundle directory; with ``verify`` check the format version and file hashes."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist; create one with `cicm-deploy export CKPT -o {path}`")
    if not path.is_dir():
        raise BundleError(f"bundle {path} is a file, expected the directory `cicm-deploy export` writes "
                          f"({MODEL_FILE}, {MANIFEST_FILE}, {PARITY_FILE})")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {path} has no {MANIFEST_FILE}; it was not written by `cicm-deploy export`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} holds a {type(manifest).__name__}, expected a JSON object")
    version = manifest.get("format_version")
    if version is None:
        raise BundleError(f"{manifest_path} has no format_version: {path} is not a bundle written by "
                          "`cicm-deploy export`")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"bundle {path} has format_version {version!r}; this cicm-deploy reads version "
                          f"{BUNDLE_FORMAT_VERSION}: re-export it, or use the cicm-deploy version that wrote it")
    for key in ("precision", "routing", "stride", "inputs", "outputs", "tolerances", "files", "parity"):
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks the field {key!r}; re-export the bundle")
    problem = _manifest_problem(manifest)
    if problem:
        raise BundleError(f"{manifest_path}: {problem}; re-export the bundle (the manifest is not meant to be edited)")
    for name in (MODEL_FILE, PARITY_FILE):
        if not (path / name).is_file():
            raise BundleError(f"bundle {path} is missing {name}; re-export it or copy the whole directory")
    if verify:
        for name, expected in manifest["files"].items():
            if not (path / name).is_file():
                raise BundleError(f"bundle {path} is missing {name}; re-export it or copy the whole directory")
            actual = sha256_file(path / name)
            if actual != expected:
                raise BundleError(f"{path / name} does not match the manifest (sha256 {actual[:12]}…, expected "
                                  f"{expected[:12]}…): the file was modified or truncated; re-export or re-copy it")
        _check_onnx(path / MODEL_FILE, manifest["precision"])
    return Bundle(path, manifest)


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the values of a manifest that has every field, or None."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    precision, routing, stride = manifest["precision"], manifest["routing"], manifest["stride"]
    if precision not in TOLERANCES:
        return f"precision {precision!r} is not one of {', '.join(TOLERANCES)}"
    if routing not in ("onnx", "plugin"):
        return f"routing {routing!r} is not one of onnx, plugin"
    if not count(stride):
        return f"stride {stride!r} is not a positive integer"
    if "model_config" in manifest:  # the stride follows from the network: depth and memory regions
        from cicm_deploy.config import ConfigError, ModelConfig

        try:
            config_stride = ModelConfig.from_dict(manifest["model_config"]).stride
        except (ConfigError, TypeError, ValueError, KeyError) as exc:
            return f"model_config is invalid ({exc})"
        if config_stride != stride:
            return f"stride {stride} is not the model's ({config_stride}, from its model_config)"
    custom_ops = manifest.get("custom_ops", [])
    if not isinstance(custom_ops, list) or bool(custom_ops) != (routing == "plugin"):
        return f"routing {routing!r} with custom_ops {custom_ops!r} (plugin routing has the CICMAugment op, onnx none)"
    for key, names, rank in (("inputs", INPUT_NAMES, (4,)), ("outputs", OUTPUT_NAMES, (4, 3))):
        entries = manifest[key]
        if not (isinstance(entries, list) and entries and all(isinstance(e, dict) for e in entries)):
            return f"{key} is {entries!r}, expected a list of {{\"name\", \"dtype\", \"shape\"}} entries"
        for entry in entries:
            shape = entry.get("shape")
            if (entry.get("name") not in names or entry.get("dtype") not in DTYPES or not isinstance(shape, list)
                    or len(shape) not in rank or not all(isinstance(d, str) or count(d) for d in shape)):
                return f"{key} entry {entry!r} is not one of {', '.join(names)} with a known dtype and shape"
    if [e["name"] for e in manifest["inputs"]] != list(INPUT_NAMES) or manifest["outputs"][0]["name"] != "inpainted":
        return "inputs must be image and mask, and the first output inpainted"
    tolerances = manifest["tolerances"]
    routed = any(o["name"] == "route" for o in manifest["outputs"])
    given = tolerances if isinstance(tolerances, dict) else {}
    contract = {k: v for k, v in TOLERANCES[precision].items()
                if (routed or not k.startswith("route_")) and (k not in OPTIONAL_TOLERANCES or k in given)}
    if not isinstance(tolerances, dict) or not all(number(tolerances.get(k)) for k in contract):
        return f"tolerances {tolerances!r} lack numeric {', '.join(contract)} for a {precision} bundle"
    looser = [k for k, v in contract.items()
              if (tolerances[k] < v if k in HIGHER_IS_STRICTER else tolerances[k] > v)]
    if looser:
        return f"tolerances {', '.join(f'{k} {tolerances[k]!r}' for k in looser)} are looser than the contract's " \
               f"({', '.join(f'{k} {contract[k]:g}' for k in looser)})"
    files, parity = manifest["files"], manifest["parity"]
    if not (isinstance(files, dict) and sorted(files) == sorted((MODEL_FILE, PARITY_FILE))
            and all(isinstance(v, str) and len(v) == 64 for v in files.values())):
        return f"files must give the sha256 of {MODEL_FILE} and {PARITY_FILE}"
    sets, shapes = (parity.get("sets"), parity.get("shapes")) if isinstance(parity, dict) else (None, None)
    if not (isinstance(sets, list) and sets and all(isinstance(n, str) for n in sets) and isinstance(shapes, list)
            and len(shapes) == len(sets)
            and all(isinstance(g, dict) and all(count(g.get(k)) for k in ("count", "height", "width")) for g in shapes)):
        return "parity must list its golden sets and, for each, a count, height and width"
    return None


def _check_onnx(model_path: Path, precision: str) -> None:
    """Where the onnx package is installed (export side, dev machines): the ONNX checker, the
    CICMAugment nodes, and the manifest's precision against the graph's own weights."""
    if importlib.util.find_spec("onnx") is None:
        return
    import onnx
    from google.protobuf.message import DecodeError

    try:  # read once: the checker and the plugin-node check take the same graph
        model = onnx.load(str(model_path), load_external_data=False)
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, DecodeError) as exc:
        raise BundleError(f"{model_path} fails the ONNX checker: {str(exc).strip().splitlines()[0]}") from None
    _check_plugin_nodes(model)
    half = sum(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    if (precision == "fp16") != bool(half):  # the tolerances parity applies follow the precision
        holds = f"{half} FP16 weights" if half else "FP32 weights only"
        raise BundleError(f"{model_path} holds {holds}, its manifest says precision {precision}; re-export the "
                          "bundle (the manifest is not meant to be edited)")


def _check_plugin_nodes(model) -> None:
    """Every CICMAugment node lists both outputs: TensorRT's plugin layer always has two (augmented,
    route), and its ONNX parser rejects a node that names fewer ("Node has more output tensors than
    TRT expected"); the route may go unused."""
    from cicm_deploy.custom_op import CICM_AUGMENT

    for node in model.graph.node:
        if node.op_type == CICM_AUGMENT.name and node.domain == CICM_AUGMENT.domain:
            if len(node.output) != 2 or not all(node.output):
                raise BundleError(f"CICMAugment node {node.name or '(unnamed)'} has outputs {list(node.output)}; "
                                  "it needs both: augmented and route (TensorRT's plugin layer has two)")
