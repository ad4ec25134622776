"""Parallelism modes executed for real on a one-input CNN: every runner gives the whole model's outputs.

Models of several named inputs and outputs are tested in tests/test_graph_split_multi.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from search.core.errors import NotApplicable
from search.runtime import graph_split
from search.runtime.graph_split import cut_points, sort_topologically, split_model
from search.runtime.runners import DataParallelRunner, PipelineRunner, SessionRunner, make_runner
from search.runtime.session_settings import PARALLELISM, runtime_settings
from search.transforms import export_onnx, quantize

from tests.conftest import TinyCNN

CPU = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Data:
    train: np.ndarray
    test: np.ndarray


class Residual(nn.Module):
    """conv -> (conv branch + skip) -> head: inside the branch, the skip is live beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return self.head(stem + self.branch(stem))


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(0)
    return Data(train=rng.random((64, 1, 8, 8), dtype=np.float32), test=rng.random((16, 1, 8, 8), dtype=np.float32))


@pytest.fixture(scope="module")
def models(data) -> dict[str, bytes]:
    torch.manual_seed(0)
    fp32 = export_onnx(TinyCNN().eval(), torch.from_numpy(data.train[:8]))
    return {"fp32": fp32, "int8": quantize(fp32, 8, data.train, 16), "fp16": quantize(fp32, 16, data.train)}


def feeds(model_bytes: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """``x`` as the feeds of a one-input model."""
    return {onnx.load_from_string(model_bytes).graph.input[0].name: x}


def whole(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """The model's one output, from one plain session."""
    (logits,) = SessionRunner(model_bytes, runtime_settings(), CPU).run(feeds(model_bytes, x))
    return logits


def chained(parts: list[bytes], named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every named tensor after running the stages in turn, each fed by name from what came before."""
    for part in parts:
        session = ort.InferenceSession(part, providers=CPU)
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, {i.name: named[i.name] for i in session.get_inputs()})
        named = {**named, **dict(zip(names, outputs, strict=True))}
    return named


def cut_model(model_bytes: bytes) -> onnx.ModelProto:
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    sort_topologically(model)
    return model


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("mode", PARALLELISM)
def test_every_mode_gives_the_whole_models_outputs(models, data, precision, mode):
    x = data.test[:13]  # shares and micro-batches of unequal size
    runner = make_runner(models[precision], runtime_settings(mode, 3), CPU)
    try:
        (got,) = runner.run(feeds(models[precision], x))
        np.testing.assert_allclose(got, whole(models[precision], x), rtol=1e-5, atol=1e-5)
    finally:
        runner.close()


def test_fp16_pipeline_matches_the_whole_model_to_fp16_precision(models, data):
    x = data.test[:16]
    runner = PipelineRunner(models["fp16"], runtime_settings("pipeline", 2), CPU)
    try:
        (got,), want = runner.run(feeds(models["fp16"], x)), whole(models["fp16"], x)
    finally:
        runner.close()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # a stage boundary rounds to fp16
    assert (got.argmax(1) == want.argmax(1)).all()


def test_runners_use_the_degree_they_are_given(models):
    replicas = DataParallelRunner(models["fp32"], runtime_settings("data_parallel", 3), CPU)
    stages = PipelineRunner(models["fp32"], runtime_settings("pipeline", 3, micro_batches=5), CPU)
    try:
        assert len(replicas.replicas) == 3
        assert len(stages.stages) == 3 and stages.micro_batches == 5
        assert sum(t.is_alive() for t in stages.threads) == 3
    finally:
        replicas.close()
        stages.close()
    assert not any(t.is_alive() for t in stages.threads)


def test_a_batch_smaller_than_the_replicas_still_runs(models, data):
    x = data.test[:2]
    runner = make_runner(models["fp32"], runtime_settings("data_parallel", 4), CPU)
    try:
        np.testing.assert_allclose(runner.run(feeds(models["fp32"], x))[0], whole(models["fp32"], x), rtol=1e-6)
    finally:
        runner.close()


def test_a_failing_stage_raises_to_the_caller_and_the_pipeline_goes_on(models, data):
    runner = PipelineRunner(models["fp32"], runtime_settings("pipeline", 2), CPU)
    try:
        with pytest.raises(Exception, match="(?i)invalid|dimension|shape"):
            runner.run(feeds(models["fp32"], np.zeros((4, 1, 5, 5), dtype=np.float32)))
        x = data.test[:4]
        np.testing.assert_allclose(runner.run(feeds(models["fp32"], x))[0], whole(models["fp32"], x), rtol=1e-6)
    finally:
        runner.close()


def test_stages_chain_into_the_whole_model(models, data):
    x = data.test[:8]
    for stages in (2, 3):
        parts = split_model(models["int8"], stages)
        assert len(parts) == stages
        name = onnx.load_from_string(models["int8"]).graph.output[0].name
        np.testing.assert_allclose(chained(parts, feeds(models["int8"], x))[name], whole(models["int8"], x), rtol=1e-6)


def test_int8_stages_are_cut_on_quantized_tensors(models):
    model = cut_model(models["int8"])
    cuts = cut_points(model)
    assert cuts and all(model.graph.node[c.after].op_type == "QuantizeLinear" for c in cuts)


def test_a_chain_is_cut_on_one_tensor_after_every_node_that_makes_one(models):
    model = cut_model(models["fp32"])
    cuts = cut_points(model)
    assert [c.after for c in cuts] == list(range(len(model.graph.node) - 1))
    assert all(c.tensors == tuple(model.graph.node[c.after].output) for c in cuts)


@pytest.fixture(scope="module")
def residual() -> bytes:
    torch.manual_seed(0)
    return export_onnx(Residual().eval(), torch.zeros(2, 1, 8, 8))


def test_a_cut_inside_a_residual_branch_hands_on_the_skip_too(residual):
    model = cut_model(residual)
    stem, add = model.graph.node[0].output[0], [n.op_type for n in model.graph.node].index("Add")
    inside = [c for c in cut_points(model) if 0 < c.after < add]
    assert inside and all(len(c.tensors) == 2 and stem in c.tensors for c in inside)


def test_residual_stages_chain_into_the_whole_model(residual, data):
    x, name = data.test[:5], onnx.load_from_string(residual).graph.output[0].name
    for stages in (2, 3, 4):
        got = chained(split_model(residual, stages), feeds(residual, x))[name]
        np.testing.assert_allclose(got, whole(residual, x), rtol=1e-6, atol=1e-6)


def test_one_live_tensor_at_most_gives_the_single_tensor_cuts(residual, monkeypatch):
    monkeypatch.setattr(graph_split, "MAX_LIVE", 1)
    model = cut_model(residual)
    add = [n.op_type for n in model.graph.node].index("Add")
    cuts = cut_points(model)
    assert cuts and all(c.after == 0 or c.after >= add for c in cuts)  # after the stem, or after the branches meet


def test_more_stages_than_cut_points_is_not_applicable():
    model_bytes = export_onnx(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval(), torch.zeros(2, 1, 8, 8))
    with pytest.raises(NotApplicable, match="separates at 1 point"):
        split_model(model_bytes, 4)


def test_cuts_are_never_on_the_input_nor_twice_on_one_tensor(data):
    torch.manual_seed(0)
    dynamic = quantize(export_onnx(TinyCNN().eval(), torch.from_numpy(data.train[:8])), 8, data.train, mode="dynamic")
    model = cut_model(dynamic)
    tensors = [c.tensors for c in cut_points(model)]
    assert tensors and all("input" not in t for t in tensors) and len(tensors) == len(set(tensors))
    assert all(len(t) == 1 for t in tensors)  # never inside DynamicQuantizeLinear -> ConvInteger -> Cast -> Mul


def test_sorting_restores_the_order_of_a_reversed_chain_in_linear_time():
    nodes = [onnx.helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(3000)]
    graph = onnx.helper.make_graph(list(reversed(nodes)), "chain",
                                   [onnx.helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("t3000", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph)
    sort_topologically(model)
    assert [n.input[0] for n in model.graph.node] == [f"t{i}" for i in range(3000)]


def test_a_closed_pipeline_refuses_to_run_instead_of_waiting_forever(models, data):
    runner = PipelineRunner(models["fp32"], runtime_settings("pipeline", 2), CPU)
    runner.close()
    runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(feeds(models["fp32"], data.test[:4]))


def test_the_memory_probe_runs_every_mode(models, data):
    from evaluators.memory import peak_session_memory

    for mode in PARALLELISM:
        batch = feeds(models["int8"], data.test[:8])
        assert peak_session_memory(models["int8"], batch, runtime_settings(mode, 2), CPU, 2) > 0, mode
