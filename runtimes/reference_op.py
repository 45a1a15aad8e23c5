"""Reference implementation of the CICMAugment op (``cicm_deploy.custom_op``) in numpy, and its
registration as an onnxruntime custom op (onnxruntime-extensions), so a plugin-routed bundle runs
and is parity-checked on any machine. Slow by design: it is the specification, not a backend.
No torch.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from cicm_deploy.custom_op import CICM_AUGMENT

ORT_EXTENSIONS_DOMAIN = "ai.onnx.contrib"  # the only domain onnxruntime-extensions' Python ops live in


def cicm_augment(features: np.ndarray, gamma: np.ndarray, anchors: np.ndarray, sets: np.ndarray,
                 top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """features [B, C, H, W], gamma [B, 1, H, W], anchors [L, C], sets [L, K, C] ->
    (augmented [B, C, H, W] in the features' dtype, route int32 [B, H, W]). Math in FP32."""
    b, c, h, w = features.shape
    f = np.ascontiguousarray(features.transpose(0, 2, 3, 1)).reshape(-1, c).astype(np.float32)
    weight = np.ascontiguousarray(gamma.transpose(0, 2, 3, 1)).reshape(-1, 1).astype(np.float32)
    anchors = anchors.astype(np.float32)
    sets = sets.astype(np.float32)
    route = np.argmax(f @ anchors.T, axis=1)  # first maximum on ties, as torch.argmax
    chosen = sets[route]  # [N, K, C]
    logits = np.einsum("nc,nkc->nk", f, chosen)
    if 0 < top_k < logits.shape[1]:
        kth = -np.sort(-logits, axis=1)[:, top_k - 1:top_k]
        logits = np.where(logits >= kth, logits, -np.inf)
    logits = logits - logits.max(axis=1, keepdims=True)
    lam = np.exp(logits)
    lam /= lam.sum(axis=1, keepdims=True)
    ctx = np.einsum("nk,nkc->nc", lam, chosen)
    out = (1.0 - weight) * f + weight * ctx
    augmented = out.reshape(b, h, w, c).transpose(0, 3, 1, 2).astype(features.dtype)
    return np.ascontiguousarray(augmented), route.reshape(b, h, w).astype(np.int32)


_registered = False


def ort_extensions_available() -> bool:
    return importlib.util.find_spec("onnxruntime_extensions") is not None


def register_with_onnxruntime() -> str:
    """Register the reference op with onnxruntime-extensions; returns the library path that a
    ``SessionOptions.register_custom_ops_library`` call needs. Raises ImportError if missing."""
    global _registered
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

    if not _registered:
        @onnx_op(op_type=CICM_AUGMENT.name,
                 inputs=[PyCustomOpDef.dt_float] * 4,
                 outputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32],
                 attrs={"plugin_version": PyCustomOpDef.dt_string, "plugin_namespace": PyCustomOpDef.dt_string,
                        "top_k": PyCustomOpDef.dt_int64})
        def _cicm_augment(features, gamma, anchors, sets, **attrs):
            return cicm_augment(features, gamma, anchors, sets, int(attrs.get("top_k", 0)))

        _registered = True
    return get_library_path()


def retarget_custom_domain(model, domain: str = ORT_EXTENSIONS_DOMAIN) -> int:
    """Move CICMAugment nodes of an onnx ModelProto (in place) to ``domain``; returns how many."""
    count = 0
    for node in model.graph.node:
        if node.op_type == CICM_AUGMENT.name and node.domain == CICM_AUGMENT.domain:
            node.domain = domain
            count += 1
    if count:
        imports = {op.domain: op for op in model.opset_import}
        if domain not in imports:
            model.opset_import.add(domain=domain, version=1)
    return count
