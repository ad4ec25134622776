"""Cut an ONNX graph into pipeline stages where few tensors cross, balanced by estimated work.

After node i (nodes in topological order) the live set is the non-constant tensors that nodes
up to i produced and that later nodes or the graph's outputs still need; a cut is allowed
where at most MAX_LIVE tensors, all typed, are live. Each stage takes, by name, what it reads
from before it (all of it live at the previous cut) and gives what it makes that later stages
or the caller need, so running the stages in turn, each fed from the tensors the ones before
it gave, computes exactly what the whole graph does. A tensor live across several cuts is
given once, by the stage that makes it: the caller keeps it until a stage reads it (see
runners.PipelineRunner), rather than every stage in between copying it through.

Graph inputs are never part of a live set: every stage that reads one (an attention mask
read by every layer) is fed it straight from the caller's feeds, cut into the same
micro-batch. Passing them through the stages instead would count them against MAX_LIVE at
every cut and make each stage copy, as an output, an input it may not even read.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import onnx

from search.core.errors import NotApplicable

MAX_COMBINATIONS = 50_000  # beyond this many ways to place the cuts, take evenly spaced ones
MAX_LIVE = 8  # the most tensors a cut may hand on: a layer's state, its masks and its shape values
COST_TIE = 0.01  # cut plans whose costliest stages differ by under this share of all work tie: costs are estimates


@dataclass(frozen=True)
class Cut:
    """The graph may be cut after node ``after``; ``tensors`` are what is live there (what crosses)."""

    after: int
    tensors: tuple[str, ...]


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


def _last_reads(graph: onnx.GraphProto, constant: set[str]) -> dict[str, int]:
    """The index of the last node reading each non-constant tensor; a graph output is read after the last node."""
    last_read: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            if name and name not in constant:
                last_read[name] = index
    for output in graph.output:
        last_read[output.name] = len(graph.node)
    return last_read


def _live_sets(graph: onnx.GraphProto, constant: set[str]) -> Iterator[tuple[int, tuple[str, ...], bool]]:
    """After each node but the last: its index, the live set then, and whether the node added to it.

    Yields only where at most MAX_LIVE tensors are live, and builds a tuple only there, so a graph
    that keeps many tensors live for long is still scanned in linear time.
    """
    last_read = _last_reads(graph, constant)
    dying: dict[int, list[str]] = {}
    for name, index in last_read.items():
        dying.setdefault(index, []).append(name)
    inputs = {i.name for i in graph.input}
    live: dict[str, None] = {}  # a dict keeps the order tensors were made in, so cuts name them reproducibly
    for index, node in enumerate(graph.node[:-1]):
        made = [n for n in node.output if n and n not in constant and n not in inputs and last_read.get(n, -1) > index]
        live.update(dict.fromkeys(made))
        for name in dying.get(index, []):
            live.pop(name, None)
        if len(live) <= MAX_LIVE:
            yield index, tuple(live), bool(made)


def _inside_dynamic_product(name: str, producer: dict[str, onnx.NodeProto]) -> bool:
    """Whether a tensor is inside DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> Mul.

    ONNX Runtime fuses that chain into one kernel (DynamicQuantizeMatMul, MatMulIntegerToFloat),
    which a cut inside it would break; it would also hand on int8 or int32 internals.
    """
    node = producer.get(name)
    if node is not None and node.op_type == "Cast" and node.input[0] in producer:
        node = producer[node.input[0]]  # an accumulator's cast to float is still inside
    return node is not None and node.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")


def _qdq_safe(cut: Cut, producer: dict[str, onnx.NodeProto], last_quantized: dict[str, int]) -> bool:
    """Whether the cut hands on a quantized tensor and splits no DequantizeLinear -> op -> QuantizeLinear unit.

    ONNX Runtime fuses such a unit into one int8 kernel, which a cut on a DequantizeLinear output
    or on a float tensor a later QuantizeLinear reads would break (and the stages would pass float).
    """
    made_by = [producer[t].op_type for t in cut.tensors]
    return ("QuantizeLinear" in made_by and "DequantizeLinear" not in made_by
            and not any(last_quantized.get(t, -1) > cut.after for t in cut.tensors))


def cut_points(model: onnx.ModelProto) -> list[Cut]:
    """Every place at most MAX_LIVE typed tensors separate the graph (nodes sorted topologically).

    A cut comes right after a node that adds to the live set (so every stage gives the next
    something new) and before the last graph output is made (so the last stage has work). It
    never falls inside a dynamically quantized product, and in a QDQ graph only cuts that keep
    its units whole are kept when there are any (see _inside_dynamic_product and _qdq_safe).
    """
    graph = model.graph
    constant = _constant_values(graph)
    typed = {v.name for v in (*graph.value_info, *graph.input, *graph.output) if v.type.tensor_type.elem_type}
    producer = {name: node for node in graph.node for name in node.output}
    outputs = {o.name for o in graph.output}
    last_made = max((i for i, node in enumerate(graph.node) if outputs.intersection(node.output)), default=-1)
    found = [Cut(index, tensors) for index, tensors, added in _live_sets(graph, constant)
             if added and index < last_made
             and all(t in typed and not _inside_dynamic_product(t, producer) for t in tensors)]
    last_quantized = {name: index for index, node in enumerate(graph.node) if node.op_type == "QuantizeLinear"
                      for name in node.input}
    return [c for c in found if _qdq_safe(c, producer, last_quantized)] or found


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


def _plan_costs(chosen: tuple[Cut, ...], prefix: list[float]) -> tuple[float, float, int]:
    """A cut plan's costliest stage, its sum of squared stage costs (low when even) and the tensors it copies."""
    edges = [0, *(c.after + 1 for c in chosen), len(prefix) - 1]
    stage_costs = [prefix[b] - prefix[a] for a, b in itertools.pairwise(edges)]
    return max(stage_costs), sum(c * c for c in stage_costs), sum(len(c.tensors) for c in chosen)


def balanced_cuts(cuts: list[Cut], costs: list[float], stages: int) -> list[Cut]:
    """The ``stages - 1`` cuts that make the costliest stage cheapest.

    Among plans within COST_TIE of the cheapest, the one copying the fewest tensors between
    stages wins, then the cheapest, then the most even.
    """
    if len(cuts) < stages - 1:
        raise NotApplicable(f"the graph separates at {len(cuts)} point(s) with at most {MAX_LIVE} typed tensors "
                            f"live; {stages} pipeline stages need {stages - 1}")
    if math.comb(len(cuts), stages - 1) > MAX_COMBINATIONS:
        step = len(cuts) / stages
        return [cuts[int(step * (k + 1)) - 1] for k in range(stages - 1)]
    prefix = list(itertools.accumulate(costs, initial=0.0))
    plans = {chosen: _plan_costs(chosen, prefix) for chosen in itertools.combinations(cuts, stages - 1)}
    cheapest = min(worst for worst, _, _ in plans.values())
    near = [chosen for chosen, (worst, _, _) in plans.items() if worst <= cheapest + COST_TIE * prefix[-1]]
    return list(min(near, key=lambda chosen: (plans[chosen][2], *plans[chosen][:2])))


def _stage_io(model: onnx.ModelProto, first: int, last: int) -> tuple[list[str], list[str]]:
    """What nodes ``first``..``last`` read from before them (graph inputs included) and make for after them.

    Constants are neither: the extractor copies the nodes that make them into every stage that reads them.
    """
    graph = model.graph
    constant = _constant_values(graph)
    nodes = graph.node[first:last + 1]
    made = {name for node in nodes for name in node.output if name}
    reads = [name for node in nodes for name in node.input if name and name not in constant and name not in made]
    last_read = _last_reads(graph, constant)
    gives = [name for node in nodes for name in node.output if name and last_read.get(name, -1) > last]
    return list(dict.fromkeys(reads)), gives


def split_model(model_bytes: bytes, stages: int) -> list[bytes]:
    """The model as ``stages`` ONNX models; one stage is the model itself.

    Stage k's inputs are graph inputs (fed from the caller's feeds) or outputs of stages before
    it, by name; the graph's outputs are among the stages' outputs, not all from the last one
    when an output is made early.
    """
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if stages == 1:
        return [model_bytes]
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    sort_topologically(model)
    chosen = balanced_cuts(cut_points(model), node_costs(model), stages)
    bounds = [-1, *(c.after for c in chosen), len(model.graph.node) - 1]
    extractor = onnx.utils.Extractor(model)
    return [extractor.extract_model(*_stage_io(model, a + 1, b)).SerializeToString()
            for a, b in itertools.pairwise(bounds)]
