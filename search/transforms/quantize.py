"""Quantization with ONNX Runtime's tools: fp16, int8 static QDQ with calibration, int4 weight-only."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from search.errors import NotApplicable
from search.transforms.export import INPUT_NAME

SUPPORTED_BITS = (32, 16, 8, 4)
# How 8 bits are reached: static QDQ calibrated by one of ORT's methods, or dynamic (activations
# quantized at run time from each batch's own range; no calibration data).
INT8_MODES = ("minmax", "entropy", "percentile", "dynamic")


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


def quantize(model_bytes: bytes, bits: int, calibration: np.ndarray, batch_size: int = 32,
             mode: str = "minmax") -> bytes:
    """Return the model quantized to ``bits``; 32 returns it unchanged. ``mode`` applies to 8 bits.

    Raises:
        NotApplicable: when the requested precision would change nothing in this graph.
    """
    if bits == 32:
        return model_bytes
    if bits == 16:
        return _to_fp16(model_bytes)
    if bits == 8 and mode == "dynamic":
        return _to_int8_dynamic(model_bytes)
    if bits == 8:
        if mode not in INT8_MODES:
            raise ValueError(f"quant_mode must be one of {INT8_MODES}, got {mode!r}")
        return _to_int8_static(model_bytes, calibration, batch_size, mode)
    if bits == 4:
        return _to_int4_weight_only(model_bytes)
    raise ValueError(f"quant_bits must be one of {SUPPORTED_BITS}, got {bits}")


def _to_fp16(model_bytes: bytes) -> bytes:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers keep feeding float32 and reading float32.
    model = convert_float_to_float16(onnx.load_from_string(model_bytes), keep_io_types=True)
    return model.SerializeToString()


class _Calibration:
    """ORT's CalibrationDataReader protocol over batches of the training split."""

    def __init__(self, data: np.ndarray, batch_size: int) -> None:
        self._batches = iter([{INPUT_NAME: data[i:i + batch_size]} for i in range(0, len(data), batch_size)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:  # the protocol allows it; a single pass is all minmax needs
        pass


def _to_int8_static(model_bytes: bytes, calibration: np.ndarray, batch_size: int, method: str) -> bytes:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        raw, pre, out = (Path(tmp) / name for name in ("raw.onnx", "pre.onnx", "int8.onnx"))
        raw.write_bytes(model_bytes)
        quant_pre_process(str(raw), str(pre), skip_symbolic_shape=True)
        # QDQ with uint8 activations and per-channel int8 weights is the fast path on x86 (see FIELD-NOTES).
        quantize_static(
            str(pre), str(out), _Calibration(calibration.astype(np.float32), batch_size),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
        )
        # Entropy is ORT's as quantize_static runs it: 128 histogram bins for 128 quantized bins
        # (its extra_options cannot change them), and on the digits CNN it chose minmax's ranges.
        return out.read_bytes()


def _to_int8_dynamic(model_bytes: bytes) -> bytes:
    """int8 weights; activations quantized per batch at run time (ConvInteger / MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        raw, out = Path(tmp) / "raw.onnx", Path(tmp) / "int8-dynamic.onnx"
        raw.write_bytes(model_bytes)
        quantize_dynamic(str(raw), str(out), weight_type=QuantType.QInt8, per_channel=False)
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
        raise NotApplicable("int4 weight-only applies to MatMul/Linear weights; this graph has none with constant weights")
    return result.SerializeToString()
