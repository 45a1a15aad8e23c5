"""The plugin's CMake project (runtimes/plugin/CMakeLists.txt) on a machine with cmake and a C++
compiler but no TensorRT and no GPU: the host-only build produces the host library, a missing
TensorRT stops the configure with the documented message, and CMake reads the op's name, version
and namespace exactly as cicm_deploy.custom_op defines them. No torch."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cicm_deploy.runtimes.kernel_host import LIBRARY_NAME, HostKernel
from cicm_deploy.runtimes.reference_op import cicm_augment

from cicm_deploy.custom_op import CICM_AUGMENT

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "runtimes" / "plugin"
CUSTOM_OP_PY = PLUGIN_DIR.parent.parent / "cicm_deploy" / "custom_op.py"
CMAKE = shutil.which("cmake")
CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
# The status line CMakeLists.txt prints after reading custom_op.py.
OP_LINE = re.compile(r'CICM op: name="([^"]*)" version="([^"]*)" namespace="([^"]*)"')

pytestmark = pytest.mark.skipif(CMAKE is None, reason="cmake is not installed (the plugin build tests need it)")


def configure(source: Path, build: Path, *options: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TensorRT_ROOT", "CUDAARCHS")}
    return subprocess.run([CMAKE, "-S", str(source), "-B", str(build), *options], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def flat(done: subprocess.CompletedProcess) -> str:
    """stdout + stderr with whitespace collapsed: CMake re-wraps the first paragraph of a message."""
    return " ".join((done.stdout + done.stderr).split())


def op_from(done: subprocess.CompletedProcess) -> tuple[str, str, str]:
    match = OP_LINE.search(done.stdout)
    assert match, f"no 'CICM op: ...' line in the configure output:\n{done.stdout}\n{done.stderr}"
    return match.groups()


@pytest.fixture(scope="module")
def host_build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    if CXX is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++, or $CXX) to build the host library")
    build = tmp_path_factory.mktemp("plugin-host")
    configured = configure(PLUGIN_DIR, build, "-DCICM_HOST_ONLY=ON")
    assert configured.returncode == 0, f"host-only configure failed:\n{configured.stdout}\n{configured.stderr}"
    built = subprocess.run([CMAKE, "--build", str(build)], capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, f"host-only build failed:\n{built.stdout}\n{built.stderr}"
    return build, configured


def test_host_only_build_makes_a_working_host_library(host_build, rng):
    build, configured = host_build
    library = build / LIBRARY_NAME
    assert library.is_file(), f"{LIBRARY_NAME} not in {sorted(p.name for p in build.iterdir())}"
    assert "CICM_HOST_ONLY=ON" in configured.stdout
    assert "-- TensorRT" not in configured.stdout and "CUDA compiler" not in configured.stdout  # not looked for
    # the CMake-built library has the ABI kernel_host binds and computes what the reference op does
    features = rng.standard_normal((1, 8, 3, 4)).astype(np.float32)
    gamma = rng.random((1, 1, 3, 4)).astype(np.float32)
    anchors = rng.standard_normal((5, 8)).astype(np.float32)
    sets = rng.standard_normal((5, 6, 8)).astype(np.float32)
    out, route = HostKernel(library).augment(features, gamma, anchors, sets, top_k=2)
    ref_out, ref_route = cicm_augment(features, gamma, anchors, sets, top_k=2)
    assert np.array_equal(route, ref_route)
    assert np.abs(out - ref_out).max() <= 1e-5


def test_cmake_reads_the_op_constant_of_the_python_package(host_build):
    _, configured = host_build
    assert op_from(configured) == (CICM_AUGMENT.name, CICM_AUGMENT.version, CICM_AUGMENT.namespace)


def test_configure_without_tensorrt_fails_with_the_fix(tmp_path):
    # An explicit, empty TensorRT_ROOT is the only place searched, so this holds on any machine.
    empty_root = tmp_path / "no-tensorrt"
    empty_root.mkdir()
    done = configure(PLUGIN_DIR, tmp_path / "build", f"-DTensorRT_ROOT={empty_root}")
    assert done.returncode != 0
    text = flat(done)
    assert "TensorRT not found" in text
    assert "header NvInfer.h -> NOT FOUND" in text and "library nvinfer (libnvinfer.so) -> NOT FOUND" in text
    assert f"TensorRT_ROOT={empty_root}" in text
    for fix in ("libnvinfer-dev", "-DTensorRT_ROOT=/path/to/TensorRT-10.x", "-DCICM_HOST_ONLY=ON"):
        assert fix in text, f"the message does not name the fix {fix!r}:\n{done.stderr}"


def test_configure_on_standard_paths_without_tensorrt_fails(tmp_path):
    standard = [Path(p) / "NvInfer.h" for p in ("/usr/include", "/usr/include/x86_64-linux-gnu",
                                                 "/usr/include/aarch64-linux-gnu", "/usr/local/TensorRT/include",
                                                 "/opt/tensorrt/include", "/usr/local/include")]
    if any(p.exists() for p in standard):
        pytest.skip("TensorRT headers are installed on this machine's standard paths")
    done = configure(PLUGIN_DIR, tmp_path / "build")
    assert done.returncode != 0
    assert "TensorRT not found" in flat(done) and "no TensorRT_ROOT was given" in flat(done)


def copy_tree_with_op(tmp_path: Path, custom_op_text: str) -> Path:
    """A minimal source tree: the plugin folder next to a custom_op.py with the given text."""
    plugin = tmp_path / "src" / "runtimes" / "plugin"
    plugin.mkdir(parents=True)
    for name in ("CMakeLists.txt", "cicm_augment_host.cpp", "cicm_augment_kernel.cuh"):
        shutil.copy(PLUGIN_DIR / name, plugin / name)
    (tmp_path / "src" / "cicm_deploy").mkdir()
    (tmp_path / "src" / "cicm_deploy" / "custom_op.py").write_text(custom_op_text)
    return plugin


def test_op_parsing_follows_edits_to_custom_op_py(tmp_path):
    # Another name, version and namespace, single quotes and odd spacing: CMake must follow the file,
    # and must not take opset_version for version.
    text = CUSTOM_OP_PY.read_text()
    block = text[text.index("CICM_AUGMENT = CustomOpSpec("):]
    edited = (block.replace(f'name="{CICM_AUGMENT.name}"', "name = 'OtherOp'")
              .replace(f'version="{CICM_AUGMENT.version}"', "version='7'")
              .replace(f'namespace="{CICM_AUGMENT.namespace}"', 'namespace="cicm"'))
    assert edited != block, "custom_op.py no longer spells the fields as this test expects; update the test"
    plugin = copy_tree_with_op(tmp_path, text.replace(block, edited))
    done = configure(plugin, tmp_path / "build", "-DCICM_HOST_ONLY=ON")
    assert done.returncode == 0, done.stderr
    assert op_from(done) == ("OtherOp", "7", "cicm")


def test_unreadable_op_definition_fails_clearly(tmp_path):
    plugin = copy_tree_with_op(tmp_path, "CICM_AUGMENT = CustomOpSpec(\n    name=NAME_FROM_ELSEWHERE,\n)\n")
    done = configure(plugin, tmp_path / "build", "-DCICM_HOST_ONLY=ON")
    assert done.returncode != 0
    assert 'could not read name="..." from the CICM_AUGMENT block' in flat(done)


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (the CUDA toolkit builds the plugin's kernel)")
def test_the_kernel_launcher_stays_exported_under_the_plugins_hidden_visibility(tmp_path, monkeypatch):
    """The Python plugin finds cicm_augment_launch in the plugin library through ctypes; the library
    builds with hidden visibility (CMakeLists.txt), so the launcher must be exported explicitly."""
    from cicm_deploy.runtimes.kernel_cuda import build_kernel_library

    library = build_kernel_library(tmp_path, "87", nvcc=NVCC)  # hidden visibility, as the plugin builds
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True,
                             check=True).stdout
    assert re.search(r" T cicm_augment_launch$", symbols, re.MULTILINE), symbols
    from cicm_deploy.runtimes.tensorrt_plugin import KERNEL_ENV_VAR, _launcher

    monkeypatch.setenv(KERNEL_ENV_VAR, str(library))
    import ctypes

    assert _launcher().restype is ctypes.c_int  # loaded and found by name, as enqueue does (no GPU needed for that)


def test_the_python_set_size_limit_is_the_kernels():
    from cicm_deploy.custom_op import MAX_SET_SIZE

    header = (PLUGIN_DIR / "cicm_augment_kernel.cuh").read_text()
    assert re.search(rf"#define CICM_MAX_SET_SIZE {MAX_SET_SIZE}\b", header)


def test_configures_from_an_installed_copy_of_the_package(tmp_path):
    """pip installs the plugin sources at cicm_deploy/runtimes/plugin/, custom_op.py two folders up."""
    package = tmp_path / "site" / "cicm_deploy"
    plugin = package / "runtimes" / "plugin"
    shutil.copytree(PLUGIN_DIR, plugin, ignore=shutil.ignore_patterns("build"))
    shutil.copy(CUSTOM_OP_PY, package / "custom_op.py")
    done = configure(plugin, tmp_path / "build", "-DCICM_HOST_ONLY=ON")
    assert done.returncode == 0, done.stderr
    assert op_from(done) == (CICM_AUGMENT.name, CICM_AUGMENT.version, CICM_AUGMENT.namespace)
    (package / "custom_op.py").unlink()
    done = configure(plugin, tmp_path / "build2", "-DCICM_HOST_ONLY=ON")
    assert done.returncode != 0 and "cannot read the op definition" in flat(done)


def test_the_wheel_carries_the_plugin_sources():
    """kernel_host and kernel_cuda compile the sources next to them, so an installed package needs them."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    data = tomllib.loads((PLUGIN_DIR.parent.parent / "pyproject.toml").read_text())
    assert "cicm_deploy.runtimes.plugin" in data["tool"]["setuptools"]["packages"]
    patterns = data["tool"]["setuptools"]["package-data"]["cicm_deploy.runtimes.plugin"]
    shipped = {p.name for pattern in patterns for p in PLUGIN_DIR.glob(pattern)}
    tracked = {p.name for p in PLUGIN_DIR.iterdir() if p.is_file()}
    assert tracked <= shipped, sorted(tracked - shipped)


TENSORRT_INCLUDE = os.environ.get("CICM_TENSORRT_INCLUDE")  # a TensorRT 10.x/11.x include/ folder


@pytest.mark.skipif(not TENSORRT_INCLUDE, reason="trt: TensorRT's C++ headers are not installed here; set "
                    "CICM_TENSORRT_INCLUDE=/path/to/TensorRT/include to build the C++ plugin against them")
@pytest.mark.skipif(NVCC is None or CXX is None, reason="trt: nvcc or a C++ compiler is missing (the plugin needs both)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_cpp_plugin_builds_and_serves_a_tensorrt_for_rtx_engine(bundles, tmp_path, precision):
    """The real plugin library, compiled against TensorRT's headers, is loaded by TensorRT for RTX's
    registry, its creator builds the layer the ONNX parser asks for, and an SM86 engine builds."""
    pytest.importorskip("tensorrt_rtx", reason="trt: TensorRT for RTX is not installed (pip install 'cicm-deploy[rtx]')")
    root = tmp_path / "tensorrt"
    (root / "lib").mkdir(parents=True)
    (root / "include").symlink_to(Path(TENSORRT_INCLUDE).resolve())
    # CMake's find needs a libnvinfer.so; the plugin uses only TensorRT's headers (its interfaces
    # are virtual), so a stub stands in for the library TensorRT for RTX names differently.
    subprocess.run([CXX, "-shared", "-o", str(root / "lib" / "libnvinfer.so"), "-x", "c++", "/dev/null"], check=True)
    build = tmp_path / "build"
    configured = configure(PLUGIN_DIR, build, f"-DTensorRT_ROOT={root}", "-DCMAKE_CUDA_ARCHITECTURES=86")
    assert configured.returncode == 0, configured.stdout + configured.stderr
    built = subprocess.run([CMAKE, "--build", str(build)], capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    library = build / "libcicm_augment_plugin.so"
    engine = tmp_path / "model.engine"
    done = subprocess.run([sys.executable, "-m", "cicm_deploy.cli", "build", str(bundles(precision, "plugin").path),
                           "-o", str(engine), "--rtx", "--sm", "86", "--plugin", str(library)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    sidecar = json.loads(engine.with_name("model.engine.json").read_text())
    assert sidecar["layers"].get("PLUGIN_V3") == 1 and sidecar["plugin"]["kind"] == "library"
    assert sidecar["precision"] == precision and engine.stat().st_size > 0
