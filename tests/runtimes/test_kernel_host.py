"""The CICMAugment kernel's math on the CPU (host build) against the numpy reference and PyTorch,
and the CUDA source compiling with nvcc for Orin (sm_87) and Hopper (sm_90)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from cicm_deploy.config import MemoryConfig
from cicm_deploy.memory import ContextMemory
from cicm_deploy.runtimes.kernel_host import PLUGIN_DIR, HostKernel, HostKernelError, build_host_library
from cicm_deploy.runtimes.reference_op import cicm_augment


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> HostKernel:
    return HostKernel(build_host_library(tmp_path_factory.mktemp("hostlib")))


def random_case(rng, b=2, c=16, h=5, w=7, num_sets=13, set_size=40, scale=1.0, dtype=np.float32):
    features = (rng.standard_normal((b, c, h, w)) * scale).astype(dtype)
    gamma = rng.random((b, 1, h, w)).astype(dtype)
    anchors = rng.standard_normal((num_sets, c)).astype(np.float32)
    sets = (rng.standard_normal((num_sets, set_size, c)) * 0.5).astype(np.float32)
    return features, gamma, anchors, sets


@pytest.mark.parametrize("top_k", [0, 1, 20])
def test_fp32_matches_reference_op(kernel, rng, top_k):
    case = random_case(rng)
    out, route = kernel.augment(*case, top_k=top_k)
    ref_out, ref_route = cicm_augment(*case, top_k=top_k)
    assert np.array_equal(route, ref_route)
    np.testing.assert_allclose(out, ref_out, atol=1e-6 * max(1.0, np.abs(ref_out).max()), rtol=0)
    assert np.abs(out - ref_out).max() <= 1e-5


def test_fp32_matches_pytorch_memory(kernel):
    torch.manual_seed(0)
    memory = ContextMemory(16, MemoryConfig(num_sets=13, set_size=40, init_scale=1.0))
    feat, weight = torch.randn(2, 16, 6, 6), torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        expected, expected_route = memory(feat, weight)
    out, route = kernel.augment(feat.numpy(), weight.numpy(), memory.anchors.detach().numpy(),
                                memory.sets.detach().numpy())
    assert np.array_equal(route, expected_route.numpy())
    assert np.abs(out - expected.numpy()).max() <= 1e-5


def test_argmax_ties_go_to_the_first_set_like_torch(kernel, rng):
    features, gamma, anchors, sets = random_case(rng, num_sets=4)
    anchors[:] = anchors[0]  # every anchor equal: every score ties
    _, route = kernel.augment(features, gamma, anchors, sets)
    assert (route == 0).all()
    anchors[2] = anchors[0] * 2  # set 2 now wins where the score is positive, set 0 elsewhere
    _, route = kernel.augment(features, gamma, anchors, sets)
    scores = np.einsum("bchw,c->bhw", features.astype(np.float64), anchors[0].astype(np.float64))
    assert np.array_equal(route, np.where(scores > 0, 2, 0))
    assert np.array_equal(route, torch.argmax(torch.from_numpy(
        np.einsum("bchw,lc->bhwl", features, anchors)), dim=-1).numpy())


def test_large_magnitudes_stay_finite_and_exact(kernel, rng):
    case = random_case(rng, scale=300.0)  # logits in the tens of thousands: softmax must subtract the max
    out, route = kernel.augment(*case)
    ref_out, ref_route = cicm_augment(*case)
    assert np.isfinite(out).all()
    assert np.array_equal(route, ref_route)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-3)


def fp16_ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in FP16 units in the last place (adjacent representable values are 1 apart)."""
    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.astype(np.float16).view(np.uint16).astype(np.int32)
        return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)
    return np.abs(ordered(a) - ordered(b))


def check_fp16_io_fp32_math(kernel, case16) -> None:
    """FP16 in and out, FP32 inside: the output is the FP32 result rounded once to FP16 (1 ulp:
    float summation order), which an all-FP16 computation would miss by many ulps."""
    out, route = kernel.augment(*case16)
    assert out.dtype == np.float16
    assert np.isfinite(out).all()
    ref_out, ref_route = cicm_augment(case16[0].astype(np.float32), case16[1].astype(np.float32), *case16[2:])
    assert np.array_equal(route, ref_route)
    assert fp16_ulps(out, ref_out).max() <= 1


def test_fp16_io_with_fp32_math(kernel, rng):
    check_fp16_io_fp32_math(kernel, random_case(rng, dtype=np.float16))


def test_fp16_io_with_scores_beyond_the_fp16_range(kernel, rng):
    features, gamma, anchors, sets = random_case(rng, dtype=np.float32, scale=4000.0)
    case16 = (np.clip(features, -6e4, 6e4).astype(np.float16), gamma.astype(np.float16), anchors, sets)
    scores = np.einsum("bchw,lc->bhwl", case16[0].astype(np.float32), anchors)
    assert np.abs(scores).max() > 65504  # the case is what it claims: FP16 scores would overflow
    check_fp16_io_fp32_math(kernel, case16)


def test_half_conversion_round_trips_every_value(kernel):
    bits = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16)
    values = bits.view(np.float16).astype(np.float32)
    finite = np.isfinite(values)
    for b, v in zip(bits[finite][::97], values[finite][::97]):
        assert kernel.lib.cicm_half_to_float(int(b)) == v
        assert kernel.lib.cicm_float_to_half(float(v)) == b
    for v in (65504.0, 65520.0, 1e-8, -2.5e-5, 3.14159):  # overflow to inf, underflow, subnormal, rounding
        with np.errstate(over="ignore"):
            expected = np.float16(v).view(np.uint16)
        assert kernel.lib.cicm_float_to_half(v) == expected


def test_bad_arguments(kernel, rng):
    features, gamma, anchors, sets = random_case(rng, set_size=300)
    with pytest.raises(HostKernelError, match="status 2"):
        kernel.augment(features, gamma, anchors, sets)
    with pytest.raises(HostKernelError, match="both be float32 or float16"):
        kernel.augment(features, gamma.astype(np.float16), anchors, sets[:, :40])


@pytest.mark.parametrize("arch", ["sm_87", "sm_90"])
def test_cuda_kernel_compiles(tmp_path, arch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (CUDA toolkit) is not installed")
    done = subprocess.run([nvcc, "-std=c++17", f"-arch={arch}", "-c", str(PLUGIN_DIR / "cicm_augment_kernel.cu"),
                           "-o", str(tmp_path / f"kernel_{arch}.o")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / f"kernel_{arch}.o").stat().st_size > 0


def test_the_cuda_kernel_library_is_built_whole_or_not_at_all(tmp_path, monkeypatch):
    """nvcc writes to a temporary name: a failed (or killed) build leaves no library to be loaded later."""
    from cicm_deploy.runtimes import kernel_cuda

    script = tmp_path / "nvcc"
    # writes an empty output, as a build killed half way would, then fails
    script.write_text("#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && : > \"$2\"; shift; done\n"
                      "echo 'error: planted' >&2; exit 1\n")
    script.chmod(0o755)
    with pytest.raises(kernel_cuda.KernelError, match="planted"):
        kernel_cuda.build_kernel_library(tmp_path / "out", "90", nvcc=str(script))
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "junk.so").write_bytes(b"")
    with pytest.raises(kernel_cuda.KernelError, match="not a library exporting cicm_augment_launch"):
        kernel_cuda.CudaKernel(tmp_path / "junk.so")
