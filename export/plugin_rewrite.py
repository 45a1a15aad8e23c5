"""Replace each memory's routing subgraph with one CICMAugment node (``--routing plugin``).

The subgraph is found by name: the exporter names every node after its module, so the nodes of
the memory at level ``l`` are exactly those under ``/model/memories.l/`` (``memory_scope``). Its
two variable inputs are the features [B, C, h, w] and the context weight [B, 1, h, w] (told
apart by their channel count); its outputs are the augmented features (float) and the routes
(int64). The anchors and sets become constant inputs, taken from the model itself rather than
from whatever transposed, folded form the exporter left them in.
"""

from __future__ import annotations


import numpy as np
import onnx
import onnx_graphsurgeon as gs

from cicm_deploy.custom_op import CICM_AUGMENT, MAX_SET_SIZE
from cicm_deploy.memory import keep_count
from cicm_deploy.model import UNetCICM

from .onnx_export import memory_scope


class PluginRewriteError(ValueError):
    """The model or graph cannot be expressed with the CICMAugment op."""


def check_plugin_compatible(model: UNetCICM) -> None:
    cfg = model.config.memory
    if not model.config.cicm_levels:
        raise PluginRewriteError("plugin routing needs a CICM model; this checkpoint is a plain UNet "
                                 "(use --routing onnx)")
    problems = []
    if cfg.mode != "sets":
        problems.append(f"memory mode {cfg.mode!r} (the op implements 'sets')")
    if cfg.region_size != 1:
        problems.append(f"region_size {cfg.region_size} (the op works per position)")
    if cfg.set_size > MAX_SET_SIZE:
        problems.append(f"set_size {cfg.set_size} (the op's CUDA kernel takes at most {MAX_SET_SIZE} vectors a set)")
    if problems:
        raise PluginRewriteError("the CICMAugment op cannot express this model: " + "; ".join(problems)
                                 + ". Export it with --routing onnx")


def _is_constant(tensor: gs.Variable) -> bool:
    """Produced by a Constant node (the exporter writes Unsqueeze axes and the like that way)."""
    return bool(tensor.inputs) and all(node.op == "Constant" for node in tensor.inputs)


def _channels(tensor: gs.Variable) -> int | None:
    shape = tensor.shape
    return shape[1] if shape is not None and len(shape) > 1 and isinstance(shape[1], int) else None


def _int32_reader(route: gs.Variable, graph: gs.Graph) -> gs.Node | None:
    """The Cast to int32 that is the only reader of the memory's int64 route (the exporter narrows the
    route to the graph's int32 output that way), or None."""
    readers = list(route.outputs)
    if route in graph.outputs or len(readers) != 1:
        return None
    reader = readers[0]
    return reader if reader.op == "Cast" and reader.attrs.get("to") == onnx.TensorProto.INT32 else None


def rewrite_to_plugin(proto: onnx.ModelProto, model: UNetCICM) -> onnx.ModelProto:
    """Return a new ModelProto with one CICMAugment node per memory."""
    check_plugin_compatible(model)
    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = gs.import_onnx(inferred)
    top_k = 0 if model.config.memory.augment_scope == "all" else keep_count(
        model.config.memory.set_size, model.config.memory.augment_scope)
    for level, memory in model.memories.items():
        scope = memory_scope(level)
        nodes = [n for n in graph.nodes if n.name.startswith(scope)]
        if not nodes:
            raise PluginRewriteError(f"no nodes named {scope}* in the exported graph; was it written by "
                                     "cicm_deploy.export.onnx_export?")
        inside = {id(n) for n in nodes}
        produced = {t.name for n in nodes for t in n.outputs}
        external = []
        for node in nodes:
            for tensor in node.inputs:
                if (isinstance(tensor, gs.Variable) and tensor.name not in produced and tensor not in external
                        and not _is_constant(tensor)):
                    external.append(tensor)
        outputs = []
        for node in nodes:
            for tensor in node.outputs:
                used_outside = any(id(c) not in inside for c in tensor.outputs) or tensor in graph.outputs
                if used_outside and tensor not in outputs:
                    outputs.append(tensor)
        features = [t for t in external if _channels(t) == memory.channels]
        weights = [t for t in external if _channels(t) == 1]
        augmented = [t for t in outputs if t.dtype == np.float32]
        routes = [t for t in outputs if t.dtype == np.int64]
        if len(external) != 2 or len(features) != 1 or len(weights) != 1 or len(augmented) != 1 or len(routes) > 1:
            raise PluginRewriteError(
                f"the subgraph {scope}* has inputs {[t.name for t in external]} and outputs "
                f"{[t.name for t in outputs]}; expected features, context weight -> augmented[, route]")
        for node in nodes:  # detach the old subgraph; cleanup() removes it
            node.outputs.clear()
        anchors = gs.Constant(f"cicm{level}_anchors", memory.anchors.detach().cpu().float().numpy())
        sets = gs.Constant(f"cicm{level}_sets", memory.sets.detach().cpu().float().numpy())
        route32 = gs.Variable(f"cicm{level}_route", dtype=np.int32)
        narrowed = _int32_reader(routes[0], graph) if routes else None
        if narrowed is not None:  # int32 -> int64 -> int32 is the identity: the op writes that tensor itself
            route32 = narrowed.outputs[0]
            narrowed.outputs.clear()
        graph.nodes.append(gs.Node(
            op=CICM_AUGMENT.name, name=f"/model/memories.{level}/{CICM_AUGMENT.name}", domain=CICM_AUGMENT.domain,
            attrs={"plugin_version": CICM_AUGMENT.version, "plugin_namespace": CICM_AUGMENT.namespace,
                   "top_k": int(top_k)},
            inputs=[features[0], weights[0], anchors, sets], outputs=[augmented[0], route32]))
        if routes and narrowed is None:
            graph.nodes.append(gs.Node(op="Cast", name=f"/model/memories.{level}/RouteCast",
                                       attrs={"to": onnx.TensorProto.INT64}, inputs=[route32], outputs=[routes[0]]))
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    result.ir_version = proto.ir_version
    del result.opset_import[:]
    result.opset_import.extend(proto.opset_import)
    result.opset_import.add(domain=CICM_AUGMENT.domain, version=CICM_AUGMENT.opset_version)
    for info in list(result.graph.value_info):  # shapes inferred before the rewrite are stale now
        result.graph.value_info.remove(info)
    return result
