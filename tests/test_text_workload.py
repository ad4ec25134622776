"""The bundled text workload: a BERT with int64 inputs, searched end to end as the README says."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from search.runtime.runners import make_runner
from search.workloads import check_workload
from search.workloads.text import load
from tests.conftest import search, tried
from tests.doc_commands import documented

pytestmark = pytest.mark.slow
SMALL = {"epochs": 4, "hidden": 32, "max_length": 24, "vocab_size": 800}  # seconds to train, still a BERT


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("text-cache"))


def test_the_factory_gives_token_ids_a_cached_tokenizer_and_a_trained_bert(text_cache):
    first = check_workload(load(cache_dir=text_cache, **SMALL), "text")
    again = load(cache_dir=text_cache, **SMALL)  # teacher and tokenizer from the cache: the same ids
    assert set(first.test.inputs) == {"input_ids", "attention_mask"}
    assert all(a.dtype == np.int64 and a.shape[1] == 24 for a in first.test.inputs.values())
    np.testing.assert_array_equal(first.test.inputs["input_ids"], again.test.inputs["input_ids"])
    assert first.output_names == ["logits"] and first.axes["input_ids"] == {1: "sequence"}
    from search.transforms.training import accuracy

    assert accuracy(first.model, first.test) > 0.5  # four topics: chance is about 0.3


def test_a_text_search_runs_and_its_models_run_on_int64_arrays_alone(tmp_path, text_cache):
    proc = search(tmp_path, None, *documented("python -m search workload=text")[3:], f"workload.cache_dir={text_cache}",
                  *(f"workload.{k}={v}" for k, v in SMALL.items()),
                  "workload.distill_epochs=1", "trials=8", "workers=2", "run=text", "remeasure=false",
                  "space.knobs.quant_bits.modes=[minmax,dynamic]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "text"
    table = tried(pd.read_csv(run / "trials.csv"))
    assert (table["state"] == "COMPLETE").all(), table[["state", "error"]].to_string()
    assert {"fusion", "fused_ops", "accuracy"} <= set(table.columns)
    assert (table.loc[table["fusion"] == "transformer", "fused_ops"] > 0).all()
    assert (table["fusion"] == "transformer").any(), "the cover trials measure the fusion"
    front = pd.read_csv(run / "pareto.csv")
    test = load(cache_dir=text_cache, **SMALL).test
    for row in front.itertuples():
        card = json.loads((run / "models" / f"trial-{row.trial}.json").read_text())
        assert [(i["name"], i["dtype"], i["shape"]) for i in card["inputs"]] == [
            ("input_ids", "int64", ["batch", "sequence"]), ("attention_mask", "int64", ["batch", "sequence"])]
        assert card["inputs"][0]["measured_shape"] == [row.batch_size, 24] and card["metric"]["name"] == "accuracy"
        # the model as its card deploys it: dynamic int8 quantizes each call's batch (each replica's share,
        # each micro-batch) by its own range, so the figure belongs to the runtime settings too
        settings = {k: v for k, v in card["runtime"].items() if k not in ("target", "provider", "batch_size")}
        model_bytes = (run / "models" / f"trial-{row.trial}.onnx").read_bytes()
        runner = make_runner(model_bytes, settings, ["CPUExecutionProvider"])
        try:
            logits = np.concatenate([runner.run(test.rows(i, i + row.batch_size))[0]
                                     for i in range(0, len(test), row.batch_size)])
        finally:
            runner.close()
        assert float(np.mean(logits.argmax(1) == test.y)) == pytest.approx(row.accuracy, abs=1e-9)
        plain = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])  # ORT alone runs it too
        assert plain.run(["logits"], test.rows(0, 3))[0].shape == (3, 4)
