"""Transforms on real models: pruning removes channels, export round-trips, each precision really applies."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search.errors import NotApplicable
from search.training import accuracy, distillation_loss
from search.transforms import check_onnx, distill, export_onnx, prune, quantize
from search.transforms.prune import count_parameters
from search.transforms.quantize import gemm_to_matmul

BATCH = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)


def run(model_bytes: bytes, x: np.ndarray = BATCH) -> np.ndarray:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def ops(model_bytes: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(model_bytes).graph.node}


def test_pruning_removes_channels_and_keeps_the_classes(tiny_cnn):
    pruned = prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    assert count_parameters(pruned) < 0.5 * count_parameters(tiny_cnn)
    assert pruned.features[2].out_channels == 8 and pruned.head.out_features == 10
    assert pruned(torch.from_numpy(BATCH)).shape == (32, 10)


def test_pruning_leaves_the_original_model_alone(tiny_cnn):
    before = count_parameters(tiny_cnn)
    prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    assert count_parameters(tiny_cnn) == before


def test_pruning_rounds_remaining_channels(tiny_cnn):
    pruned = prune(tiny_cnn, 0.3, torch.from_numpy(BATCH[:1]), classifier="head", round_to=8)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_pruning_refuses_rates_outside_0_1(tiny_cnn, rate):
    with pytest.raises(ValueError):
        prune(tiny_cnn, rate, torch.from_numpy(BATCH[:1]))


def test_export_matches_torch_for_any_batch_size(tiny_cnn):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    check_onnx(model_bytes, BATCH[:5])
    for x in (BATCH, BATCH[:7]):
        expected = tiny_cnn(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(run(model_bytes, x), expected, rtol=1e-4, atol=1e-5)


def test_fp32_is_left_unchanged(tiny_cnn):
    model_bytes = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    assert quantize(model_bytes, 32, BATCH) == model_bytes


def test_fp16_halves_weights_and_keeps_float32_io(tiny_cnn):
    fp32 = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    fp16 = quantize(fp32, 16, BATCH)
    assert len(fp16) < 0.7 * len(fp32)
    graph = onnx.load_from_string(fp16).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    np.testing.assert_allclose(run(fp16), run(fp32), atol=2e-2)


def test_int8_is_static_qdq_smaller_and_agrees_with_fp32(digits_workload):
    test = digits_workload.test.x
    fp32 = export_onnx(digits_workload.model, torch.from_numpy(test[:32]))
    int8 = quantize(fp32, 8, digits_workload.train.x[:256])
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8)
    assert len(int8) < 0.35 * len(fp32)  # int8 weights; QDQ scales and zero points cost the rest
    assert np.mean(run(int8, test).argmax(1) == run(fp32, test).argmax(1)) >= 0.97


def test_int8_on_a_tiny_graph_may_grow_which_is_why_size_is_measured(tiny_cnn):
    fp32 = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    int8 = quantize(fp32, 8, BATCH)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8)
    assert len(int8) > 0.9 * len(fp32)


def test_int4_applies_to_linear_layers(tiny_cnn):
    fp32 = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    int4 = quantize(fp32, 4, BATCH)
    assert "MatMulNBits" in ops(int4) and "Gemm" not in ops(int4)
    assert len(int4) < len(fp32)
    check_onnx(int4, BATCH)


def test_int4_on_a_graph_without_matmul_is_refused(conv_only):
    fp32 = export_onnx(conv_only, torch.from_numpy(BATCH))
    with pytest.raises(NotApplicable, match="int4"):
        quantize(fp32, 4, BATCH)


def test_unknown_bits_are_refused(tiny_cnn):
    with pytest.raises(ValueError, match="quant_bits"):
        quantize(export_onnx(tiny_cnn, torch.from_numpy(BATCH)), 3, BATCH)


def test_gemm_rewrite_keeps_outputs(tiny_cnn):
    fp32 = export_onnx(tiny_cnn, torch.from_numpy(BATCH))
    model = onnx.load_from_string(fp32)
    assert gemm_to_matmul(model) == 1
    np.testing.assert_allclose(run(model.SerializeToString()), run(fp32), rtol=1e-5, atol=1e-6)


def test_distillation_loss_at_zero_temperature_is_cross_entropy():
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.arange(8) % 10
    expected = torch.nn.functional.cross_entropy(student, labels)
    assert torch.isclose(distillation_loss(student, teacher, labels, 0.0, 0.9), expected)
    assert not torch.isclose(distillation_loss(student, teacher, labels, 4.0, 0.9), expected)


def test_distillation_recovers_a_heavily_pruned_teacher(digits_workload):
    example = torch.from_numpy(digits_workload.test.x[:1])
    student = prune(digits_workload.model, 0.6, example, digits_workload.classifier, round_to=8)
    collapsed = accuracy(student, digits_workload.test)
    distill(student, digits_workload, temperature=4.0, alpha=0.9, seed=0)
    recovered = accuracy(student, digits_workload.test)
    assert recovered >= 0.9 and recovered > collapsed
