"""ONNX Runtime's transformer fusions: attention, embedding + LayerNorm, skip + LayerNorm, bias + GELU.

``onnxruntime.transformers.optimizer.optimize_model`` (model_type ``bert``) rewrites the exported
graph into ORT's contrib ops (com.microsoft domain: ``Attention``, ``EmbedLayerNormalization``,
``SkipLayerNormalization``, ``BiasGelu``). Whether that is faster must be measured: on the CPU
provider it was slower on a 384-wide encoder (FIELD-NOTES).

Two things decide whether ``Attention`` is fused at all (transformers 5.24, ORT 1.32):

* the model must have been exported with eager attention (``model.set_attn_implementation("eager")``);
  the SDPA export (transformers' default) is not recognised, only the LayerNorm and GELU fusions happen;
* Hugging Face reshapes to ``(batch, seq, -1, head_size)``, so ORT cannot read the head count from
  the graph and ``num_heads=0`` fails ("Failed to detect num_heads and hidden_size"). This module
  reads it from the graph itself: head size from the reshape, width from the query MatMul's weight.
  A pruned model needs its pruned count (its ``hidden_size`` for ORT is heads x head size); a wrong
  one fuses silently into wrong numbers.

Tried on BertForSequenceClassification exports (full and head-pruned) and a plain CNN (nothing fused).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
from onnx import numpy_helper

from search.core.errors import NotApplicable
from search.transforms.quantize import _quiet_root_logger

MODEL_TYPE = "bert"
CONTRIB_DOMAIN = "com.microsoft"
# 0: ORT's Python fusions only; 1 runs ORT's basic graph optimizations first, through temporary files,
# and fused the same operators on BERT (the session applies its own optimizations at load anyway)
OPT_LEVEL = 0
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "MatMulNBits", "QAttention"})


def _constant(model: onnx.ModelProto, name: str, producers: dict[str, onnx.NodeProto]) -> list[int] | None:
    """An integer constant's values (a Constant node or an initializer), through Identity/Unsqueeze."""
    node = producers.get(name)
    while node is not None and node.op_type in ("Identity", "Unsqueeze"):
        name, node = node.input[0], producers.get(node.input[0])
    if node is not None and node.op_type == "Constant":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return None if value is None else numpy_helper.to_array(value).reshape(-1).tolist()
    init = next((i for i in model.graph.initializer if i.name == name), None)
    return None if init is None else numpy_helper.to_array(init).reshape(-1).tolist()


def _weight_width(model: onnx.ModelProto, name: str, producers: dict[str, onnx.NodeProto]) -> int | None:
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    init = next((i for i in model.graph.initializer if i.name == name), None)
    return int(init.dims[-1]) if init is not None and len(init.dims) == 2 else None


def attention_shapes(model: onnx.ModelProto) -> set[tuple[int, int]]:
    """(heads, heads x head size) of every projection reshaped to ``(batch, seq, -1, head_size)`` after
    ``MatMul`` + ``Add``: what ORT's ``num_heads`` and ``hidden_size`` must be for this graph."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = set()
    for node in (n for n in model.graph.node if n.op_type == "Reshape"):
        concat, add = producers.get(node.input[1]), producers.get(node.input[0])
        if not (concat is not None and concat.op_type == "Concat" and len(concat.input) == 4
                and add is not None and add.op_type == "Add"):
            continue
        heads, size = (_constant(model, concat.input[i], producers) for i in (2, 3))
        matmul = next((producers[i] for i in add.input if i in producers and producers[i].op_type == "MatMul"), None)
        width = _weight_width(model, matmul.input[1], producers) if matmul is not None else None
        if heads == [-1] and size and size[0] > 0 and width and width % size[0] == 0:
            found.add((width // size[0], width))
    return found


def fuse_transformer(model_bytes: bytes) -> tuple[bytes, dict[str, int]]:
    """The model with ORT's transformer fusions applied, and how many of each fused operator it has.

    Raises:
        NotApplicable: when nothing was fused (no attention, LayerNorm or GELU pattern: a CNN).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load_from_string(model_bytes)
    shapes = attention_shapes(model)
    # one head count for the whole graph: where layers differ, attention is left unfused (0 = undetected)
    heads, width = shapes.pop() if len(shapes) == 1 else (0, 0)
    # it warns and logs through the root logger (head count, hidden size mismatch, saving)
    with _quiet_root_logger(), tempfile.TemporaryDirectory() as tmp:
        optimized = optimize_model(model, model_type=MODEL_TYPE, num_heads=heads, hidden_size=width,
                                   opt_level=OPT_LEVEL)
        # ORT's own statistics also count the plain LayerNormalization ops that opset 17 exports
        # unfused: the fused operators are the contrib ops the fusions wrote
        counts = dict(Counter(n.op_type for n in optimized.model.graph.node if n.domain == CONTRIB_DOMAIN))
        if not counts:
            raise NotApplicable("transformer fusion found no attention, LayerNorm or GELU pattern in this graph")
        # saving sorts the graph and declares the com.microsoft opset; serializing optimized.model
        # directly does neither, and ONNX shape inference (quantize_dynamic's first step) then fails
        path = Path(tmp) / "fused.onnx"
        optimized.save_model_to_file(str(path))
        return path.read_bytes(), counts


def is_quantized(model_bytes: bytes) -> bool:
    """Whether the graph already holds quantized operators (fusion then finds fewer patterns)."""
    return any(n.op_type in QUANTIZED_OPS for n in onnx.load_from_string(model_bytes).graph.node)
