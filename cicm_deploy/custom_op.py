"""The one definition of the CICMAugment custom op (DESIGN §3), shared by the exporter, the
onnxruntime reference op, the TensorRT plugin build and the runtimes. No torch.

    CICMAugment(features, gamma, anchors, sets) -> augmented, route

| input/output | name | type | shape |
|---|---|---|---|
| input 0 | features | float32 | [B, C, H, W] |
| input 1 | gamma | float32 | [B, 1, H, W]: the context weight w per position |
| input 2 | anchors | float32 (constant) | [L, C] |
| input 3 | sets | float32 (constant) | [L, K, C] |
| output 0 | augmented | float32 | [B, C, H, W] = (1 - w) F + w sum_k softmax_k(F.S_lk) S_lk |
| output 1 | route | int32 | [B, H, W] = argmax_l F.A_l (first maximum on ties); always listed (TensorRT's plugin layer has two outputs), may go unused |

Attributes: ``plugin_version`` and ``plugin_namespace`` (strings TensorRT's ONNX parser uses to
find the plugin creator) and ``top_k`` (int, 0 = all K set vectors; else the softmax runs over
the vectors scoring at least the k-th largest, ties kept). Scores, argmax and softmax are FP32.
``gamma`` is the *context weight*: the model maps its predicted corrupted ratio to it (per the
gamma convention) before the op, so the op has one meaning for every model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CustomOpSpec:
    name: str  # ONNX op_type and TensorRT plugin name
    domain: str  # ONNX domain of the node in exported bundles
    version: str  # TensorRT plugin version (attribute plugin_version)
    namespace: str  # TensorRT plugin namespace (attribute plugin_namespace)
    opset_version: int  # version of the custom domain's opset import
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


CICM_AUGMENT = CustomOpSpec(
    name="CICMAugment",
    domain="cicm.deploy",
    version="1",
    namespace="",
    opset_version=1,
    inputs=("features", "gamma", "anchors", "sets"),
    outputs=("augmented", "route"),
)

# The largest set size K the CUDA kernel takes (its per-position softmax weights live in registers
# and local memory): CICM_MAX_SET_SIZE in runtimes/plugin/cicm_augment_kernel.cuh, checked by a test.
MAX_SET_SIZE = 256
