"""Transformer parts on a tiny random BERT: head and MLP pruning, ORT's transformer fusion, the fusion knob."""

from __future__ import annotations

import io
import warnings
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import optuna
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from search.core.candidate import Candidate  # noqa: E402
from search.core.errors import ConfigError, NotApplicable  # noqa: E402
from search.config import load_knobs  # noqa: E402
from search.trial import build  # noqa: E402
from search.runtime.target import Target  # noqa: E402
from search.workloads import Split  # noqa: E402
from search.transforms.attention import (attention_modules, find_attention_heads, mlp_inputs,  # noqa: E402
                                         prune_transformer, residual_writers, sync_attention)
from search.transforms.fusion import attention_shapes, fuse_transformer  # noqa: E402
from spaces import QuantBits  # noqa: E402
from spaces import BuildContext  # noqa: E402
from spaces.fusion import TransformerFusion  # noqa: E402

NAMES = ("input_ids", "attention_mask")


def tiny_bert(attention: str = "eager") -> nn.Module:
    """2 layers, 4 heads of 16, MLP 128; weights at std 0.2 so that outputs depend on the inputs."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=2000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128, num_labels=4,
                                     initializer_range=0.2)
    model = transformers.BertForSequenceClassification(config).eval()
    model.set_attn_implementation(attention)
    return model


def feeds(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids and a right-padded mask (every row keeps at least one token)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    for row, length in enumerate(rng.integers(1, seq + 1, batch)):
        mask[row, length:] = 0
    return {"input_ids": rng.integers(0, 2000, (batch, seq)).astype(np.int64), "attention_mask": mask}


def tensors(feed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in feed.items()}


class Logits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export(model: nn.Module) -> bytes:
    buffer, example = io.BytesIO(), tensors(feeds(2, 16))
    axes = {"batch": 0, "sequence": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(model).eval(), tuple(example[n] for n in NAMES), buffer, input_names=list(NAMES),
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {i: a for a, i in axes.items()} for n in NAMES}, "logits": {0: "batch"}})
    return buffer.getvalue()


def run(model_bytes: bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def logits(model: nn.Module, feed: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**tensors(feed)).logits.numpy()


@pytest.fixture(scope="module")
def bert() -> nn.Module:
    return tiny_bert()


@pytest.fixture(scope="module")
def pruned(bert) -> nn.Module:
    return prune_transformer(bert, 0.5, tensors(feeds(2, 16)), keep=[bert.classifier])


@pytest.fixture(scope="module")
def bert_onnx(bert) -> bytes:
    return export(bert)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- attention heads and pruning ------------------------------------------------------------------------------

def test_heads_are_found_on_each_query_key_and_value(bert):
    heads = find_attention_heads(bert)
    expected = {m for layer in bert.bert.encoder.layer for m in
                (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value)}
    assert set(heads) == expected and set(heads.values()) == {4}


def test_residual_writers_are_what_writes_the_hidden_stream(bert):
    writers = set(residual_writers(bert))
    embeddings = bert.bert.embeddings
    layers = bert.bert.encoder.layer
    assert {embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings} <= writers
    assert {m for layer in layers for m in (layer.attention.output.dense, layer.output.dense)} <= writers
    assert not writers & (set(find_attention_heads(bert)) | set(mlp_inputs(bert)) | {bert.classifier})
    assert set(mlp_inputs(bert)) == {layer.intermediate.dense for layer in layers}


def test_pruning_removes_half_the_heads_and_mlp_and_keeps_hidden_size(bert, pruned):
    assert [m.num_attention_heads for m in attention_modules(pruned)] == [2, 2]
    assert all(m.all_head_size == 32 and m.attention_head_size == 16 and m.query.out_features == 32
               for m in attention_modules(pruned))
    assert [layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer] == [64, 64]
    assert pruned.bert.embeddings.word_embeddings.embedding_dim == 64
    assert all(layer.output.dense.out_features == 64 for layer in pruned.bert.encoder.layer)
    assert pruned.classifier.weight.shape == bert.classifier.weight.shape
    assert count(pruned) < count(bert)
    assert logits(pruned, feeds(3, 20)).shape == (3, 4)


def test_pruning_leaves_the_original_and_its_config_alone(bert, pruned):
    assert [m.num_attention_heads for m in attention_modules(bert)] == [4, 4]
    assert bert.bert.encoder.layer[0].attention.self.query.out_features == 64
    assert pruned.config.num_attention_heads == 4  # the config still names the unpruned count


def test_pruned_heads_equal_the_original_with_those_heads_silenced(bert, pruned):
    """Removing a head = zeroing its value rows; a removed MLP neuron = zeroing its down-projection column."""
    silenced = tiny_bert()
    with torch.no_grad():
        for old, new, mute in zip(bert.bert.encoder.layer, pruned.bert.encoder.layer, silenced.bert.encoder.layer,
                                  strict=True):
            for before, after, weight, by_rows in (
                    (old.attention.self.value, new.attention.self.value, mute.attention.self.value, True),
                    (old.intermediate.dense, new.intermediate.dense, mute.output.dense, False)):
                kept = {int((before.weight - row).abs().sum(1).argmin()) for row in after.weight}
                gone = [i for i in range(before.out_features) if i not in kept]
                if by_rows:
                    weight.weight[gone] = 0
                    weight.bias[gone] = 0
                else:
                    weight.weight[:, gone] = 0
    feed = feeds(4, 32, seed=3)
    np.testing.assert_allclose(logits(pruned, feed), logits(silenced, feed), atol=1e-5)


def test_at_least_one_head_survives_a_high_rate(bert):
    heavily = prune_transformer(bert, 0.9, tensors(feeds(2, 16)), keep=[bert.classifier])
    assert [m.num_attention_heads for m in attention_modules(heavily)] == [1, 1]
    assert logits(heavily, feeds(2, 8)).shape == (2, 4)


def test_rate_zero_is_an_untouched_copy_and_bad_arguments_are_refused(bert):
    copy = prune_transformer(bert, 0.0, tensors(feeds(2, 16)), keep=[bert.classifier])
    assert copy is not bert and count(copy) == count(bert)
    with pytest.raises(ValueError, match="rate"):
        prune_transformer(bert, 1.0, tensors(feeds(2, 16)), keep=[])
    with pytest.raises(ValueError, match="not part of the model"):
        prune_transformer(bert, 0.5, tensors(feeds(2, 16)), keep=[nn.Linear(2, 2)])


def test_sync_attention_reads_the_head_count_from_the_query_width(bert):
    model = tiny_bert()
    attention = model.bert.encoder.layer[0].attention.self
    attention.query = nn.Linear(64, 48)
    sync_attention(model)
    assert (attention.num_attention_heads, attention.all_head_size) == (3, 48)


@pytest.mark.slow
def test_pruned_model_exports_and_matches_torch_at_other_shapes(pruned):
    model_bytes = export(pruned)
    for batch, seq in ((1, 5), (8, 64)):
        feed = feeds(batch, seq, seed=batch)
        np.testing.assert_allclose(run(model_bytes, feed), logits(pruned, feed), atol=1e-4)


# --- fusion --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_fusion_writes_attention_and_layernorm_ops_and_keeps_the_outputs(bert, bert_onnx):
    fused, counts = fuse_transformer(bert_onnx)
    assert counts == {"EmbedLayerNormalization": 1, "Attention": 2, "SkipLayerNormalization": 4, "BiasGelu": 2}
    assert any(o.domain == "com.microsoft" for o in onnx.load_from_string(fused).opset_import)
    for batch, seq in ((1, 5), (8, 64)):
        feed = feeds(batch, seq, seed=batch)
        np.testing.assert_allclose(run(fused, feed), logits(bert, feed), atol=1e-4)


@pytest.mark.slow
def test_fusion_of_a_pruned_model_uses_its_pruned_head_count(pruned):
    model_bytes = export(pruned)
    assert attention_shapes(onnx.load_from_string(model_bytes)) == {(2, 32)}
    fused, counts = fuse_transformer(model_bytes)
    heads = {a.i for n in onnx.load_from_string(fused).graph.node if n.op_type == "Attention"
             for a in n.attribute if a.name == "num_heads"}
    assert counts["Attention"] == 2 and heads == {2}
    feed = feeds(4, 32, seed=1)
    np.testing.assert_allclose(run(fused, feed), logits(pruned, feed), atol=1e-4)


@pytest.mark.slow
def test_an_sdpa_export_fuses_layernorm_and_gelu_but_not_attention():
    _, counts = fuse_transformer(export(tiny_bert("sdpa")))
    assert "Attention" not in counts and counts["SkipLayerNormalization"] == 4


def test_fusion_on_a_cnn_is_not_applicable():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (torch.randn(1, 1, 8, 8),), buffer, opset_version=17, dynamo=False)
    with pytest.raises(NotApplicable, match="no attention"):
        fuse_transformer(buffer.getvalue())


# --- the fusion knob ---------------------------------------------------------------------------------------

def context(facts: dict | None = None) -> BuildContext:
    workload = SimpleNamespace(train=Split(feeds(4, 8)))
    return BuildContext(workload, Target(name="cpu"), seed=0, batch_size=8, facts={} if facts is None else facts)


def test_knob_declares_choices_with_the_baseline_and_refuses_unknown_ones():
    assert TransformerFusion(["transformer"]).choices == ["none", "transformer"]
    with pytest.raises(ConfigError, match="choose from"):
        TransformerFusion(["onnxsim"])
    config = {"fusion": {"_target_": "spaces.fusion.TransformerFusion", "choices": ["none", "transformer"]}}
    knob = load_knobs(config)[0]
    assert (knob.name, knob.stage, [f.name for f in knob.fields], [c.name for c in knob.facts]) == (
        "fusion", "onnx", ["fusion"], ["fused_ops"])


def test_knob_draws_within_its_space_and_its_baseline_and_cover_belong_to_it():
    knob = TransformerFusion()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = {knob.suggest(study.ask(fixed_distributions=knob.distributions()), {})["fusion"] for _ in range(20)}
    assert drawn == {"none", "transformer"}
    choices = knob.distributions()["fusion"].choices
    assert knob.baseline()["fusion"] in choices and [c["fusion"] for c in knob.cover()] == list(choices)


@pytest.mark.slow
def test_knob_build_fuses_and_records_the_count(bert_onnx):
    knob, facts = TransformerFusion(), {}
    assert knob.build(bert_onnx, {"fusion": "none"}, context(facts)) is bert_onnx and facts == {"fused_ops": 0}
    fused = knob.build(bert_onnx, {"fusion": "transformer", "quant_bits": 32}, context(facts))
    assert facts == {"fused_ops": 9} and fused != bert_onnx
    with pytest.raises(NotApplicable, match="static int8"):
        knob.build(bert_onnx, {"fusion": "transformer", "quant_bits": 8, "quant_mode": "minmax"}, context())


@pytest.mark.slow
def test_fusion_listed_before_quant_bits_builds_first(bert_onnx):
    """build_candidate runs ONNX-stage knobs in config order: fused, then fp16; the other way is refused."""
    workload = SimpleNamespace(is_onnx=True, onnx_model=bert_onnx, key="bert", train=Split(feeds(16, 12)))
    cand = Candidate(target="cpu", batch_size=8, fusion="transformer", quant_bits=16, quant_mode="fp16")
    facts: dict = {}
    model = onnx.load_from_string(build.build_candidate(workload, cand, Target(name="cpu"), 0, {}, facts,
                                                        knobs=[TransformerFusion(), QuantBits([32, 16])]))
    assert {"Attention", "SkipLayerNormalization"} <= {n.op_type for n in model.graph.node}
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) and facts["fused_ops"] == 9
    np.testing.assert_allclose(run(model.SerializeToString(), feeds(2, 8)), run(bert_onnx, feeds(2, 8)), atol=0.05)
    dynamic = cand.replace(quant_bits=8, quant_mode="dynamic")
    with pytest.raises(NotApplicable, match="before quant_bits"):
        build.build_candidate(workload, dynamic, Target(name="cpu"), 0, {}, {},
                              knobs=[QuantBits([32, 8], modes=["dynamic"]), TransformerFusion()])
