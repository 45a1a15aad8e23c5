"""Mixed-precision ONNX for ``--fp16`` (TensorRT 10+ strongly typed networks read types from it).

Policy: convolutions, activations, upsampling and the decoder in FP16; kept in FP32:
* the memory (scores, argmax, softmax, weighted sum, or the CICMAugment node): its scores F.C
  are where magnitudes meet, and routing must not flip on FP16 rounding;
* the final composite (``/model/composite/``): known pixels are copied from the FP32 input, bit for bit;
* graph inputs and outputs, so callers do not change.

A small pass of our own does the conversion. onnxconverter-common's
``convert_float_to_float16(keep_io_types=True, node_block_list=...)`` was tried on these graphs
(1.16.0): it left the mask's ``Cast(to=FLOAT)`` feeding FP16 nodes (the checker rejects the
graph), cast the composite output back to FP16 when its producer was blocked, and blocks
``Resize`` by default, wrapping every upsampling in two casts. Here every tensor has one type,
a Cast is inserted once per tensor at each precision boundary, and ``Resize`` runs in FP16 with
its FP32 ``scales``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cicm_deploy.custom_op import CICM_AUGMENT

from .onnx_export import COMPOSITE_SCOPE, memory_scope

FP16_MAX = 65504.0
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
# Inputs that ONNX requires to stay FP32 whatever the data type: (op_type, input index).
FP32_ONLY_INPUTS = {("Resize", 1), ("Resize", 2)}


def fp32_node_names(proto: onnx.ModelProto, levels: list[str]) -> set[str]:
    """Nodes that stay FP32: every memory node and the composite's (the exporter adds
    ``constant_computations``)."""
    scopes = tuple(memory_scope(level) for level in levels) + (COMPOSITE_SCOPE,)
    return {n.name for n in proto.graph.node if n.name.startswith(scopes) or n.op_type == CICM_AUGMENT.name}


def constant_computations(proto: onnx.ModelProto) -> set[str]:
    """Names of the nodes that compute on constants only: in a fixed-shape graph, the hole fill's
    neighbour counts (a Conv over a constant ones tensor, its shape from Shape of a static input).
    They stay FP32: runtimes fold them when the graph loads, and onnxruntime's CPU provider has no
    FP16 Conv or Add to fold them with (one warning per node, on every load)."""
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph  # data_prop: through Shape/Slice
    static = {v.name for v in [*inferred.value_info, *inferred.input]
              if v.type.tensor_type.HasField("shape")
              and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
    constant = {init.name for init in proto.graph.initializer}
    names = set()
    for node in proto.graph.node:  # topological order
        if (node.op_type == "Constant" or (node.op_type == "Shape" and node.input[0] in static)
                or all(name in constant for name in node.input if name)):
            constant.update(node.output)
            if node.op_type != "Constant":
                names.add(node.name)
    return names


def convert_to_mixed_fp16(proto: onnx.ModelProto, keep32: set[str]) -> onnx.ModelProto:
    """A new ModelProto: FP16 everywhere but the nodes named in ``keep32`` and the graph I/O."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in
            list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    initializers = {init.name: init for init in graph.initializer}
    for name, init in initializers.items():
        elem[name] = init.data_type
    for node in graph.node:  # shape inference cannot type custom ops; the contract does
        if node.op_type == CICM_AUGMENT.name:
            elem[node.output[0]] = FLOAT
            if len(node.output) > 1:
                elem[node.output[1]] = TensorProto.INT32
    is_float = {name for name, kind in elem.items() if kind == FLOAT}
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))

    def read_as_half_only(name: str) -> bool:
        uses = readers.get(name, [])
        return bool(uses) and all(n.name not in keep32 and (n.op_type, i) not in FP32_ONLY_INPUTS for n, i in uses)

    # The precision each float tensor is produced in. Constants (initializers and Constant
    # nodes) become FP16 only when every reader wants FP16.
    produced_half: set[str] = set()
    for node in graph.node:
        if node.name in keep32:
            continue
        if node.op_type == "Constant":
            if node.output[0] in is_float and read_as_half_only(node.output[0]):
                for attr in node.attribute:
                    if attr.name == "value":
                        attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16)))
                produced_half.add(node.output[0])
            continue
        if node.op_type == "ConstantOfShape" and node.output[0] in is_float:  # its type is its value's
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None:  # the default value: a float32 zero
                value = node.attribute.add()
                value.name, value.type = "value", onnx.AttributeProto.TENSOR
                value.t.CopyFrom(numpy_helper.from_array(np.zeros(1, np.float32)))
            value.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(value.t).astype(np.float16)))
        produced_half.update(out for out in node.output if out in is_float)
    for name, init in initializers.items():
        if init.data_type == FLOAT and read_as_half_only(name):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), name))
            produced_half.add(name)

    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            # named outside every module scope, so that scope-based lookups never pick it up
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"precision_cast_{len(casts)}"))
        return casts[key]

    for node in graph.node:
        half = node.name not in keep32
        for index, name in enumerate(node.input):
            if name not in is_float:
                continue
            want_half = half and (node.op_type, index) not in FP32_ONLY_INPUTS
            have_half = name in produced_half
            if want_half != have_half:
                node.input[index] = cast(name, HALF if want_half else FLOAT)
        if half and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
        new_nodes.append(node)

    # graph outputs stay FP32: rename the FP16 producer's tensor and cast back under the output name
    for output in graph.output:
        if output.name in produced_half:
            inner = f"{output.name}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [output.name], to=FLOAT, name=f"precision_cast_{output.name}"))

    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, {i.name for i in graph.input} | set(initializers)))
    del graph.value_info[:]
    return model


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    return ordered


def precision_report(proto: onnx.ModelProto) -> dict[str, list[str]]:
    """Conv nodes by the element type of their weight: {"float16": [...], "float32": [...]}.

    A weight is an initializer or the output of a Constant node (the hole fill's fixed kernels)."""
    types = {init.name: init.data_type for init in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    types[node.output[0]] = attribute.t.data_type
    report: dict[str, list[str]] = {"float16": [], "float32": []}
    for node in proto.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            kind = types.get(node.input[1])
            report["float16" if kind == HALF else "float32"].append(node.name)
    return report


def largest_magnitudes(proto: onnx.ModelProto, feeds: dict[str, np.ndarray],
                       top: int | None = 5) -> list[tuple[str, float]]:
    """Run the FP32 graph with every float activation exposed; the largest |values| among the
    activations and weights, by tensor (what an FP16 engine would have to hold); all when ``top``
    is None."""
    import onnxruntime as ort

    probe = onnx.shape_inference.infer_shapes(proto)
    existing = {o.name for o in probe.graph.output}
    constants = {out for node in probe.graph.node if node.op_type == "Constant" for out in node.output}
    for info in list(probe.graph.value_info):  # activations: outputs of compute nodes
        if info.type.tensor_type.elem_type == FLOAT and info.name not in existing | constants:
            probe.graph.output.append(info)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, feeds)
    peaks = {n: float(np.abs(v).max()) for n, v in zip(names, values) if v.dtype == np.float32 and v.size}
    for init in proto.graph.initializer:  # weights (scalars and shape constants are not data)
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= 16:
            peaks[init.name] = max(peaks.get(init.name, 0.0), float(np.abs(array).max()))
    return sorted(peaks.items(), key=lambda item: -item[1])[:top]


def half_tensors(proto: onnx.ModelProto, keep32: set[str]) -> set[str]:
    """The tensors ``convert_to_mixed_fp16(proto, keep32)`` holds in FP16: what its FP16 nodes read or write."""
    return {name for node in proto.graph.node if node.name not in keep32 for name in [*node.input, *node.output]}
