"""Transforms on real models: pruning removes channels, export round-trips, each precision really applies,
distillation recovers a pruned teacher."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search.core.errors import NotApplicable
from search.transforms.training import accuracy, distillation_loss
from search.transforms import check_onnx, distill, export_onnx, prune, quantize
from search.transforms.prune import count_parameters
from search.transforms.quantize import gemm_to_matmul

BATCH = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
# Zero-mean inputs: on them a model with a scaled head gives outputs that differ between inputs by units, where
# BATCH through tiny_cnn gives outputs within ~0.25 of each other (a model returning their mean came within 0.1).
SPREAD = np.random.default_rng(1).standard_normal((64, 1, 8, 8)).astype(np.float32)


def run(model_bytes: bytes, x: np.ndarray = BATCH) -> np.ndarray:
    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def ops(model_bytes: bytes) -> set[str]:
    return {node.op_type for node in onnx.load_from_string(model_bytes).graph.node}


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def disagreement(got: np.ndarray, want: np.ndarray, max_rel: float = 0.3, rms_rel: float = 0.15,
                 agree: float = 0.95) -> list[str]:
    """Why ``got`` does not stand in for the reference outputs ``want`` (empty when it does).

    Errors are measured against the spread of ``want`` between inputs (the std of its deviation from
    the batch mean), not in absolute units. An output that ignores its input (any constant, the batch
    mean) has an rms error of at least that spread, so ``rms_rel`` < 1 rejects it at any logit scale.
    The predicted class must also agree on at least ``agree`` of the inputs.
    """
    want = np.asarray(want, dtype=np.float64)
    error = np.abs(np.asarray(got, dtype=np.float64) - want)
    spread = float(np.std(want - want.mean(0)))
    found = [] if spread > 0 else ["the reference outputs do not vary between inputs: nothing to compare against"]
    if error.max() > max_rel * spread:
        found.append(f"max error {error.max():.4g} > {max_rel} x spread {spread:.4g}")
    if np.sqrt(np.mean(error ** 2)) > rms_rel * spread:
        found.append(f"rms error {np.sqrt(np.mean(error ** 2)):.4g} > {rms_rel} x spread {spread:.4g}")
    same_class = float(np.mean(np.argmax(got, 1) == np.argmax(want, 1)))
    if same_class < agree:
        found.append(f"the predicted class agrees on {same_class:.1%} of inputs < {agree:.0%}")
    return found


def assert_same_outputs(got: np.ndarray, want: np.ndarray, **tolerances: float) -> None:
    reasons = disagreement(got, want, **tolerances)
    assert not reasons, "; ".join(reasons)


@pytest.fixture()
def digits(request):
    """The session's digits workload, trained (on first use) and used with one torch thread.

    On a 2-core machine shared with other jobs, torch's default of 2 threads trained the
    teacher about 3x slower than 1 thread did.
    """
    with torch_threads(1):
        yield request.getfixturevalue("digits_workload")


@pytest.fixture()
def mlp() -> nn.Module:
    """Weights dominate the graph, so int8 is smaller (on tiny_cnn QDQ overhead outweighs the savings).
    The classifier's weights are scaled so that on SPREAD its logits span units and 7-8 classes win."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10)).eval()
    with torch.no_grad():
        model[3].weight.mul_(10)
    return model


@pytest.fixture()
def fp32(tiny_cnn) -> bytes:
    return export_onnx(tiny_cnn, torch.from_numpy(BATCH))


@pytest.fixture()
def spread_fp32() -> bytes:
    """tiny_cnn's architecture with its head's weights scaled 30x: on SPREAD its logits span ~6 units and
    differ between inputs by ~0.6 (std), so a precision that loses the input shows."""
    from tests.conftest import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.head.weight.mul_(30)
    return export_onnx(model, torch.from_numpy(SPREAD))


# --- prune -------------------------------------------------------------------------------------

def test_pruning_at_half_drops_parameters(tiny_cnn):
    pruned = prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    assert count_parameters(pruned) < 0.5 * count_parameters(tiny_cnn)
    assert pruned.features[0].out_channels == 4 and pruned.features[2].out_channels == 8


def test_pruned_model_keeps_output_shape_and_all_classes(tiny_cnn):
    pruned = prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    assert pruned.head.out_features == 10
    assert torch_out(pruned, BATCH).shape == (32, 10)
    assert torch_out(pruned, BATCH[:3]).shape == (3, 10)


def test_pruning_without_a_classifier_name_keeps_the_last_layer(tiny_cnn):
    pruned = prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]))
    assert pruned.head.out_features == 10


def test_removed_share_is_what_pruning_really_removed(tiny_cnn):
    from search.transforms.prune import removed_share

    assert removed_share(tiny_cnn, prune(tiny_cnn, 0.0, torch.from_numpy(BATCH[:1]))) == 0
    half = prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    assert removed_share(tiny_cnn, half, "head") == pytest.approx(0.5, abs=0.1)


def test_pruning_leaves_the_original_model_alone(tiny_cnn):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    prune(tiny_cnn, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    after = tiny_cnn.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_pruning_at_zero_is_an_equal_copy(tiny_cnn):
    copy = prune(tiny_cnn, 0.0, torch.from_numpy(BATCH[:1]))
    assert copy is not tiny_cnn
    np.testing.assert_array_equal(torch_out(copy, BATCH), torch_out(tiny_cnn, BATCH))


def test_pruning_rounds_remaining_channels(tiny_cnn):
    pruned = prune(tiny_cnn, 0.3, torch.from_numpy(BATCH[:1]), classifier="head", round_to=8)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths), widths


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_pruning_refuses_rates_outside_0_1(tiny_cnn, rate):
    with pytest.raises(ValueError, match="prune rate"):
        prune(tiny_cnn, rate, torch.from_numpy(BATCH[:1]))


# --- export ------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [32, 5, 1])
def test_export_matches_torch_for_any_batch_size(tiny_cnn, fp32, batch):
    x = BATCH[:batch]
    check_onnx(fp32, x)
    np.testing.assert_allclose(run(fp32, x), torch_out(tiny_cnn, x), rtol=1e-5, atol=1e-5)


def test_export_has_a_dynamic_batch_dimension(fp32):
    graph = onnx.load_from_string(fp32).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_check_onnx_refuses_bytes_that_are_not_a_model():
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidProtobuf):
        check_onnx(b"not an onnx model", BATCH)


# --- quantize ----------------------------------------------------------------------------------

def test_fp32_returns_identical_bytes(fp32):
    assert quantize(fp32, 32, BATCH) == fp32


def test_fp16_is_smaller_close_and_keeps_float32_io(spread_fp32):
    fp16 = quantize(spread_fp32, 16, SPREAD)
    assert len(fp16) < 0.7 * len(spread_fp32)
    graph = onnx.load_from_string(fp16).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out = run(fp16, SPREAD)
    assert out.dtype == np.float32
    assert_same_outputs(out, run(spread_fp32, SPREAD), max_rel=0.02, rms_rel=0.01, agree=1.0)  # seen: 0.002, 0.001


def test_int8_is_static_qdq_and_smaller(mlp):
    fp32 = export_onnx(mlp, torch.from_numpy(BATCH))
    int8 = quantize(fp32, 8, SPREAD)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8)
    assert len(int8) < 0.5 * len(fp32)
    check_onnx(int8, BATCH)
    assert_same_outputs(run(int8, SPREAD), run(fp32, SPREAD), agree=0.9)


def _activation_scales(model_bytes: bytes) -> dict[str, float]:
    """The scale of every QuantizeLinear: calibrated activation ranges (weights are pre-quantized)."""
    model = onnx.load_from_string(model_bytes)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[1] in inits and inits[n.input[1]].size == 1}


def test_int8_percentile_calibration_narrows_the_activation_ranges(fp32, spread_fp32):
    minmax, percentile = quantize(fp32, 8, BATCH, mode="minmax"), quantize(fp32, 8, BATCH, mode="percentile")
    narrower = [_activation_scales(percentile)[k] <= v for k, v in _activation_scales(minmax).items()]
    assert all(narrower) and _activation_scales(percentile) != _activation_scales(minmax)
    assert_same_outputs(run(quantize(spread_fp32, 8, SPREAD, mode="percentile"), SPREAD), run(spread_fp32, SPREAD))


def test_int8_entropy_calibration_gives_a_static_qdq_model(spread_fp32):
    entropy = quantize(spread_fp32, 8, SPREAD, mode="entropy")
    assert "QuantizeLinear" in ops(entropy)
    assert_same_outputs(run(entropy, SPREAD), run(spread_fp32, SPREAD))


def test_int8_dynamic_quantizes_activations_at_run_time(spread_fp32):
    dynamic = quantize(spread_fp32, 8, SPREAD, mode="dynamic")
    assert "DynamicQuantizeLinear" in ops(dynamic) and "QuantizeLinear" not in ops(dynamic)
    assert_same_outputs(run(dynamic, SPREAD), run(spread_fp32, SPREAD))


def _weight_scale_sizes(model_bytes: bytes) -> set[int]:
    """The sizes of the scales the quantizer stored for weights (1: per tensor; a channel count: per channel)."""
    model = onnx.load_from_string(model_bytes)
    return {onnx.numpy_helper.to_array(i).size for i in model.graph.initializer
            if i.name.endswith("_scale") and i.data_type == onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("mode", ["minmax", "dynamic"])
def test_int8_granularity_really_applies_per_tensor_or_per_channel(spread_fp32, mode):
    per_tensor = quantize(spread_fp32, 8, SPREAD, mode=mode, granularity="per_tensor")
    per_channel = quantize(spread_fp32, 8, SPREAD, mode=mode, granularity="per_channel")
    assert _weight_scale_sizes(per_tensor) == {1}, "one scale per tensor"
    assert max(_weight_scale_sizes(per_channel)) > 1, "a scale per output channel"
    for model in (per_tensor, per_channel):
        assert_same_outputs(run(model, SPREAD), run(spread_fp32, SPREAD))
    with pytest.raises(ValueError, match="granularity"):
        quantize(spread_fp32, 8, SPREAD, mode=mode, granularity="per_row")


def test_int4_block_size_is_the_one_asked_for(mlp):
    fp32 = export_onnx(mlp, torch.from_numpy(BATCH))
    for block in (16, 64):
        nodes = [n for n in onnx.load_from_string(quantize(fp32, 4, BATCH, granularity=f"block_{block}")).graph.node
                 if n.op_type == "MatMulNBits"]
        assert nodes and all(onnx.helper.get_attribute_value(a) == block for n in nodes for a in n.attribute
                             if a.name == "block_size")
    with pytest.raises(ValueError, match="block_N"):
        quantize(fp32, 4, BATCH, granularity="block_24")


def test_the_output_comparison_rejects_outputs_that_ignore_the_input(fp32, spread_fp32):
    """What the precision tests' comparison is worth: a model that returns the batch mean, one input's
    answer for every input, or a constant fails it, at any logit scale."""
    for model, x in ((spread_fp32, SPREAD), (fp32, BATCH)):
        want = run(model, x)
        fakes = {"batch mean": want.mean(0), "first input's answer": want[0], "median": np.median(want, 0),
                 "zeros": np.zeros(want.shape[1], dtype=np.float32)}
        for name, row in fakes.items():
            assert disagreement(np.broadcast_to(row, want.shape), want), f"{name} passed as the model's outputs"
        assert not disagreement(want.copy(), want)
    # the absolute tolerance this replaces let the batch mean through on tiny_cnn's outputs
    tiny = run(fp32, BATCH)
    assert np.allclose(np.broadcast_to(tiny.mean(0), tiny.shape), tiny, atol=0.1)


def test_int8_unknown_mode_is_refused(fp32):
    with pytest.raises(ValueError, match="quant_mode"):
        quantize(fp32, 8, BATCH, mode="fuzzy")


def test_int8_calibration_prints_nothing(fp32, capsys):
    quantize(fp32, 8, BATCH, mode="entropy")
    assert capsys.readouterr().out == ""


def test_int8_on_a_tiny_graph_is_quantized_even_if_not_smaller(fp32):
    int8 = quantize(fp32, 8, BATCH)
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8)
    check_onnx(int8, BATCH)


def test_int4_turns_linear_layers_into_matmul_nbits(fp32):
    int4 = quantize(fp32, 4, BATCH)
    assert "MatMulNBits" in ops(int4) and "Gemm" not in ops(int4)
    assert len(int4) < len(fp32)
    check_onnx(int4, BATCH)


def test_int4_really_applies_to_linear_layers_the_size_says_so(mlp):
    fp32 = export_onnx(mlp, torch.from_numpy(BATCH))
    assert "Gemm" in ops(fp32)  # nn.Linear exports as Gemm, which the int4 quantizer alone skips
    int4 = quantize(fp32, 4, BATCH)
    assert len(int4) < 0.2 * len(fp32)  # 4 of 32 bits per weight, plus a scale per block of 32
    # 16 levels per weight move the logits more than int8 does (seen: max 0.33-0.56, rms 0.11-0.13 of the spread)
    assert_same_outputs(run(int4, SPREAD), run(fp32, SPREAD), max_rel=0.8, rms_rel=0.25, agree=0.85)


def test_bf16_halves_the_weights_keeps_float32_io_and_computes_the_same_classes(spread_fp32):
    from onnx.reference import ReferenceEvaluator

    bf16 = quantize(spread_fp32, 16, SPREAD, mode="bf16")
    model = onnx.load_from_string(bf16)
    onnx.checker.check_model(model)  # typed and topologically sorted
    assert all(i.data_type == onnx.TensorProto.BFLOAT16 for i in model.graph.initializer if i.dims)
    assert abs(len(bf16) - len(quantize(spread_fp32, 16, SPREAD))) < 0.05 * len(bf16)  # 16 bits a weight, as fp16
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # ORT's CPU provider has no bf16 kernels; ONNX's reference evaluator runs every op in bf16.
    got = ReferenceEvaluator(model).run(None, {"input": SPREAD})[0]
    want = ReferenceEvaluator(onnx.load_from_string(spread_fp32)).run(None, {"input": SPREAD})[0]
    assert got.dtype == np.float32
    assert_same_outputs(got, want, max_rel=0.2, rms_rel=0.1)  # bf16 keeps ~3 significant digits


def test_bf16_is_refused_by_the_cpu_provider_rather_than_run_in_float32(fp32):
    with pytest.raises(Exception, match="(?i)implementation|bfloat16"):
        run(quantize(fp32, 16, BATCH, mode="bf16"))


def test_fp16_models_are_topologically_sorted(fp32):
    onnx.checker.check_model(onnx.load_from_string(quantize(fp32, 16, BATCH)))


def test_int4_on_a_graph_without_matmul_is_not_applicable(conv_only):
    fp32 = export_onnx(conv_only, torch.from_numpy(BATCH))
    with pytest.raises(NotApplicable, match="int4"):
        quantize(fp32, 4, BATCH)


@pytest.mark.parametrize("bits", [3, 0, 64])
def test_unknown_bits_are_refused(fp32, bits):
    with pytest.raises(ValueError, match="quant_bits"):
        quantize(fp32, bits, BATCH)


def test_gemm_to_matmul_keeps_outputs(fp32):
    model = onnx.load_from_string(fp32)
    assert gemm_to_matmul(model) == 1
    rewritten = model.SerializeToString()
    assert "Gemm" not in ops(rewritten) and "MatMul" in ops(rewritten)
    np.testing.assert_allclose(run(rewritten), run(fp32), rtol=1e-5, atol=1e-6)


def test_gemm_to_matmul_on_a_graph_without_gemm_changes_nothing(conv_only):
    fp32 = export_onnx(conv_only, torch.from_numpy(BATCH))
    model = onnx.load_from_string(fp32)
    assert gemm_to_matmul(model) == 0
    np.testing.assert_allclose(run(model.SerializeToString()), run(fp32), rtol=1e-6)


# --- distillation ------------------------------------------------------------------------------

def test_distillation_loss_at_zero_temperature_is_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.arange(8) % 10
    expected = torch.nn.functional.cross_entropy(student, labels)
    assert torch.isclose(distillation_loss(student, teacher, labels, 0.0, 0.9), expected)
    assert torch.isclose(distillation_loss(student, None, labels, 4.0, 0.9), expected)
    assert not torch.isclose(distillation_loss(student, teacher, labels, 4.0, 0.9), expected)


def test_distillation_loss_with_the_teacher_itself_is_only_the_hard_part():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 10), torch.arange(8) % 10
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isclose(distillation_loss(logits, logits.clone(), labels, 4.0, 0.9), 0.1 * hard, atol=1e-6)


@pytest.mark.parametrize("temperature, alpha", [(-1.0, 0.5), (2.0, 1.5), (2.0, -0.1)])
def test_distill_refuses_bad_temperature_or_alpha(tiny_workload, temperature, alpha):
    with pytest.raises(ValueError, match="distillation"):
        distill(tiny_workload.model, tiny_workload, temperature, alpha, seed=0)


def test_distill_returns_the_val_accuracy_of_the_weights_it_leaves_never_worse(tiny_workload):
    student = prune(tiny_workload.model, 0.5, torch.from_numpy(BATCH[:1]), classifier="head")
    start = accuracy(student, tiny_workload.val)
    val = distill(student, tiny_workload, temperature=2.0, alpha=0.5, seed=0)
    assert val == pytest.approx(accuracy(student, tiny_workload.val))
    assert val >= start


@pytest.mark.slow
def test_distillation_recovers_the_digits_teacher_pruned_by_half(digits):
    example = torch.from_numpy(digits.test.x[:1])
    student = prune(digits.model, 0.5, example, digits.classifier)
    distill(student, digits, temperature=4.0, alpha=0.9, seed=0)
    assert accuracy(student, digits.test) >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("bits, mode", [(16, "fp16"), (8, "minmax"), (8, "entropy"), (8, "percentile"),
                                        (8, "dynamic"), (4, None)])
def test_each_precision_keeps_the_digits_teachers_outputs(digits, bits, mode):
    """On a trained model and real held-out inputs (10 classes, logits spanning ~17 units), every precision
    stays close relative to how much the outputs move between inputs (seen: max 0.1, rms 0.035 of it), and the
    comparison rejects the batch mean."""
    test = digits.test.x
    fp32 = export_onnx(digits.model, torch.from_numpy(test[:32]))
    want = run(fp32, test)
    got = run(quantize(fp32, bits, digits.train.x[:256], mode=mode), test)
    assert_same_outputs(got, want, max_rel=0.25, rms_rel=0.1, agree=0.97)
    assert disagreement(np.broadcast_to(want.mean(0), want.shape), want)


@pytest.mark.slow
def test_int8_on_the_digits_teacher_is_smaller_and_agrees_with_fp32(digits):
    test = digits.test.x
    fp32 = export_onnx(digits.model, torch.from_numpy(test[:32]))
    int8 = quantize(fp32, 8, digits.train.x[:256])
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(int8)
    assert len(int8) < 0.35 * len(fp32)
    assert np.mean(run(int8, test).argmax(1) == run(fp32, test).argmax(1)) >= 0.97


def test_zero_recovery_epochs_leave_the_student_as_pruned(tiny_workload):
    from search.transforms.training import train_classifier

    before = {k: v.clone() for k, v in tiny_workload.model.state_dict().items()}
    train_classifier(tiny_workload.model, tiny_workload.train, tiny_workload.val, epochs=0, lr=1e-3, seed=0)
    after = tiny_workload.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_quantizing_leaves_the_root_log_level_as_it_was(tiny_cnn):
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    try:
        quantize(export_onnx(tiny_cnn, torch.from_numpy(BATCH)), 8, BATCH)
        assert root.level == logging.INFO
    finally:
        root.setLevel(level)


def test_bf16_keeps_float32_range_that_fp16_would_clamp():
    big = nn.Linear(4, 2)
    with torch.no_grad():
        big.weight.fill_(1e5)  # beyond fp16's 65504
    fp32 = export_onnx(nn.Sequential(nn.Flatten(), big).eval(), torch.zeros(1, 1, 2, 2))
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load_from_string(quantize(fp32, 16, BATCH, mode="bf16"))
               .graph.initializer if i.data_type == onnx.TensorProto.BFLOAT16 and i.dims and i.dims[-1] == 4]
    assert weights and np.allclose(np.asarray(weights[0], dtype=np.float32), 1e5, rtol=1e-2)
