"""Quantization with ONNX Runtime's tools: fp16, int8 static QDQ with calibration, int4 weight-only."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from search.core.errors import NotApplicable
from search.runtime.graph_split import sort_topologically
from search.transforms.export import INPUT_NAME

SUPPORTED_BITS = (32, 16, 8, 4)
# How 8 bits are reached: static QDQ calibrated by one of ORT's methods, or dynamic (activations
# quantized at run time from each batch's own range; no calibration data).
INT8_MODES = ("minmax", "entropy", "percentile", "dynamic")
HALF_FORMATS = ("fp16", "bf16")
# How finely int8 weights are scaled: one scale per tensor, or one per output channel (kernels for both on the
# CPU provider, static QDQ and dynamic MatMulInteger/ConvInteger alike).
INT8_GRANULARITIES = ("per_tensor", "per_channel")
INT4_BLOCKS = (16, 32, 64, 128)  # int4 weights per scale (MatMulNBits takes a power of two from 16 on)
BF16_OPSET = 22  # Conv, Relu, MaxPool and most other ops take bfloat16 from opset 22 on


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantizers log progress through the root logger at INFO, and its histogram
    calibrators print() theirs; mute both while they run only."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize(model_bytes: bytes, bits: int, calibration: Mapping[str, np.ndarray] | np.ndarray, batch_size: int = 32,
             mode: str | None = None, granularity: str | None = None) -> bytes:
    """Return the model quantized to ``bits``; 32 returns it unchanged.

    ``mode`` is the int8 method for 8 bits (minmax when None) and the float format for 16
    bits (``fp16`` when None, or ``bf16``). ``granularity`` is how finely weights are scaled: for 8
    bits ``per_tensor`` or ``per_channel`` (None: per-channel static, per-tensor dynamic, what runs
    before the choice existed built), for 4 bits ``block_N`` (None: block_32).

    Raises:
        NotApplicable: when the requested precision would change nothing in this graph.
    """
    if bits == 32:
        return model_bytes
    if bits == 16:
        if mode not in (None, *HALF_FORMATS):
            raise ValueError(f"16-bit format must be one of {HALF_FORMATS}, got {mode!r}")
        return _to_bf16(model_bytes) if mode == "bf16" else _to_fp16(model_bytes)
    mode = mode or "minmax"
    if bits == 8:
        if granularity not in (None, *INT8_GRANULARITIES):
            raise ValueError(f"int8 granularity must be one of {INT8_GRANULARITIES}, got {granularity!r}")
        if mode == "dynamic":
            return _to_int8_dynamic(model_bytes, per_channel=granularity == "per_channel")
        if mode not in INT8_MODES:
            raise ValueError(f"quant_mode must be one of {INT8_MODES}, got {mode!r}")
        return _to_int8_static(model_bytes, calibration, batch_size, mode, per_channel=granularity != "per_tensor")
    if bits == 4:
        return _to_int4_weight_only(model_bytes, int4_block(granularity))
    raise ValueError(f"quant_bits must be one of {SUPPORTED_BITS}, got {bits}")


def _to_fp16(model_bytes: bytes, keep_float32: Sequence[str] = ()) -> bytes:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # keep_io_types: callers keep feeding float32 and reading float32.
    model = convert_float_to_float16(onnx.load_from_string(model_bytes), keep_io_types=True,
                                     op_block_list=[*DEFAULT_OP_BLOCK_LIST, *keep_float32])
    sort_topologically(model)  # the converter appends its input and output Casts at the end
    return model.SerializeToString()


def _to_bf16(model_bytes: bytes) -> bytes:
    """bfloat16 weights and arithmetic, float32 at the model's input and output.

    The model is first raised to opset 22, where most ops take bfloat16; ops that still do
    not stay float32. ORT's fp16 converter decides which ops may change type and where casts
    go; the result is then re-typed from float16 to bfloat16. Weights are rounded from their
    original float32 values, so they keep float32's range (fp16 would clamp them at 65504);
    constants inside nodes go through fp16. A model the opset converter cannot raise is
    refused rather than left mostly float32 under a bf16 label. ONNX Runtime's CPU provider
    has no bfloat16 kernels: targets declare it.
    """
    original = _at_least_opset(onnx.load_from_string(model_bytes), BF16_OPSET)
    if _opset(original) < BF16_OPSET:
        raise NotApplicable(f"bf16 needs the graph at opset {BF16_OPSET}, and ONNX's converter could not raise it")
    float32 = {i.name: numpy_helper.to_array(i) for i in original.graph.initializer
               if i.data_type == onnx.TensorProto.FLOAT}
    model = onnx.load_from_string(_to_fp16(original.SerializeToString(), keep_float32=_ops_without_bf16(original)))
    for init in model.graph.initializer:
        _retype_tensor(init, float32.get(init.name))
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT16:
                attr.i = onnx.TensorProto.BFLOAT16
            if attr.type == onnx.AttributeProto.TENSOR:
                _retype_tensor(attr.t)
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = onnx.TensorProto.BFLOAT16
    return model.SerializeToString()


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model converted up to ``opset``, or as it was if the converter cannot."""
    if _opset(model) >= opset:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset)
    except Exception:  # noqa: BLE001 - an op the converter lacks an adapter for: keep the model
        return model


def _ops_without_bf16(model: onnx.ModelProto) -> list[str]:
    """Ops whose ONNX schema, at the model's opset, does not take bfloat16 (Conv before opset 22):
    they stay float32, with casts around them."""
    opset = _opset(model) or 17
    blocked = set()
    for op in {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}:
        schema = onnx.defs.get_schema(op, opset, "")
        if not schema.inputs:
            continue
        allowed = {t for c in schema.type_constraints if c.type_param_str == schema.inputs[0].type_str
                   for t in c.allowed_type_strs} or {schema.inputs[0].type_str}
        if "tensor(bfloat16)" not in allowed:
            blocked.add(op)
    return sorted(blocked)


def _retype_tensor(tensor: onnx.TensorProto, float32: np.ndarray | None = None) -> None:
    """A float16 tensor rewritten in place as bfloat16 (round to nearest even), from its
    float32 values where they are known."""
    if tensor.data_type != onnx.TensorProto.FLOAT16:
        return
    values = numpy_helper.to_array(tensor).astype(np.float32) if float32 is None else float32.astype(np.float32)
    bits = np.ascontiguousarray(values).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    tensor.ClearField("float_data")
    tensor.ClearField("int32_data")
    tensor.data_type = onnx.TensorProto.BFLOAT16
    tensor.raw_data = rounded.tobytes()


class _Calibration:
    """ORT's CalibrationDataReader protocol over batches of the training split (inputs by name)."""

    def __init__(self, data: Mapping[str, np.ndarray], batch_size: int) -> None:
        rows = len(next(iter(data.values())))
        self._batches = iter([{k: np.ascontiguousarray(v[i:i + batch_size]) for k, v in data.items()}
                              for i in range(0, rows, batch_size)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # the protocol allows it; a single pass is all minmax needs
        pass


def int4_block(granularity: str | None) -> int:
    """The block size ``block_N`` names (32 for None)."""
    if granularity is None:
        return 32
    size = granularity.removeprefix("block_")
    if not size.isdigit() or int(size) not in INT4_BLOCKS:
        raise ValueError(f"int4 granularity must be block_N with N in {INT4_BLOCKS}, got {granularity!r}")
    return int(size)


def _to_int8_static(model_bytes: bytes, calibration: np.ndarray, batch_size: int, method: str,
                    per_channel: bool = True) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        raw, pre, out = (Path(tmp) / name for name in ("raw.onnx", "pre.onnx", "int8.onnx"))
        raw.write_bytes(model_bytes)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
        # QDQ with uint8 activations and int8 weights is the fast path on x86 (see FIELD-NOTES).
        quantize_static(
            str(pre), str(out), _Calibration(_named(calibration), batch_size),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            op_types_to_quantize=_static_op_types(model_bytes),
        )
        # Entropy is ORT's as quantize_static runs it: 128 histogram bins for 128 quantized bins
        # (its extra_options cannot change them), and on the digits CNN it chose minmax's ranges.
        return out.read_bytes()


ATTENTION_SAFE_OPS = ["MatMul", "Gemm", "Gather", "Conv"]


def _static_op_types(model_bytes: bytes) -> list[str] | None:
    """Which ops static int8 quantizes: all it can (None), except in a graph with attention, where only
    the weighted ops are. There the additive mask's huge negative values take an Add's or Softmax's
    whole int8 range: quantizing every op agreed with fp32 on 52 % of a BERT's answers, the weighted
    ops alone on 95 %."""
    graph = onnx.load_from_string(model_bytes).graph
    return ATTENTION_SAFE_OPS if any(node.op_type == "Softmax" for node in graph.node) else None


def _named(calibration: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """Calibration inputs by name; one array is the one-input model's ``input``."""
    if isinstance(calibration, Mapping):
        return dict(calibration)
    return {INPUT_NAME: np.asarray(calibration, dtype=np.float32)}


def _to_int8_dynamic(model_bytes: bytes, per_channel: bool = False) -> bytes:
    """int8 weights; activations quantized per batch at run time (ConvInteger / MatMulInteger). Per-channel
    weights kept an encoder's speed and most of its fidelity that per-tensor lost (FIELD-NOTES)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        raw, out = Path(tmp) / "raw.onnx", Path(tmp) / "int8-dynamic.onnx"
        raw.write_bytes(model_bytes)
        # DefaultTensorType: a fused transformer graph's contrib ops leave some tensors untyped for the quantizer
        quantize_dynamic(str(raw), str(out), weight_type=QuantType.QInt8, per_channel=per_channel,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return out.read_bytes()


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm nodes with constant weights as MatMul (+ Add) in place; return how many.

    ``nn.Linear`` exports as Gemm, which the int4 quantizer does not touch.
    """
    inits = {init.name: init for init in model.graph.initializer}
    rewritten, nodes = 0, []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        weight = weight.T if attrs.get("transB", 0) else weight
        weight_name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return rewritten


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def _to_int4_weight_only(model_bytes: bytes, block_size: int = 32) -> bytes:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load_from_string(model_bytes)
    gemm_to_matmul(model)
    with _quiet_root_logger():
        quantizer = MatMulNBitsQuantizer(model, block_size=block_size, is_symmetric=True)
        quantizer.process()
    result = quantizer.model.model
    converted = sum(node.op_type == "MatMulNBits" for node in result.graph.node)
    if converted == 0:
        raise NotApplicable("int4 weight-only applies to MatMul/Linear weights; "
                            "this graph has none with constant weights")
    return result.SerializeToString()
