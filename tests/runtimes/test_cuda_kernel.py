"""The CICMAugment CUDA kernel on a GPU against the PyTorch reference (DESIGN §3 tolerances).

FP32: max abs <= 1e-5 on the augmented features and routes identical. FP16 I/O (FP32 math
inside): the whole default model with the kernel in place of its memory keeps image PSNR >= 45 dB
and routing agreement >= 99.9 % against PyTorch FP32. Needs a CUDA GPU and nvcc.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from cicm_deploy.export.goldens import make_inputs
from cicm_deploy.runtimes.kernel_cuda import (
    CudaKernel,
    KernelError,
    build_kernel_library,
)
from cicm_deploy.runtimes.reference_op import cicm_augment

from cicm_deploy.checkpoint import load_model
from cicm_deploy.cli import default_model_path
from cicm_deploy.config import MemoryConfig
from cicm_deploy.memory import ContextMemory, context_weight

pytestmark = pytest.mark.gpu

CASES = [(256, 256, 8), (384, 512, 4)]  # (height, width, images): real photos, masks of every bin


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> CudaKernel:
    if shutil.which("nvcc") is None:
        pytest.skip("gpu: nvcc (the CUDA toolkit) is not installed next to this GPU")
    major, minor = torch.cuda.get_device_capability()
    return CudaKernel(build_kernel_library(tmp_path_factory.mktemp("kernel"), f"{major}{minor}"))


@pytest.fixture(scope="module")
def model():
    loaded, _ = load_model(default_model_path(), map_location="cuda")
    return loaded.eval()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def memory_inputs(model, image, mask):
    """The default model's memory with its inputs for real photos: the bottleneck features and the
    context weights (the output keeps both, the weight as the predicted ratio gamma)."""
    (key, memory), = model.memories.items()
    with torch.no_grad():
        out = model(image, mask)
    return memory, out.features[key], context_weight(out.gammas[key], memory.cfg)


def golden_batch(height, width, count):
    arrays = make_inputs([(height, width, count)], seed=0)
    return (torch.from_numpy(arrays["s0.image"]).cuda(), torch.from_numpy(arrays["s0.mask"]).cuda())


@pytest.mark.parametrize("top_k", [0, 1, 20])
def test_fp32_random_features_match_the_reference(kernel, top_k):
    rng = np.random.default_rng(7)
    features = rng.standard_normal((3, 64, 17, 29)).astype(np.float32)
    gamma = rng.random((3, 1, 17, 29)).astype(np.float32)
    anchors = rng.standard_normal((13, 64)).astype(np.float32)
    sets = (rng.standard_normal((13, 40, 64)) * 0.5).astype(np.float32)
    out, route = kernel.augment(*(torch.from_numpy(a).cuda() for a in (features, gamma, anchors, sets)), top_k=top_k)
    expected, expected_route = cicm_augment(features, gamma, anchors, sets, top_k=top_k)
    assert np.array_equal(route.cpu().numpy(), expected_route)
    assert np.abs(out.cpu().numpy() - expected).max() <= 1e-5


@pytest.mark.parametrize("height, width, count", CASES)
def test_fp32_matches_pytorch_on_the_default_models_features(kernel, model, height, width, count):
    memory, feat, weight = memory_inputs(model, *golden_batch(height, width, count))
    with torch.no_grad():
        expected, expected_route = memory(feat, weight)
    out, route = kernel.augment(feat, weight, memory.anchors, memory.sets)
    assert torch.equal(route.long(), expected_route)
    assert float((out - expected).abs().max()) <= 1e-5
    assert len(torch.unique(route)) > 1  # real routing, not one set everywhere


@pytest.mark.parametrize("height, width, count", CASES)
def test_fp16_kernel_in_the_default_model_keeps_the_fp16_tolerances(kernel, model, height, width, count):
    """Convolutions in FP16 (autocast, as the FP16 bundle) and the kernel's FP16 I/O in place of
    the memory, against PyTorch FP32."""
    image, mask = golden_batch(height, width, count)
    with torch.no_grad():
        expected = model(image, mask)
    (key, memory), = model.memories.items()

    def kernel_memory(feat, weight):
        out, route = kernel.augment(feat.half(), weight.half(), memory.anchors, memory.sets)
        return out, route.long()

    memory.forward = kernel_memory
    try:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            got = model(image, mask)
    finally:
        del memory.forward
    agreement = float((got.routes[key] == expected.routes[key]).double().mean())
    assert agreement >= 0.999, agreement
    assert psnr(got.composite.float(), expected.composite) >= 45.0


def test_fp16_io_alone_stays_within_half_precision(kernel, model):
    memory, feat, weight = memory_inputs(model, *golden_batch(256, 256, 8))
    with torch.no_grad():
        expected, expected_route = memory(feat, weight)
    out, route = kernel.augment(feat.half(), weight.half(), memory.anchors, memory.sets)
    assert float((route.long() == expected_route).double().mean()) >= 0.999
    # FP16 storage of inputs and output: a few units in the last place of the largest values
    assert float((out.float() - expected).abs().max()) <= 4e-3 * float(expected.abs().max())


def test_launch_on_a_side_stream_and_an_empty_batch(kernel):
    memory = ContextMemory(64, MemoryConfig(num_sets=13, set_size=40, init_scale=1.0)).cuda()
    feat, weight = torch.randn(2, 64, 9, 9, device="cuda"), torch.rand(2, 1, 9, 9, device="cuda")
    with torch.no_grad():
        expected, _ = memory(feat, weight)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the inputs were written on the default stream
    with torch.cuda.stream(stream):
        out, _ = kernel.augment(feat, weight, memory.anchors, memory.sets)
    stream.synchronize()
    assert float((out - expected).abs().max()) <= 1e-5
    empty, route = kernel.augment(feat[:0], weight[:0], memory.anchors, memory.sets)
    assert empty.shape == (0, 64, 9, 9) and route.shape == (0, 9, 9)


def test_a_set_larger_than_the_kernel_takes_is_refused(kernel):
    feat, weight = torch.randn(1, 8, 4, 4, device="cuda"), torch.rand(1, 1, 4, 4, device="cuda")
    anchors, sets = torch.randn(2, 8, device="cuda"), torch.randn(2, 257, 8, device="cuda")
    with pytest.raises(KernelError, match="set size above 256"):
        kernel.augment(feat, weight, anchors, sets)
    with pytest.raises(KernelError, match="shapes do not agree"):
        kernel.augment(feat, weight, anchors[:, :4], sets[:, :4, :4])
    with pytest.raises(KernelError, match="must be on the features' device cuda:0; got anchors on cpu"):
        kernel.augment(feat, weight, anchors.cpu(), sets)
