"""Cut an ONNX graph into pipeline stages on tensors that separate it, balanced by estimated work.

A tensor separates the graph after node i when it is the only non-constant value that
nodes up to i produce (or the graph takes in) and nodes after i still need. Cutting there
gives stages that each take one tensor and give one tensor, so stage k's output is all
stage k+1 needs: running the stages in turn computes exactly what the whole graph does.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import onnx

from search.errors import NotApplicable

MAX_COMBINATIONS = 50_000  # beyond this many ways to place the cuts, take evenly spaced ones


@dataclass(frozen=True)
class Cut:
    """The graph may be cut after node ``after`` on ``tensor``."""

    after: int
    tensor: str


def _constant_values(graph: onnx.GraphProto) -> set[str]:
    """Initializers and whatever nodes compute from initializers alone (weights' DequantizeLinear)."""
    constant = {init.name for init in graph.initializer}
    for node in graph.node:
        if all(not name or name in constant for name in node.input):
            constant.update(node.output)
    return constant


def sort_topologically(model: onnx.ModelProto) -> None:
    """Put the nodes in an order where each comes after what it reads, in place.

    ONNX asks for it, but not every tool keeps it: ORT's fp16 converter appends its input
    and output Casts at the end of the graph.
    """
    graph = model.graph
    nodes = list(graph.node)
    available = {init.name for init in graph.initializer} | {i.name for i in graph.input} | {""}
    producer = {name: index for index, node in enumerate(nodes) for name in node.output}
    consumers: dict[int, list[int]] = {}
    waiting = []
    for index, node in enumerate(nodes):
        needs = {producer[name] for name in node.input if name not in available and name in producer}
        if any(name not in available and name not in producer for name in node.input):
            raise NotApplicable(f"node {node.name or node.op_type} reads a value nothing produces")
        waiting.append(len(needs))
        for source in needs:
            consumers.setdefault(source, []).append(index)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)  # among runnable nodes, the earliest first: the order changes only where it must
    ordered = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(nodes[index])
        for consumer in consumers.get(index, []):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, consumer)
    if len(ordered) != len(nodes):
        raise NotApplicable("the graph has a cycle")
    del graph.node[:]
    graph.node.extend(ordered)


def cut_points(model: onnx.ModelProto) -> list[Cut]:
    """Every place a single typed tensor separates the graph (sorted, one input, one output).

    In a QDQ graph only cuts on QuantizeLinear outputs are kept when there are any: ONNX
    Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into one int8 kernel, which a
    cut between Conv and QuantizeLinear would break (and the stages would pass int8, not float).
    """
    graph = model.graph
    constant = _constant_values(graph)
    typed = {v.name for v in (*graph.value_info, *graph.input, *graph.output) if v.type.tensor_type.elem_type}
    last_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in constant:
                last_use[name] = index
    for output in graph.output:
        last_use[output.name] = len(graph.node)
    inputs, outputs = {i.name for i in graph.input}, {o.name for o in graph.output}
    live = inputs - constant
    found: list[Cut] = []
    for index, node in enumerate(graph.node[:-1]):
        live.update(name for name in node.output if name and name not in constant)
        live = {name for name in live if last_use.get(name, -1) > index}
        if len(live) == 1:
            (tensor,) = live
            # not the input (a stage with no work), not a tensor already cut on (constant nodes
            # in between keep it the only live value for several positions)
            fresh = not found or found[-1].tensor != tensor
            if tensor in typed and fresh and tensor not in inputs | outputs:
                found.append(Cut(index, tensor))
    quantized = [c for c in found if graph.node[c.after].op_type == "QuantizeLinear"]
    return quantized or found


def _elements(model_values: dict[str, onnx.ValueInfoProto], name: str) -> int:
    """Elements of a tensor, from its inferred shape; a symbolic (batch) or unknown dim counts 1."""
    info = model_values.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return 1
    return math.prod(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                     for d in info.type.tensor_type.shape.dim)


def node_costs(model: onnx.ModelProto) -> list[float]:
    """Work per node, estimated: multiply-adds for convolutions and matrix products, else output elements."""
    graph = model.graph
    values = {v.name: v for v in (*graph.value_info, *graph.input, *graph.output)}
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    costs = []
    for node in graph.node:
        out = _elements(values, node.output[0]) if node.output else 1
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        if weight is None and len(node.input) > 1 and node.input[1] in values:
            dims = values[node.input[1]].type.tensor_type.shape.dim
            weight = tuple(d.dim_value or 1 for d in dims)
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv") and weight:
            costs.append(out * math.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger", "FusedMatMul") and weight:
            costs.append(out * weight[0])
        elif node.op_type == "MatMulNBits":
            k = next((a.i for a in node.attribute if a.name == "K"), 1)
            costs.append(out * k)
        else:
            costs.append(out)
    return costs


def balanced_cuts(cuts: list[Cut], costs: list[float], stages: int) -> list[Cut]:
    """The ``stages - 1`` cuts that make the costliest stage cheapest."""
    if len(cuts) < stages - 1:
        raise NotApplicable(f"the graph separates at {len(cuts)} single-tensor point(s); "
                            f"{stages} pipeline stages need {stages - 1}")
    prefix = list(itertools.accumulate(costs, initial=0.0))

    def worst_stage(chosen: tuple[Cut, ...]) -> tuple[float, float]:
        """The costliest stage; among equals, the most even split (least sum of squares)."""
        edges = [0, *(c.after + 1 for c in chosen), len(costs)]
        stage_costs = [prefix[b] - prefix[a] for a, b in itertools.pairwise(edges)]
        return max(stage_costs), sum(c * c for c in stage_costs)

    if math.comb(len(cuts), stages - 1) > MAX_COMBINATIONS:
        step = len(cuts) / stages
        return [cuts[int(step * (k + 1)) - 1] for k in range(stages - 1)]
    return list(min(itertools.combinations(cuts, stages - 1), key=worst_stage))


def split_model(model_bytes: bytes, stages: int) -> list[bytes]:
    """The model as ``stages`` ONNX models, each feeding the next; one stage is the model itself."""
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if stages == 1:
        return [model_bytes]
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    sort_topologically(model)
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise NotApplicable("pipeline stages are cut for graphs of one input and one output")
    chosen = balanced_cuts(cut_points(model), node_costs(model), stages)
    edges = [model.graph.input[0].name, *(c.tensor for c in chosen), model.graph.output[0].name]
    extractor = onnx.utils.Extractor(model)
    return [extractor.extract_model([a], [b]).SerializeToString() for a, b in itertools.pairwise(edges)]
