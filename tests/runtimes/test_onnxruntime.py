"""The onnxruntime runtime, bundle verification errors, the parity command, and Polygraphy's CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cicm_deploy.cli import cli
from cicm_deploy.images import save_image, save_mask
from cicm_deploy.runtimes.base import BackendUnavailableError, InferenceError, RuntimeInputError
from cicm_deploy.runtimes.bundle import BundleError, open_bundle, sha256_file
from cicm_deploy.runtimes.onnxruntime import OnnxRuntimeBackend, choose_providers
from cicm_deploy.runtimes.parity import check_parity, polygraphy_command, save_polygraphy_data


def copy_bundle(bundles, tmp_path, precision="fp32", routing="onnx") -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundles(precision, routing).path, target)
    return target


def rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_infer_pads_any_size_and_keeps_known_pixels(bundles, photo, hole):
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        out = runtime.infer(photo, hole)
        description = runtime.describe()
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.array_equal(out[~hole], photo[~hole])
    assert description["backend"] == "onnxruntime" and description["precision"] == "fp32"
    assert description["device"] == "CPUExecutionProvider"


def test_infer_batch_matches_single_calls(bundles, photo, hole):
    with OnnxRuntimeBackend(bundles("fp32", "onnx").path) as runtime:
        small = photo[:20, :30]
        batch = runtime.infer_batch([photo, small, photo], [hole, hole[:20, :30], ~hole])
        singles = [runtime.infer(photo, hole), runtime.infer(small, hole[:20, :30]), runtime.infer(photo, ~hole)]
    for a, b in zip(batch, singles):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("feeds,message", [
    ({"image": np.zeros((1, 3, 16, 16), np.float32)}, r"inputs \['image'\] given, the graph expects \['image', 'mask'\]"),
    ({"image": np.zeros((1, 3, 16, 16), np.float64), "mask": np.zeros((1, 1, 16, 16), np.float32)},
     "input 'image' is float64, the graph expects float32"),
    ({"image": np.zeros((1, 4, 16, 16), np.float32), "mask": np.zeros((1, 1, 16, 16), np.float32)},
     r"input 'image' has shape \[1, 4, 16, 16\], the graph expects \['batch', 3, 'height', 'width'\]"),
    ({"image": np.zeros((1, 3, 12, 16), np.float32), "mask": np.zeros((1, 1, 12, 16), np.float32)},
     "must be multiples of 8"),
    ({"image": np.zeros((2, 3, 16, 16), np.float32), "mask": np.zeros((1, 1, 16, 16), np.float32)},
     "different batch sizes"),
    ({"image": np.zeros((1, 3, 0, 0), np.float32), "mask": np.zeros((1, 1, 0, 0), np.float32)},
     r"input 'image' has shape \[1, 3, 0, 0\]; every axis needs at least 1"),
    ({"image": np.full((1, 3, 16, 16), 200, np.float32), "mask": np.zeros((1, 1, 16, 16), np.float32)},
     r"input 'image' holds values from 200 to 200; the graph expects \[0, 1\] \(divide 8-bit pixels by 255\)"),
    ({"image": np.zeros((1, 3, 16, 16), np.float32), "mask": np.full((1, 1, 16, 16), 255, np.float32)},
     r"input 'mask' holds values other than 0 and 1 \(e.g. 255\); .* \(divide a 0/255 mask by 255\)"),
    ({"image": np.zeros((1, 3, 16, 16), np.float32), "mask": np.full((1, 1, 16, 16), 0.5, np.float32)},
     r"input 'mask' holds values other than 0 and 1 \(e.g. 0.5\)"),
])
def test_input_checks_quote_both_sides(bundles, feeds, message):
    runtime = OnnxRuntimeBackend(bundles("fp32", "onnx").path)
    with pytest.raises(RuntimeInputError, match=message):
        runtime.run(feeds)


def test_provider_order():
    available = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "AzureExecutionProvider"]
    assert choose_providers(available, False) == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider"]
    assert choose_providers(available, True) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"], False) == ["CPUExecutionProvider"]


def test_plugin_bundle_without_reference_op_says_what_to_install(bundles, monkeypatch):
    import importlib.util

    bundle = bundles("fp32", "plugin").path  # exported (and parity-checked) before the op goes missing
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "onnxruntime_extensions" else real(name, *a, **k))
    runtime = OnnxRuntimeBackend(bundle)
    with pytest.raises(BackendUnavailableError, match=r"CICMAugment .*onnxruntime_extensions.*cicm-deploy\[reference\]"):
        runtime.load()


@pytest.mark.parametrize("damage,message", [
    ("missing-model", "is missing model.onnx"),
    ("missing-manifest", "has no manifest.json"),
    ("hash", "does not match the manifest"),
    ("version", "format_version 99; this cicm-deploy reads version 1"),
    ("json", "is not valid JSON"),
    ("checker", "fails the ONNX checker"),
    ("file", "is a file"),
    ("checkpoint", "is a file"),
    ("stride", "stride 0 is not a positive integer"),
    ("precision", "precision 'fp8' is not one of fp32, fp16"),
    ("tolerances", "tolerances 'x' lack numeric inpainted_max_abs, route_agreement"),
    ("routing", "routing 'bogus' is not one of onnx, plugin"),
    ("inputs", "inputs is \\[\\], expected a list"),
    ("not-a-bundle", "has no format_version"),
    ("no-hashes", "files must give the sha256 of model.onnx and parity.npz"),
    ("loose", "tolerances inpainted_max_abs 1.0 are looser than the contract's \\(inpainted_max_abs 0.0001\\)"),
    ("loose-ties", "tolerances route_tie_margin 0.1 are looser than the contract's \\(route_tie_margin 1e-05\\)"),
    ("nan-tolerance", "lack numeric inpainted_max_abs"),
    ("dtype", "inputs entry .*'floaty'.* is not one of image, mask with a known dtype and shape"),
    ("no-shape", "inputs entry .* is not one of image, mask with a known dtype and shape"),
    ("renamed-output", "outputs entry .*'out'.* is not one of inpainted, route"),
    ("golden-shapes", "parity must list its golden sets and, for each, a count, height and width"),
    ("no-golden-sets", "parity must list its golden sets"),
    ("plugin-routing", "routing 'plugin' with custom_ops \\[\\]"),
])
def test_bundle_errors(bundles, tmp_path, damage, message):
    path = copy_bundle(bundles, tmp_path)
    if damage == "missing-model":
        (path / "model.onnx").unlink()
    elif damage == "missing-manifest":
        (path / "manifest.json").unlink()
    elif damage == "hash":
        with open(path / "parity.npz", "ab") as handle:
            handle.write(b"x")
    elif damage == "version":
        rewrite_manifest(path, format_version=99)
    elif damage == "json":
        (path / "manifest.json").write_text("{not json")
    elif damage == "checker":
        (path / "model.onnx").write_bytes(b"not an onnx model")
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["files"]["model.onnx"] = sha256_file(path / "model.onnx")
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "file":
        path = path / "model.onnx"
    elif damage == "stride":
        rewrite_manifest(path, stride=0)
    elif damage == "precision":
        rewrite_manifest(path, precision="fp8")
    elif damage == "tolerances":
        rewrite_manifest(path, tolerances="x")
    elif damage == "routing":
        rewrite_manifest(path, routing="bogus")
    elif damage == "plugin-routing":
        rewrite_manifest(path, routing="plugin")
    elif damage == "inputs":
        rewrite_manifest(path, inputs=[])
    elif damage == "not-a-bundle":
        (path / "manifest.json").write_text(json.dumps({"photos": 168}))
    elif damage in ("no-hashes", "loose", "loose-ties", "nan-tolerance", "dtype", "no-shape", "renamed-output", "golden-shapes",
                    "no-golden-sets"):
        manifest = json.loads((path / "manifest.json").read_text())
        if damage == "no-hashes":
            manifest["files"] = {}
        elif damage in ("loose", "nan-tolerance"):
            manifest["tolerances"]["inpainted_max_abs"] = 1.0 if damage == "loose" else float("nan")
        elif damage == "loose-ties":  # more positions would count as ties, accepted either way
            manifest["tolerances"]["route_tie_margin"] = 0.1
        elif damage == "dtype":
            manifest["inputs"][0]["dtype"] = "floaty"
        elif damage == "no-shape":
            del manifest["inputs"][0]["shape"]
        elif damage == "renamed-output":
            manifest["outputs"][0]["name"] = "out"
        elif damage == "golden-shapes":
            manifest["parity"]["shapes"] = [{"count": 1}]
        else:
            manifest["parity"]["sets"] = []
        (path / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "checkpoint":
        path = tmp_path / "model.pt"
        path.write_bytes(b"not really a checkpoint")
    with pytest.raises(BundleError, match=message):
        open_bundle(path)
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and re.search(message, result.output), \
        result.output
    if damage in ("file", "checkpoint"):  # says what the file is and what to pass instead
        assert ("an ONNX model" if damage == "file" else "a PyTorch checkpoint") in result.output
        assert "pass the bundle directory" in result.output


def test_a_graph_or_goldens_that_disagree_with_the_manifest_are_refused(bundles, tmp_path):
    path = copy_bundle(bundles, tmp_path)
    shutil.copy(bundles("fp16", "onnx").path / "model.onnx", path / "model.onnx")  # swapped, hash re-computed
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = sha256_file(path / "model.onnx")
    (path / "manifest.json").write_text(json.dumps(manifest))
    # the hash holds; an FP16 graph under an FP32 manifest would be judged at the wrong tolerances
    with pytest.raises(BundleError, match="model.onnx holds [0-9]+ FP16 weights, its manifest says precision fp32"):
        open_bundle(path)
    rewrite_manifest(path, precision="fp16", tolerances=manifest["tolerances"] | {"psnr_db": 45.0,
                                                                                  "inpainted_mean_abs": 0.005})
    open_bundle(path)  # and the other way round
    shutil.copy(bundles("fp32", "onnx").path / "model.onnx", path / "model.onnx")
    rewrite_manifest(path, files=bundles("fp32", "onnx").manifest["files"])
    with pytest.raises(BundleError, match="model.onnx holds FP32 weights only, its manifest says precision fp16"):
        open_bundle(path)

    path = copy_bundle(bundles, tmp_path / "io")  # the graph's own inputs do not match what the manifest lists
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["inputs"][0]["dtype"] = "float16"
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == 2 and "re-export" in result.output
    assert "has inputs [('image', 'float32', ['?', 3, '?', '?'])" in result.output
    manifest["inputs"][0]["dtype"] = "float32"
    for entry in manifest["inputs"]:  # a fixed batch the graph does not have: refused, no Polygraphy traceback
        entry["shape"][0] = 8
    (path / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "manifest lists [('image', 'float32', [8, 3, '?', '?'])" in result.output

    wrong = copy_bundle(bundles, tmp_path / "wrong")
    with np.load(wrong / "parity.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["s0.image"] = arrays["s0.image"][:, :, :64]  # goldens of another size than the manifest lists
    np.savez_compressed(wrong / "parity.npz", **arrays)
    manifest = json.loads((wrong / "manifest.json").read_text())
    manifest["files"]["parity.npz"] = sha256_file(wrong / "parity.npz")
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="set s0 holds images .* the manifest lists"):
        open_bundle(wrong).goldens()
    (wrong / "parity.npz").write_bytes((wrong / "parity.npz").read_bytes()[:300])  # truncated, hash updated
    manifest["files"]["parity.npz"] = sha256_file(wrong / "parity.npz")
    (wrong / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="cannot be read as an npz archive"):
        open_bundle(wrong).goldens()

    routeless = copy_bundle(bundles, tmp_path / "routeless")  # a CICM bundle's goldens must keep their routes
    with np.load(routeless / "parity.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "s1.route"}
    np.savez_compressed(routeless / "parity.npz", **arrays)
    rewrite_manifest(routeless, files={**manifest["files"], "parity.npz": sha256_file(routeless / "parity.npz")})
    with pytest.raises(BundleError, match=r"parity.npz lacks s1.route; re-export the bundle"):
        open_bundle(routeless).goldens()
    result = CliRunner().invoke(cli, ["parity", str(routeless)])  # not a pass with the route check dropped
    assert result.exit_code == 2 and "lacks s1.route" in result.output and "PASSED" not in result.output

    batched = copy_bundle(bundles, tmp_path / "batched")  # goldens the graph's fixed batch cannot take
    manifest = json.loads((batched / "manifest.json").read_text())
    manifest["inputs"][0]["shape"][0] = 4
    (batched / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"set s0 holds images \[8, 3, 128, 128\], the graph takes \[4, 3, "):
        open_bundle(batched).goldens()

    strided = copy_bundle(bundles, tmp_path / "strided")
    rewrite_manifest(strided, stride=4)  # a stride the network does not have
    with pytest.raises(BundleError, match=r"stride 4 is not the model's \(8, from its model_config\)"):
        open_bundle(strided)


def test_an_onnxruntime_failure_is_one_line_with_all_it_says(bundles, tmp_path, monkeypatch):
    """Its first line names the input; the lines after it say what was wrong: both are kept, on one line."""
    bundle = bundles("fp32", "onnx").path
    golden = open_bundle(bundle).goldens()[0]
    feeds = {"image": golden.image[:1], "mask": golden.mask[:1]}

    class Session:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def run(self, *args):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: image "
                               "for the following indices\n index: 0 Got: 1 Expected: 2\n Please fix either the "
                               "inputs/outputs or the model.")

    with OnnxRuntimeBackend(bundle) as runtime:
        runtime.session = Session(runtime.session)
        with pytest.raises(InferenceError) as caught:
            runtime.run(feeds)
    assert str(caught.value) == (f"onnxruntime could not run {bundle / 'model.onnx'} on a 1x3x128x128 image: "
                                 "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: image "
                                 "for the following indices index: 0 Got: 1 Expected: 2 Please fix either the "
                                 "inputs/outputs or the model.")
    real_run = OnnxRuntimeBackend._run

    def failing(self, feeds):
        self.session = Session(self.session)
        return real_run(self, feeds)

    monkeypatch.setattr(OnnxRuntimeBackend, "_run", failing)
    np.savez(tmp_path / "in.npz", **feeds)
    result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz")])
    assert result.exit_code == 1 and result.output.startswith("Error: onnxruntime could not run")  # not a user error
    assert "index: 0 Got: 1 Expected: 2" in result.output


def rewrite_goldens(path: Path, change) -> None:
    """Apply ``change`` to the bundle's golden arrays (a dict it edits in place) and re-hash them."""
    with np.load(path / "parity.npz") as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    np.savez_compressed(path / "parity.npz", **arrays)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["parity.npz"] = sha256_file(path / "parity.npz")
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_parity_fails_when_outputs_drift(bundles, tmp_path):
    path = copy_bundle(bundles, tmp_path)

    def drift(arrays: dict) -> None:
        arrays["s0.inpainted"] = arrays["s0.inpainted"] + 1e-3 * (arrays["s0.mask"] > 0)
        arrays["s1.route"] = (arrays["s1.route"] + 1) % 4

    rewrite_goldens(path, drift)
    with OnnxRuntimeBackend(path) as runtime:
        report = check_parity(runtime)
    assert not report.passed and not report.polygraphy_passed
    assert [o.passed for o in report.outputs] == [False, False]
    result = CliRunner().invoke(cli, ["parity", str(path)])
    assert result.exit_code == 1 and "FAILED" in result.output
    assert "[E]" not in result.output and "[W]" not in result.output  # the report alone says what failed


def flip_one_route(margin: float):
    """A change for rewrite_goldens: PyTorch's route at one position goes to the next set, with that
    position's margin from a tie set to ``margin``."""
    def change(arrays: dict) -> None:
        arrays["s1.route"][1, 2, 3] = (arrays["s1.route"][1, 2, 3] + 1) % 4
        arrays["s1.route_margin"][1, 2, 3] = margin
    return change


def as_before_route_margins(path: Path) -> None:
    """Make a bundle look as written before ties were recorded: no margins, no route_tie_margin."""
    rewrite_goldens(path, lambda arrays: [arrays.pop(k) for k in list(arrays) if k.endswith(".route_margin")])
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["tolerances"]["route_tie_margin"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_parity_accepts_either_set_only_where_pytorch_found_a_tie(bundles, tmp_path):
    """Two sets that PyTorch scored alike to within FP32 rounding may be swapped by any other
    implementation: such a position is counted apart, not failed. The same flip where the sets are
    far apart fails, and so does any flip in a bundle without margins (written before they were)."""
    tied = copy_bundle(bundles, tmp_path / "tied")
    rewrite_goldens(tied, flip_one_route(0.0))
    with OnnxRuntimeBackend(tied) as runtime:
        report = check_parity(runtime)
    assert report.passed and report.polygraphy_passed, "\n".join(report.lines())
    route = report.outputs[1]
    assert route.agreement == 1.0 and route.differing == 0 and route.ties >= 1 and route.ties_differing == 1
    assert route.positions + route.ties == sum(g.route.size for g in open_bundle(tied).goldens())
    result = CliRunner().invoke(cli, ["parity", str(tied)])
    assert result.exit_code == 0 and "within a tie, accepted either way (1 routed to the other set)" in result.output

    apart = copy_bundle(bundles, tmp_path / "apart")
    rewrite_goldens(apart, flip_one_route(1.0))
    old = copy_bundle(bundles, tmp_path / "old")
    rewrite_goldens(old, flip_one_route(0.0))  # a tie, but the bundle predates ties: compared exactly
    as_before_route_margins(old)
    for path in (apart, old):
        with OnnxRuntimeBackend(path) as runtime:
            report = check_parity(runtime)
        assert not report.passed and not report.polygraphy_passed
        assert report.outputs[1].differing == 1 and not report.outputs[1].ties


def test_a_bundle_written_before_route_margins_still_passes(bundles, tmp_path):
    path = copy_bundle(bundles, tmp_path)
    as_before_route_margins(path)
    assert all(g.route_margin is None for g in open_bundle(path).goldens())
    with OnnxRuntimeBackend(path) as runtime:
        assert check_parity(runtime).passed


@pytest.mark.parametrize("precision,routing", [("fp32", "onnx"), ("fp16", "plugin")])
def test_parity_command_passes_and_writes_json(bundles, tmp_path, precision, routing):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["parity", str(bundles(precision, routing).path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    report = json.loads(out.read_text())
    assert report["passed"] and report["images"] >= 16


@pytest.mark.parametrize("precision,tie", [("fp32", False), ("fp16", False), ("fp32", True)])
def test_polygraphy_cli_recipe(bundles, tmp_path, precision, tie):
    """The README's `polygraphy run` recipe, run as a user would; its own outputs (saved with
    --save-outputs) then meet the full contract, PSNR included, which the CLI cannot compute.
    With a tie in the goldens the recipe lets that many positions route differently."""
    from polygraphy.comparator import RunResults

    bundle = open_bundle(bundles(precision, "onnx").path)
    if tie:  # PyTorch's route at one tied position swapped, as another implementation may do
        path = copy_bundle(bundles, tmp_path / "tied", precision)
        rewrite_goldens(path, flip_one_route(0.0))
        bundle = open_bundle(path)
    paths = save_polygraphy_data(bundle, tmp_path)
    command = polygraphy_command(bundle, *paths) + ["--save-outputs", str(tmp_path / "run.json")]
    beside = Path(sys.executable).parent / "polygraphy"  # this environment's, not another on PATH
    command[0] = str(beside) if beside.exists() else (shutil.which("polygraphy") or str(beside))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "PASSED" in done.stdout + done.stderr
    (_, iterations), = RunResults.load(str(tmp_path / "run.json")).items()
    goldens = bundle.goldens()
    assert len(iterations) == len(goldens)
    assert ("--error-quantile" in command) == (tie or precision == "fp16")
    for result, golden in zip(iterations, goldens):
        error = np.abs(np.asarray(result["inpainted"]) - golden.inpainted)
        decided = ~golden.ties(bundle.tolerances["route_tie_margin"])  # the tied position may go either way
        agreement = np.mean(np.asarray(result["route"])[decided] == golden.route[decided])
        if precision == "fp32":
            assert error.max() <= 1e-4 and agreement == 1.0
        else:
            assert 10 * np.log10(1.0 / np.mean(error ** 2)) >= 45 and agreement >= 0.999


def test_run_command_reads_and_writes_npz(bundles, tmp_path):
    bundle = bundles("fp32", "onnx").path
    golden = open_bundle(bundle).goldens()[0]
    np.savez(tmp_path / "in.npz", image=golden.image, mask=golden.mask)
    result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"),
                                      "-o", str(tmp_path / "out.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "out.npz") as out:
        assert np.abs(out["inpainted"] - golden.inpainted).max() <= 1e-4
        assert np.array_equal(out["route"], golden.route)
    np.savez(tmp_path / "bad.npz", image=golden.image)
    bad = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "bad.npz")])
    assert bad.exit_code == 2 and "the graph expects ['image', 'mask']" in bad.output
    np.save(tmp_path / "plain.npy", golden.image)  # one bare array, not named inputs
    bad = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "plain.npy")])
    assert bad.exit_code == 2 and "is not an npz archive of graph inputs" in bad.output and "Traceback" not in bad.output
    (tmp_path / "text.npz").write_text("image,mask\n")
    bad = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "text.npz")])
    assert bad.exit_code == 2 and "its bytes are neither an npz archive nor a numpy array" in bad.output
    (tmp_path / "cut.npz").write_bytes((tmp_path / "in.npz").read_bytes()[:200])
    bad = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "cut.npz")])
    assert bad.exit_code == 2 and "is not an npz archive of graph inputs" in bad.output and "Traceback" not in bad.output
    bad = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.bin")])
    assert bad.exit_code == 2 and "give a path ending in .npz" in bad.output and not list(tmp_path.glob("o.bin*"))


def test_options_that_do_not_apply_to_the_target_say_so(bundles, tmp_path):
    from cicm_deploy import CICMWarning
    from cicm_deploy.runtimes.factory import open_runtime

    bundle = bundles("fp32", "plugin").path
    with pytest.warns(CICMWarning, match="is for TensorRT engines; onnxruntime runs the bundle .* \\(its CICMAugment "
                                          "node runs the reference op\\): the library is not used"):
        open_runtime(bundle, plugin=tmp_path / "libcicm_augment_plugin.so").close()
    with pytest.warns(CICMWarning, match="\\(standard-op routing: no custom op at all\\): the library is not used"):
        open_runtime(bundles("fp32", "onnx").path, plugin=tmp_path / "libcicm_augment_plugin.so").close()
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with pytest.warns(CICMWarning, match=r"execution providers \(CPUExecutionProvider\) .* not used"):
        with pytest.raises(BackendUnavailableError, match="has no sidecar"):  # warned before opening it
            open_runtime(engine, providers=["CPUExecutionProvider"]).load()


def test_inpaint_with_bundle(bundles, tmp_path, photo, hole):
    image, mask = save_image(tmp_path / "p.png", photo), save_mask(tmp_path / "m.png", hole)
    result = CliRunner().invoke(cli, ["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                      "--bundle", str(bundles("fp16", "onnx").path)])
    assert result.exit_code == 0, result.output
    both = CliRunner().invoke(cli, ["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png")])
    assert both.exit_code == 2 and "exactly one of --checkpoint" in both.output


def test_unknown_provider_is_an_error_not_a_silent_fallback(bundles):
    runtime = OnnxRuntimeBackend(bundles("fp32", "onnx").path, providers=["NoSuchExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match=r"NoSuchExecutionProvider is not available .*available here: "):
        runtime.load()
    result = CliRunner().invoke(cli, ["parity", str(bundles("fp32", "onnx").path), "--provider", "NoSuchExecutionProvider"])
    assert result.exit_code == 2 and "is not available in this onnxruntime" in result.output
    result = CliRunner().invoke(cli, ["parity", str(bundles("fp32", "onnx").path), "--provider", "CPUExecutionProvider"])
    assert result.exit_code == 0 and "parity: onnxruntime on CPUExecutionProvider" in result.output
    result = CliRunner().invoke(cli, ["parity", str(bundles("fp32", "onnx").path), "--provider",
                                      "NoSuchExecutionProvider,CPUExecutionProvider"])  # a comma list is two names
    assert result.exit_code == 2 and "NoSuchExecutionProvider is not available" in result.output, result.output
    assert "NoSuchExecutionProvider,CPUExecutionProvider" not in result.output


def test_outputs_go_where_asked_or_fail_in_one_line(bundles, tmp_path):
    bundle = bundles("fp32", "onnx").path
    golden = open_bundle(bundle).goldens()[0]
    np.savez(tmp_path / "in.npz", image=golden.image, mask=golden.mask)
    deep = tmp_path / "new" / "dir" / "out.npz"
    result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"), "-o", str(deep)])
    assert result.exit_code == 0 and deep.is_file(), result.output
    report = tmp_path / "other" / "report.json"
    result = CliRunner().invoke(cli, ["parity", str(bundle), "--json", str(report)])
    assert result.exit_code == 0 and json.loads(report.read_text())["passed"]
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = CliRunner().invoke(cli, ["parity", str(bundle), "--json", str(tmp_path / "blocker" / "r.json")])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and "blocker" in result.output
    assert "Traceback" not in result.output and "parity:" not in result.output  # refused before the check ran


def test_commands_take_the_current_directory_as_a_bundle(bundles, monkeypatch):
    monkeypatch.chdir(bundles("fp32", "onnx").path)
    result = CliRunner().invoke(cli, ["parity", "."])
    assert result.exit_code == 0 and "PASSED" in result.output, result.output


def test_the_readme_recipe_for_run_inputs(bundles, tmp_path):
    """The README's npz recipe for `cicm-deploy run`, as printed: its python line, then the command."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in readme.split("```bash\n")[1:] if "cicm-deploy run model_fp16 --input in.npz" in b)
    script = block[block.index('python -c "') + len('python -c "'):block.index('"\ncicm-deploy run')]
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    result = CliRunner().invoke(cli, ["run", str(bundles("fp16", "onnx").path), "--input", str(tmp_path / "in.npz"),
                                      "-o", str(tmp_path / "out.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "out.npz") as out:
        assert sorted(out) == ["inpainted", "route"] and out["inpainted"].shape == (1, 3, 256, 256)


def test_a_cicmaugment_node_must_list_both_outputs(bundles):
    # TensorRT's parser rejects a plugin node that names fewer outputs than the plugin layer has
    # ("Node has more output tensors than TRT expected"), so the bundle check refuses it first.
    import onnx
    from cicm_deploy.runtimes.bundle import BundleError, _check_plugin_nodes

    model = onnx.load(str(bundles("fp32", "plugin").path / "model.onnx"))
    _check_plugin_nodes(model)  # the exporter writes both
    node = next(n for n in model.graph.node if n.op_type == "CICMAugment")
    del node.output[1:]
    with pytest.raises(BundleError, match=r"CICMAugment node .* has outputs \[.*\]; it needs both: augmented and route"):
        _check_plugin_nodes(model)


def test_run_never_writes_over_its_input_or_into_the_bundle(bundles, tmp_path, monkeypatch):
    bundle = copy_bundle(bundles, tmp_path)
    golden = open_bundle(bundle).goldens()[0]
    np.savez(tmp_path / "in.npz", image=golden.image, mask=golden.mask)
    before = {p.name: p.read_bytes() for p in [tmp_path / "in.npz", *bundle.iterdir()]}
    for out, message in [(tmp_path / "in.npz", "is the --input file"),
                         (tmp_path / "." / "in.npz", "is the --input file"),
                         (bundle / "parity.npz", "is inside the bundle"),
                         (bundle / "sub" / "out.npz", "is inside the bundle")]:
        result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"), "-o", str(out)])
        assert result.exit_code == 2 and message in result.output, (out, result.output)
        assert "inference" not in result.output  # refused before it ran
    assert {p.name: p.read_bytes() for p in [tmp_path / "in.npz", *bundle.iterdir()]} == before
    open_bundle(bundle)  # still verifies

    (tmp_path / "blocker").write_text("a file where a folder should be")
    for out in (tmp_path / "blocker" / "o.npz", tmp_path / "blocker" / "deeper" / "o.npz"):
        result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"), "-o", str(out)])
        assert result.exit_code == 2 and f"{tmp_path / 'blocker'} is a file, where a folder is needed" in result.output
        assert "File exists" not in result.output and "Not a directory" not in result.output
        assert "inference" not in result.output  # refused before it ran

    # a write that fails half-way leaves the earlier file whole and no temporary file beside it
    out = tmp_path / "out.npz"
    out.write_bytes(b"earlier")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", fail)
    result = CliRunner().invoke(cli, ["run", str(bundle), "--input", str(tmp_path / "in.npz"), "-o", str(out)])
    assert result.exit_code == 2 and f"{out}: No space left on device" in result.output, result.output
    assert out.read_bytes() == b"earlier" and not list(tmp_path.glob(".out.npz.*"))
