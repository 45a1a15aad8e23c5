"""The TensorRT runtime: its checks against this machine run before the GPU is touched, so every
mismatch is one clear error; real inference needs a GPU and TensorRT (marked `trt`)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cicm_deploy.cli import cli
from cicm_deploy.runtimes.base import BackendUnavailableError
from cicm_deploy.runtimes.tensorrt import EngineMismatchError, TensorRTBackend

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="TensorRT for RTX is not installed (pip install 'cicm-deploy[rtx]')")


def gpu_present() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


no_gpu = pytest.mark.skipif(gpu_present(), reason="a GPU is present: this checks the error a GPU-less machine gives "
                                                  "(the `trt` tests cover the GPU)")


@pytest.fixture(scope="module")
def rtx_engine(bundles, tmp_path_factory):
    engine = tmp_path_factory.mktemp("engine") / "model.engine"
    script = Path(sys.executable).parent / "cicm-deploy"
    done = subprocess.run([str(script), "build", str(bundles("fp16", "onnx").path), "-o", str(engine), "--rtx",
                           "--sm", "86", "--max-shape", "2x256x256"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return engine


def copy_engine(engine: Path, tmp_path: Path) -> Path:
    target = tmp_path / engine.name
    shutil.copy(engine, target)
    shutil.copy(engine.with_name(engine.name + ".json"), target.with_name(target.name + ".json"))
    return target


def edit_sidecar(engine: Path, **changes) -> None:
    path = engine.with_name(engine.name + ".json")
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@needs_rtx
@no_gpu
def test_no_gpu_is_a_clear_error(rtx_engine):
    runtime = TensorRTBackend(rtx_engine)
    assert runtime.bundle.precision == "fp16"
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
        runtime.load()


@needs_rtx
@pytest.mark.parametrize("damage,message", [
    ("version", "was built with tensorrt_rtx 0.9; this machine has tensorrt_rtx"),
    ("bytes", "does not match its sidecar"),
])
def test_engine_mismatches(rtx_engine, tmp_path, damage, message):
    engine = copy_engine(rtx_engine, tmp_path)
    if damage == "version":
        edit_sidecar(engine, tensorrt_version="0.9")
    elif damage == "bytes":
        with open(engine, "ab") as handle:
            handle.write(b"0")
    with pytest.raises(EngineMismatchError, match=message):
        TensorRTBackend(engine).load()


@needs_rtx
def test_engine_from_another_bundle(rtx_engine, bundles, tmp_path):
    engine = copy_engine(rtx_engine, tmp_path)
    with pytest.raises(EngineMismatchError, match="built from another bundle"):
        TensorRTBackend(engine, bundle=bundles("fp32", "onnx").path)


def test_missing_engine_and_sidecar(tmp_path):
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        TensorRTBackend(tmp_path / "none.engine")
    (tmp_path / "x.engine").write_bytes(b"engine")
    with pytest.raises(BackendUnavailableError, match=r"has no sidecar x.engine.json beside it\. .*an engine from "
                                                      r"trtexec or Polygraphy has none.*`cicm-deploy build BUNDLE -o "):
        TensorRTBackend(tmp_path / "x.engine")
    (tmp_path / "x.engine.json").write_text("{}")  # not written by build, or edited
    with pytest.raises(BackendUnavailableError, match="x.engine.json lacks bundle, bundle_files, .*; rebuild the engine"):
        TensorRTBackend(tmp_path / "x.engine")


def test_an_engine_needs_the_tensorrt_it_was_built_with(bundles, tmp_path, monkeypatch):
    """Its sidecar names the module and version: the message says which, and not how to build with --rtx."""
    bundle = bundles("fp32", "onnx")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    sidecar = {"bundle": str(bundle.path), "bundle_files": bundle.manifest["files"], "tensorrt_module": "tensorrt",
               "tensorrt_version": "10.13.0", "gpu": None, "profile": {}, "inputs": [], "outputs": [],
               "precision": "fp32", "routing": "onnx"}
    (tmp_path / "model.engine.json").write_text(json.dumps(sidecar))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "tensorrt" else real(name, *a, **k))
    with pytest.raises(BackendUnavailableError) as caught:
        TensorRTBackend(engine).load()
    assert str(caught.value) == (f"{engine} was built with tensorrt 10.13.0, which is not installed here: it comes "
                                 "with JetPack (apt install python3-libnvinfer) or NVIDIA's TensorRT install")
    result = CliRunner().invoke(cli, ["parity", str(bundle.path), "--backend", "tensorrt", "--engine", str(engine)])
    assert result.exit_code == 2 and "was built with tensorrt 10.13.0" in result.output and "--rtx" not in result.output


@needs_rtx
@no_gpu
def test_cli_engine_paths_fail_cleanly_without_gpu(rtx_engine, bundles, tmp_path, photo, hole):
    from cicm_deploy.images import save_image, save_mask

    image, mask = save_image(tmp_path / "p.png", photo), save_mask(tmp_path / "m.png", hole)
    bundle = str(bundles("fp16", "onnx").path)
    for args in (["parity", bundle, "--backend", "tensorrt", "--engine", str(rtx_engine)],
                 ["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--engine", str(rtx_engine)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "no CUDA GPU is visible" in result.output, result.output
    assert not (tmp_path / "o.png").exists()
    result = CliRunner().invoke(cli, ["parity", bundle, "--backend", "tensorrt"])
    assert result.exit_code == 2 and "needs --engine" in result.output


@pytest.mark.trt
@pytest.mark.parametrize("precision,routing", [("fp32", "onnx"), ("fp16", "onnx"), ("fp32", "plugin"), ("fp16", "plugin")])
def test_tensorrt_parity_on_gpu(bundles, tmp_path, precision, routing):
    """On a machine with a GPU and TensorRT: build an engine per precision and routing mode and pass parity."""
    from cicm_deploy.runtimes.parity import check_parity
    from cicm_deploy.runtimes.tensorrt_build import build_engine
    from cicm_deploy.runtimes.tensorrt_plugin import find_kernel_library

    if routing == "plugin" and find_kernel_library() is None:
        pytest.skip("plugin: the CICMAugment plugin needs the CUDA kernel library; build it first "
                    "(runtimes/plugin/README.md)")  # a build step, not hardware: fails under CICM_STRICT_SKIPS
    engine = tmp_path / f"{precision}_{routing}.engine"
    build_engine(bundles(precision, routing).path, engine, max_shape=(8, 256, 256))
    with TensorRTBackend(engine) as runtime:
        report = check_parity(runtime)
    assert report.passed, "\n".join(report.lines())
    assert np.isfinite([o.max_abs for o in report.outputs]).all()


def test_sidecar_checks_treat_rtx_engines_as_built_for_targets_not_for_the_build_gpu(tmp_path):
    from types import SimpleNamespace

    from cicm_deploy.runtimes.tensorrt import check_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    rtx = SimpleNamespace(__name__="tensorrt_rtx", __version__="1.7")
    full = SimpleNamespace(__name__="tensorrt", __version__="10.13")
    ada, ampere, turing = ({"name": n, "compute_capability": c} for n, c in
                           (("RTX 4090", "8.9"), ("RTX 3090", "8.6"), ("RTX 2080 Ti", "7.5")))

    def sidecar(module, built_on, target=None):
        return {"tensorrt_module": module.__name__, "tensorrt_version": module.__version__, "gpu": built_on,
                "target_compute_capability": target, "plugin": None}

    check_sidecar(sidecar(rtx, ada, "SM86"), rtx, ampere, engine, None)  # built on a 4090 for an 8.6 board: fine
    check_sidecar(sidecar(rtx, ada), rtx, ampere, engine, None)  # the portable default runs on 8.0 and later
    check_sidecar(sidecar(rtx, None, "SM75"), rtx, turing, engine, None)
    with pytest.raises(EngineMismatchError, match="built ahead of time for SM86; .* is compute capability 8.9.*--sm 89"):
        check_sidecar(sidecar(rtx, None, "SM86"), rtx, ada, engine, None)
    with pytest.raises(EngineMismatchError, match="default targets .*8.0 and later.* is 7.5: .*--rtx --sm 75"):
        check_sidecar(sidecar(rtx, ada), rtx, turing, engine, None)
    check_sidecar(sidecar(full, ampere), full, ampere, engine, None)
    with pytest.raises(EngineMismatchError, match="built on a GPU of compute capability 8.9 \\(RTX 4090\\)"):
        check_sidecar(sidecar(full, ada), full, ampere, engine, None)  # full TensorRT: the GPU it was built on


def test_python_plugin_engines_need_the_kernel_library_before_they_load(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import cicm_deploy.runtimes.tensorrt_plugin as tensorrt_plugin
    from cicm_deploy.runtimes.tensorrt import check_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    trt = SimpleNamespace(__name__="tensorrt", __version__="10.13")
    gpu = {"name": "Orin", "compute_capability": "8.7"}
    sidecar = {"tensorrt_module": "tensorrt", "tensorrt_version": "10.13", "gpu": gpu,
               "target_compute_capability": None, "plugin": {"kind": "python", "path": None, "sha256": None}}
    monkeypatch.setattr(tensorrt_plugin, "find_kernel_library", lambda: None)
    with pytest.raises(EngineMismatchError, match="built with the Python CICMAugment plugin, which runs the CUDA kernel "
                                                  "from the plugin library"):
        check_sidecar(sidecar, trt, gpu, engine, None)
    with pytest.raises(EngineMismatchError, match="plugin library .*missing.so does not exist"):
        check_sidecar(sidecar, trt, gpu, engine, tmp_path / "missing.so")
    library = tmp_path / "libcicm_augment_plugin.so"
    library.write_bytes(b"\x7fELF stand-in")
    check_sidecar(sidecar, trt, gpu, engine, library)  # --plugin serves a Python-plugin engine (same name and fields)
    monkeypatch.setattr(tensorrt_plugin, "find_kernel_library", lambda: library)
    check_sidecar(sidecar, trt, gpu, engine, None)


@needs_rtx
def test_the_plugin_source_can_change_within_one_process(tmp_path):
    import tensorrt_rtx as trt

    from cicm_deploy.custom_op import CICM_AUGMENT
    from cicm_deploy.runtimes.tensorrt_plugin import PluginRegistrationError, activate_plugin, make_plugin_classes

    registry = trt.get_plugin_registry()

    def registered():
        return registry.get_creator(CICM_AUGMENT.name, CICM_AUGMENT.version, CICM_AUGMENT.namespace)

    activate_plugin(trt)
    creator = registered()
    activate_plugin(trt)  # again: the same creator, no second registration
    assert creator is not None and registered() is creator
    (tmp_path / "not_a_plugin.so").write_bytes(b"junk")
    with pytest.raises(PluginRegistrationError, match="could not load the plugin library .*not_a_plugin.so"):
        activate_plugin(trt, tmp_path / "not_a_plugin.so")  # the Python creator made way for it first
    assert registered() is None
    outsider = make_plugin_classes(trt)[1]()
    assert registry.register_creator(outsider, CICM_AUGMENT.namespace)
    try:
        with pytest.raises(PluginRegistrationError, match="already registered in this process by code outside"):
            activate_plugin(trt)
    finally:
        registry.deregister_creator(outsider)
    activate_plugin(trt)
    assert registered() is not None


@needs_rtx
def test_the_python_plugin_refuses_sets_larger_than_the_kernel_takes_at_build_time():
    from types import SimpleNamespace

    import tensorrt_rtx as trt

    from cicm_deploy.runtimes.tensorrt_plugin import make_plugin_classes

    plugin = make_plugin_classes(trt)[0]()
    described = [SimpleNamespace(desc=SimpleNamespace(dims=dims)) for dims in
                 ((1, 64, 32, 32), (1, 1, 32, 32), (13, 64), (13, 300, 64))]
    with pytest.raises(ValueError, match="set size K = 300 exceeds the kernel's limit of 256"):
        plugin.configure_plugin(described, [])
    described[3] = SimpleNamespace(desc=SimpleNamespace(dims=(13, 256, 64)))
    plugin.configure_plugin(described, [])
