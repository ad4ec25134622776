"""Models of several named inputs and outputs: cut into stages and run under every parallelism mode."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from search.core.errors import NotApplicable
from search.runtime.graph_split import MAX_LIVE, Cut, balanced_cuts, cut_points, sort_topologically, split_model
from search.runtime.runners import PipelineRunner, make_runner, split_batch
from search.runtime.session_settings import runtime_settings

CPU = ["CPUExecutionProvider"]
WIDTH, LAYERS = 16, 4
MODES = [("sequential", 1, None), ("intra_op", 2, None), ("inter_op", 2, None), ("data_parallel", 2, None),
         ("data_parallel", 3, None), ("pipeline", 2, 2), ("pipeline", 2, 3), ("pipeline", 3, 2), ("pipeline", 3, 3)]


def masked_layers(mask_type: int) -> bytes:
    """x [batch, seq, 16] and mask [batch, seq] -> ``hidden`` (after every layer) and ``early`` (after the first).

    Each layer is Relu(h @ W + b) * mask, reading the mask graph input itself, then reshaped to
    Shape(x): an int64 value made from the input's shape that stays live across the layers.
    """
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(np.array([-1], np.int64), "last_axis")]
    nodes = [helper.make_node("Shape", ["x"], ["x_shape"])]
    h = "x"
    for k in range(LAYERS):
        weights += [numpy_helper.from_array(rng.standard_normal((WIDTH, WIDTH)).astype(np.float32) / 4, f"w{k}"),
                    numpy_helper.from_array(rng.standard_normal(WIDTH).astype(np.float32), f"b{k}")]
        nodes += [helper.make_node("MatMul", [h, f"w{k}"], [f"mm{k}"]),
                  helper.make_node("Add", [f"mm{k}", f"b{k}"], [f"add{k}"]),
                  helper.make_node("Relu", [f"add{k}"], [f"relu{k}"]),
                  helper.make_node("Cast", ["mask"], [f"maskf{k}"], to=TensorProto.FLOAT),
                  helper.make_node("Unsqueeze", [f"maskf{k}", "last_axis"], [f"mask3d{k}"]),
                  helper.make_node("Mul", [f"relu{k}", f"mask3d{k}"], [f"masked{k}"]),
                  helper.make_node("Reshape", [f"masked{k}", "x_shape"], [f"h{k}"])]
        if k == 0:
            nodes.append(helper.make_node("ReduceMean", ["h0"], ["early"], axes=[1], keepdims=0))
        h = f"h{k}"
    nodes.append(helper.make_node("Identity", [h], ["hidden"]))
    graph = helper.make_graph(
        nodes, "masked_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", WIDTH]),
         helper.make_tensor_value_info("mask", mask_type, ["batch", "seq"])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", WIDTH]),
         helper.make_tensor_value_info("early", TensorProto.FLOAT, ["batch", WIDTH])],
        initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def masked_feeds(mask_dtype: type, batch: int = 7, seq: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    mask = rng.random((batch, seq)) > 0.3
    return {"x": rng.standard_normal((batch, seq, WIDTH)).astype(np.float32), "mask": mask.astype(mask_dtype)}


def plain(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model_bytes, providers=CPU).run(None, feeds)


def cut_model(model_bytes: bytes) -> onnx.ModelProto:
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    sort_topologically(model)
    return model


@pytest.fixture(scope="module", params=[(TensorProto.BOOL, np.bool_), (TensorProto.INT64, np.int64)],
                ids=["bool-mask", "int64-mask"])
def masked(request) -> tuple[bytes, dict[str, np.ndarray]]:
    mask_type, mask_dtype = request.param
    return masked_layers(mask_type), masked_feeds(mask_dtype)


@pytest.mark.parametrize(("mode", "degree", "micro_batches"), MODES)
def test_every_mode_gives_every_output_of_the_plain_session(masked, mode, degree, micro_batches):
    model_bytes, feeds = masked
    runner = make_runner(model_bytes, runtime_settings(mode, degree, micro_batches), CPU)
    try:
        got = runner.run(feeds)
    finally:
        runner.close()
    want = plain(model_bytes, feeds)
    assert [g.shape for g in got] == [w.shape for w in want] == [(7, 5, WIDTH), (7, WIDTH)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_graph_inputs_feed_every_stage_that_reads_them_and_never_cross_a_cut(masked):
    model_bytes, _ = masked
    model = cut_model(model_bytes)
    assert cut_points(model) and all("mask" not in c.tensors and "x" not in c.tensors for c in cut_points(model))
    stages = [onnx.load_from_string(part).graph for part in split_model(model_bytes, 3)]
    assert all("mask" in {i.name for i in stage.input} for stage in stages)
    assert not any({"mask", "x"} & {o.name for o in stage.output} for stage in stages)


def test_a_shape_value_made_from_the_inputs_crosses_cuts_whole(masked):
    model_bytes, feeds = masked
    model = cut_model(model_bytes)
    assert any("x_shape" in c.tensors for c in cut_points(model))
    runner = PipelineRunner(model_bytes, runtime_settings("pipeline", 3, micro_batches=4), CPU)
    try:  # micro-batches of 2, 2, 2 and 1 rows: each part's own shape goes with it
        got = runner.run(feeds)
    finally:
        runner.close()
    np.testing.assert_allclose(got[0], plain(model_bytes, feeds)[0], rtol=1e-5, atol=1e-5)


def test_an_output_made_early_comes_back_in_the_graphs_order():
    model_bytes = masked_layers(TensorProto.BOOL)
    stages = [onnx.load_from_string(part).graph for part in split_model(model_bytes, 3)]
    assert "early" not in {o.name for o in stages[-1].output}  # made in an early stage, handed to the caller
    feeds = masked_feeds(np.bool_, batch=3)
    runner = PipelineRunner(model_bytes, runtime_settings("pipeline", 3, micro_batches=2), CPU)
    try:
        _, early = runner.run(feeds)
    finally:
        runner.close()
    np.testing.assert_allclose(early, plain(model_bytes, feeds)[1], rtol=1e-5, atol=1e-5)


def test_a_cut_holds_at_most_max_live_tensors():
    """Ten branches of one input, joined at the end: after the ninth branch, nine are live."""
    nodes = [helper.make_node("Relu", ["x"], [f"r{k}"]) for k in range(10)]
    nodes.append(helper.make_node("Sum", [f"r{k}" for k in range(10)], ["y"]))
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "fan", [value("x", TensorProto.FLOAT, ["batch", 4])],
                              [value("y", TensorProto.FLOAT, ["batch", 4])])
    model = cut_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    cuts = cut_points(model)
    assert [c.after for c in cuts] == list(range(MAX_LIVE))
    assert [len(c.tensors) for c in cuts] == list(range(1, MAX_LIVE + 1))


def test_a_cut_needs_every_live_tensor_typed(masked):
    model_bytes, _ = masked
    model = onnx.load_from_string(model_bytes)  # no shape inference: intermediate values have no type
    sort_topologically(model)
    assert cut_points(model) == []
    with pytest.raises(NotApplicable, match="separates at 0 point"):
        balanced_cuts(cut_points(model), [1.0] * len(model.graph.node), 2)


def test_among_equally_costly_cuts_the_one_handing_on_fewer_tensors_wins():
    two, one = Cut(0, ("a", "b")), Cut(1, ("c",))
    costs = [1.0, 0.0, 1.0]  # either cut leaves stages of cost 1 and 1
    assert balanced_cuts([two, one], costs, 2) == [one]
    assert balanced_cuts([one, two], costs, 2) == [one]
    assert balanced_cuts([Cut(0, ("a", "b")), Cut(1, ("c",))], [1.0, 2.0, 1.0], 2) == [Cut(1, ("c",))]


def test_a_cheaper_plan_beats_one_handing_on_fewer_tensors():
    two, one = Cut(1, ("a", "b")), Cut(2, ("c",))
    assert balanced_cuts([two, one], [1.0, 1.0, 1.0, 1.0], 2) == [two]  # stages 2 + 2, not 3 + 1


def test_a_batch_is_split_into_the_same_rows_of_every_input():
    feeds = masked_feeds(np.int64, batch=5)
    shares = split_batch(feeds, 3)
    assert [len(s["x"]) for s in shares] == [len(s["mask"]) for s in shares] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([s["mask"] for s in shares]), feeds["mask"])
    assert len(split_batch(masked_feeds(np.int64, batch=2), 4)) == 2


def test_inputs_of_different_batch_sizes_are_refused():
    feeds = masked_feeds(np.int64, batch=4)
    with pytest.raises(ValueError, match="batch"):
        split_batch({**feeds, "mask": feeds["mask"][:3]}, 2)


def test_a_pipeline_missing_an_input_says_which():
    model_bytes = masked_layers(TensorProto.INT64)
    runner = PipelineRunner(model_bytes, runtime_settings("pipeline", 2), CPU)
    try:
        with pytest.raises(ValueError, match="mask"):
            runner.run({"x": masked_feeds(np.int64)["x"]})
    finally:
        runner.close()


def tiny_bert() -> bytes:
    """A two-layer BERT classifier exported with dynamic batch and sequence axes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    class Logits(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    model = Logits(transformers.BertForSequenceClassification(config).eval())
    ids, mask = torch.randint(0, 200, (2, 8)), torch.ones(2, 8, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    torch.onnx.export(model, (ids, mask), buffer, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                      dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return buffer.getvalue()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_a_tiny_bert_pipeline_gives_what_the_plain_session_gives():
    model_bytes = tiny_bert()
    rng = np.random.default_rng(0)
    mask = np.ones((7, 11), np.int64)
    mask[:, 8:], mask[3, 5:] = 0, 0  # padded rows of different lengths
    feeds = {"input_ids": rng.integers(0, 200, (7, 11)).astype(np.int64), "attention_mask": mask}
    want = plain(model_bytes, feeds)
    for stages, micro_batches in ((2, 2), (3, 3)):
        runner = PipelineRunner(model_bytes, runtime_settings("pipeline", stages, micro_batches), CPU)
        try:
            (got,) = runner.run(feeds)
        finally:
            runner.close()
        np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-5)
