"""PyTorch -> ONNX with the memory frozen into initializers.

Exporter choice: the TorchScript-based exporter (``dynamo=False``). With torch 2.13 the default
dynamo exporter targets opset 20 (down-converting to 17 drops node metadata) and writes weights
as external data unless told otherwise; the TorchScript exporter writes opset 17 directly, one
file, and names every node after the module that produced it (``/model/memories.3/MatMul``).
Those names are how the plugin rewrite finds the routing subgraph, so they are a contract here,
not decoration. Its deprecation warning is silenced where it is called.

Graph I/O (DESIGN §3): ``image`` float32 [B, 3, H, W] in [0, 1], ``mask`` float32 [B, 1, H, W]
(1 = hole) -> ``inpainted`` float32 [B, 3, H, W] (the composite) and ``route`` int32 [B, h, w],
the bottleneck routes, so parity can compare routing on the deployed graph itself.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
from torch import nn

from cicm_deploy.model import UNetCICM

INPUT_NAMES = ("image", "mask")
OUTPUT_NAMES = ("inpainted", "route")
MAX_IR_VERSION = 10  # TensorRT 10.x (JetPack 6) parses IR <= 10
# Ops this project's graphs may contain, each listed as supported (FP32/FP16) in the ONNX-TensorRT
# parser's operator matrix (onnx-tensorrt docs/operators.md, TensorRT 8.4 through 10.x). OneHot,
# for one, is not: the routing one-hot is written as Equal + Cast instead.
TENSORRT_PARSEABLE_OPS = frozenset({
    "Add", "ArgMax", "AveragePool", "Cast", "Concat", "Constant", "Conv", "Div", "Equal", "Expand", "Flatten",
    "Gather", "Greater", "LeakyRelu", "MatMul", "MaxPool", "Mul", "ReduceSum", "Reshape", "Resize", "Shape",
    "Sigmoid", "Slice", "Softmax", "Sub", "TopK", "Transpose", "Unsqueeze", "Where", "Identity",
    "GreaterOrEqual", "Not", "ReduceMax", "Clip", "ConstantOfShape", "Less", "Pad",
})


class ExportGraph(nn.Module):
    """The deployed graph: composite image and bottleneck routes."""

    def __init__(self, model: UNetCICM) -> None:
        super().__init__()
        self.model = model
        self.route_level = str(max(model.config.cicm_levels)) if model.config.cicm_levels else None

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES if self.route_level is not None else OUTPUT_NAMES[:1]  # plain UNet: no routes

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> Any:
        out = self.model(image, mask)
        if self.route_level is None:
            return out.composite
        return out.composite, out.routes[self.route_level].to(torch.int32)


COMPOSITE_SCOPE = "/model/composite/"  # name prefix of the composite's nodes (UNetCICM.composite)


def memory_scope(level: int | str) -> str:
    """Name prefix of the ONNX nodes the exporter writes for the memory at ``level``."""
    return f"/model/memories.{level}/"


def dynamic_axes(static_hw: tuple[int, int] | None, batch: int | None,
                 outputs: tuple[str, ...] = OUTPUT_NAMES) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name in ("image", "mask", "inpainted"):
        spec: dict[int, str] = {}
        if batch is None:
            spec[0] = "batch"
        if static_hw is None:
            spec.update({2: "height", 3: "width"})
        axes[name] = spec
    route: dict[int, str] = {}
    if batch is None:
        route[0] = "batch"
    if static_hw is None:
        route.update({1: "route_height", 2: "route_width"})
    axes["route"] = route
    return {k: v for k, v in axes.items() if v and (k in INPUT_NAMES or k in outputs)}


def export_onnx(model: UNetCICM, *, opset: int = 17, static_hw: tuple[int, int] | None = None,
                batch: int | None = None) -> Any:
    """Trace ``model`` (eval mode, FP32, CPU) to an ONNX ModelProto (weights inline)."""
    import onnx

    stride = model.config.stride
    height, width = static_hw or (2 * stride, 3 * stride)
    sample_batch = batch or 2
    image = torch.rand(sample_batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(sample_batch, 1, height, width)
    mask[:, :, : height // 2, : width // 2] = 1.0
    graph = ExportGraph(model.float().cpu().eval())
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (image, mask), buffer, dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(graph.output_names),
                          dynamic_axes=dynamic_axes(static_hw, batch, graph.output_names),
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
    return proto


def ops_outside_tensorrt(proto: Any, custom: frozenset[str] = frozenset()) -> list[str]:
    """Op types in ``proto`` that TensorRT's ONNX parser is not known to support (custom ops aside)."""
    return sorted({n.op_type for n in proto.graph.node} - TENSORRT_PARSEABLE_OPS - custom)
