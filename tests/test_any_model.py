"""Any model a user brings: named inputs of any dtype, several outputs, any task metric."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn

from search.core.errors import ConfigError
from search.core.metrics import (Accuracy, CosineFidelity, FromFunction, MacroF1, MeanAbsoluteError, MeanSquaredError,
                            TopKAccuracy)
from search.transforms import export_onnx
from search.transforms.training import train_model
from search.workloads import Split, Workload, check_workload
from search.workloads import describe
from search.workloads.calling import call, to_tensors

RNG = np.random.default_rng(0)


def weighted_error(output, targets):  # a user's metric, referenced by dotted path below
    return float(np.mean(np.abs(output[:, 0] - targets)))


# --- metrics ------------------------------------------------------------------------------------

def test_classification_metrics_agree_with_their_definitions():
    scores = RNG.normal(size=(200, 5))
    labels = RNG.integers(0, 5, size=200)
    outputs = {"logits": scores}
    assert Accuracy().score(outputs, labels) == pytest.approx(np.mean(scores.argmax(1) == labels))
    assert MacroF1().score(outputs, labels) == pytest.approx(f1_score(labels, scores.argmax(1), average="macro"))
    top3 = np.argsort(-scores, axis=1)[:, :3]
    assert TopKAccuracy(k=3).score(outputs, labels) == pytest.approx(np.mean((top3 == labels[:, None]).any(1)))
    assert TopKAccuracy(k=3).name == "top3_accuracy"


def test_regression_and_fidelity_metrics():
    predicted, truth = RNG.normal(size=(50, 1)), RNG.normal(size=50)
    assert MeanSquaredError().score({"y": predicted}, truth) == pytest.approx(np.mean((predicted[:, 0] - truth) ** 2))
    assert MeanAbsoluteError().score({"y": predicted}, truth) == pytest.approx(np.mean(np.abs(predicted[:, 0] - truth)))
    embeddings = RNG.normal(size=(30, 8))
    assert CosineFidelity().score({"e": embeddings}, None, {"e": embeddings}) == pytest.approx(1.0)
    assert CosineFidelity().score({"e": -embeddings}, None, {"e": embeddings}) == pytest.approx(-1.0)


def test_a_metric_reads_the_output_it_names_and_a_user_function_by_dotted_path():
    outputs = {"aux": np.zeros((4, 2)), "value": np.array([[1.0], [2.0], [3.0], [4.0]])}
    assert MeanSquaredError(output="value").score(outputs, np.array([1.0, 2.0, 3.0, 5.0])) == pytest.approx(0.25)
    metric = FromFunction(fn="tests.test_any_model.weighted_error", name="wmae", direction="minimize", output="value")
    assert metric.score(outputs, np.array([1.0, 2.0, 3.0, 5.0])) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="no output 'missing'"):
        Accuracy(output="missing").score(outputs, np.zeros(4))
    with pytest.raises(ConfigError, match="cannot be imported"):
        FromFunction(fn="tests.nowhere.metric", name="x")


# --- splits -------------------------------------------------------------------------------------

def test_a_split_takes_named_inputs_of_any_dtype_and_checks_their_lengths():
    split = Split({"ids": np.zeros((6, 4), dtype=np.int64), "mask": np.ones((6, 4), dtype=bool)}, np.arange(6))
    assert len(split) == 6 and split.batch_of(8)["ids"].shape == (8, 4) and split.batch_of(8)["mask"].dtype == bool
    assert Split(np.zeros((3, 2), dtype=np.float64)).inputs["input"].dtype == np.float32  # today's one array
    with pytest.raises(ValueError, match="different lengths"):
        Split({"a": np.zeros((3, 1)), "b": np.zeros((4, 1))})
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        Split(np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="dtype"):
        Split({"a": np.array(["x", "y"])})


# --- a model with two named inputs and two named outputs --------------------------------------

class TwoInTwoOut(nn.Module):
    """Token ids and a mask in; class scores and a pooled embedding out (named by the dict)."""

    def __init__(self, vocab: int = 50, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (torch.relu(self.mix(self.embed(input_ids))) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return {"scores": self.head(pooled), "embedding": pooled}


def _token_split(rows: int, length: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(rows, length)).astype(np.int64)
    mask = (np.arange(length)[None, :] < rng.integers(2, length + 1, size=(rows, 1))).astype(np.int64)
    return Split({"input_ids": ids, "attention_mask": mask}, (ids[:, 0] % 3).astype(np.int64))


@pytest.fixture(scope="module")
def token_workload() -> Workload:
    torch.manual_seed(0)
    workload = Workload("tokens", TwoInTwoOut(), _token_split(120, 10, 0), _token_split(40, 10, 1),
                        _token_split(40, 10, 2), axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})
    return check_workload(workload, "test")


def test_outputs_are_named_by_the_models_dict_and_the_card_describes_every_input(token_workload):
    assert token_workload.output_names == ["scores", "embedding"]
    info = describe(token_workload)
    assert [(i["name"], i["dtype"], i["shape"]) for i in info["inputs"]] == [
        ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
    assert [o["name"] for o in info["outputs"]] == ["scores", "embedding"] and info["metric"]["name"] == "accuracy"


def test_export_keeps_names_and_the_sequence_axis_dynamic(token_workload):
    model_bytes = export_onnx(token_workload.model, to_tensors(token_workload.train.rows(0, 4)),
                              token_workload.output_names, token_workload.axes)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    longer = _token_split(5, 17, 3)  # another batch size and sequence length than exported with
    scores, embedding = session.run(["scores", "embedding"], longer.inputs)
    with torch.no_grad():
        expected = call(token_workload.model, to_tensors(longer.inputs))
    np.testing.assert_allclose(scores, expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(embedding, expected[1].numpy(), atol=1e-5)


def test_a_regression_model_trains_on_mse_and_keeps_its_best_epoch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * rng.normal(size=300)).astype(np.float32)
    train, val = Split(x[:200], y[:200, None]), Split(x[200:], y[200:, None])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    before = MeanSquaredError().score({"y": model(torch.from_numpy(val.x)).detach().numpy()}, val.y)
    after = train_model(model, train, val, epochs=30, lr=1e-2, seed=0, metric=MeanSquaredError())
    assert after < before / 5 and after < 0.2


def test_a_label_free_student_learns_the_teachers_embedding(token_workload):
    teacher = token_workload.model
    torch.manual_seed(1)  # not the teacher's seed: the student starts elsewhere
    student = TwoInTwoOut()
    train = Split(token_workload.train.inputs, None)
    val = Split(token_workload.val.inputs, None)
    metric = CosineFidelity(output="embedding")
    start = train_model(student, train, val, epochs=0, lr=1e-2, seed=0, metric=metric, teacher=teacher,
                        output_names=["scores", "embedding"])
    end = train_model(student, train, val, epochs=60, lr=1e-2, seed=0, metric=metric, teacher=teacher,
                      output_names=["scores", "embedding"])
    assert start < 0.7 and end > 0.85, (start, end)


def test_a_metric_that_fails_on_the_original_model_is_one_config_error(token_workload):
    broken = Workload("tokens", token_workload.model, token_workload.train, token_workload.val, token_workload.test,
                      metric=MeanSquaredError())  # (batch, 3) scores against one label per row
    with pytest.raises(ConfigError, match="mse: output has 3 value"):
        check_workload(broken, "test")
    nan = Workload("tokens", token_workload.model, token_workload.train, token_workload.val, token_workload.test,
                   metric=FromFunction(fn=lambda o, t: float("nan"), name="nan_metric"))
    with pytest.raises(ConfigError, match="returned nan"):
        check_workload(nan, "test")
