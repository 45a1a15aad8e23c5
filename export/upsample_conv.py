"""Nearest 2x upsampling followed by a 3x3 convolution, written as one transposed convolution.

The decoder upsamples (nearest, 2x) and convolves (3x3, padding 1), sometimes after concatenating
a skip connection. On the upsampled half that is the same linear map as a ConvTranspose with
stride 2, kernel 4 and padding 1, whose kernel sums the 3x3 taps that land on the same source
pixel:

    output row 2i   = W[0] x[i-1] + (W[1] + W[2]) x[i]
    output row 2i+1 = (W[0] + W[1]) x[i] + W[2] x[i+1]

(the same along columns), i.e. 16 multiply-adds per source pixel instead of 36, with no upsampled
tensor and, after a concatenation, no concatenated one: the skip connection gets its own 3x3
Conv and the two are added. Results equal the original up to float rounding (sums of weights
taken first: 6e-8 on the default model's composite).

Measured with onnxruntime 1.32 on this project's 2-core CPU (default model, batch 1, 256x256,
node profiles and alternating sessions): folding the two wider decoder stages (64 and 32 output
channels) made the whole graph 4.8 % faster; the 16-channel stage at full resolution was not faster
folded (onnxruntime's ConvTranspose, a GEMM and col2im, took as long as the Conv it replaced),
so convolutions with fewer than ``MIN_OUT_CHANNELS`` outputs keep the original form. Writing the
four phases as 2x2 Convs interleaved by DepthToSpace was slower (DepthToSpace took 3 ms).
ConvTranspose parses in TensorRT 10.x (deconvolution layer).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

MIN_OUT_CHANNELS = 32

# Rows of the 4-tap transposed kernel from the 3 taps of the convolution: kernel tap k holds the
# convolution taps whose upsampled position comes from the same source pixel.
_TAPS = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], np.float64)


def transposed_kernel(weight: np.ndarray) -> np.ndarray:
    """Conv weight [out, in, 3, 3] -> ConvTranspose weight [in, out, 4, 4] (stride 2, padding 1)."""
    return np.einsum("pk,oikl,ql->iopq", _TAPS, weight.astype(np.float64), _TAPS).astype(weight.dtype)


def _attributes(node: Any) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constant_values(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            attrs = _attributes(node)
            if "value" in attrs:
                values[node.output[0]] = numpy_helper.to_array(attrs["value"])
    return values


def _is_nearest_2x(node: Any, values: dict[str, np.ndarray]) -> bool:
    attrs = _attributes(node)
    if node.op_type != "Resize" or attrs.get("mode", b"nearest") != b"nearest":
        return False
    if attrs.get("coordinate_transformation_mode", b"half_pixel") != b"asymmetric" or \
            attrs.get("nearest_mode", b"round_prefer_floor") != b"floor":
        return False
    scales = values.get(node.input[2]) if len(node.input) > 2 else None
    return scales is not None and scales.tolist() == [1.0, 1.0, 2.0, 2.0] and not (len(node.input) > 3 and node.input[3])


def _is_plain_3x3(node: Any) -> bool:
    attrs = _attributes(node)
    return (node.op_type == "Conv" and attrs.get("kernel_shape") == [3, 3] and attrs.get("pads") == [1, 1, 1, 1]
            and attrs.get("strides", [1, 1]) == [1, 1] and attrs.get("dilations", [1, 1]) == [1, 1]
            and attrs.get("group", 1) == 1 and "auto_pad" not in attrs)


def fold_upsample_conv(proto: onnx.ModelProto) -> list[str]:
    """Rewrite ``proto`` in place; returns the names of the convolutions folded."""
    graph = proto.graph
    values = _constant_values(proto)
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    replaced: dict[str, list[Any]] = {}  # node name -> nodes in its place (empty: removed)
    folded = []
    for resize in graph.node:
        if not _is_nearest_2x(resize, values) or resize.output[0] in outputs:
            continue
        users = consumers[resize.output[0]]
        if len(users) != 1:
            continue
        user, skip = users[0], None
        if user.op_type == "Concat":
            if (_attributes(user).get("axis") != 1 or len(user.input) != 2 or user.input[0] != resize.output[0]
                    or len(consumers[user.output[0]]) != 1 or user.output[0] in outputs):
                continue
            skip, conv = user.input[1], consumers[user.output[0]][0]
        else:
            conv = user
        if not _is_plain_3x3(conv) or conv.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[conv.input[1]])
        if weight.shape[0] < MIN_OUT_CHANNELS:
            continue
        bias = conv.input[2] if len(conv.input) > 2 and conv.input[2] else None
        upsampled = weight.shape[1]
        if skip is not None:
            skipped = _channels(proto, skip)
            if not 0 < skipped < upsampled:  # not known: leave it as it is
                continue
            upsampled -= skipped
        name = conv.name or conv.output[0]
        up_weight = f"{name}/upsample_folded.weight"
        graph.initializer.append(numpy_helper.from_array(transposed_kernel(weight[:, :upsampled]), up_weight))
        up_out = conv.output[0] if skip is None else f"{name}/upsample_folded"
        nodes = [helper.make_node("ConvTranspose", [resize.input[0], up_weight] + ([bias] if bias and skip is None else []),
                                  [up_out], name=f"{name}/upsample_folded", kernel_shape=[4, 4], strides=[2, 2],
                                  pads=[1, 1, 1, 1])]
        if skip is not None:
            skip_weight = f"{name}/skip.weight"
            graph.initializer.append(numpy_helper.from_array(weight[:, upsampled:].copy(), skip_weight))
            nodes.append(helper.make_node("Conv", [skip, skip_weight] + ([bias] if bias else []), [f"{name}/skip"],
                                          name=f"{name}/skip", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                          strides=[1, 1], dilations=[1, 1], group=1))
            nodes.append(helper.make_node("Add", [up_out, f"{name}/skip"], [conv.output[0]], name=f"{name}/sum"))
            replaced[user.name or user.output[0]] = []
        replaced[resize.name or resize.output[0]] = []
        replaced[name] = nodes
        folded.append(name)
    if not folded:
        return folded
    kept = []
    for node in graph.node:
        key = node.name or node.output[0]
        kept.extend(replaced.get(key, [node]))
    used = {name for node in kept for name in node.input} | outputs
    kept = [node for node in kept if node.op_type != "Constant" or node.output[0] in used]  # the scales
    del graph.node[:]
    graph.node.extend(kept)
    produced = {name for node in kept for name in node.output}
    stale = [value for value in graph.value_info if value.name not in produced]
    for value in stale:
        graph.value_info.remove(value)
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return folded


def _channels(proto: onnx.ModelProto, tensor: str) -> int:
    """The channel count of ``tensor`` (ONNX shape inference); 0 where it is not known."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    for value in (*inferred.graph.value_info, *inferred.graph.input):
        if value.name == tensor:
            dims = value.type.tensor_type.shape.dim
            return dims[1].dim_value if len(dims) > 1 else 0
    return 0
