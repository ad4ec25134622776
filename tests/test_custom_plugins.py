"""examples/custom_plugins: a knob and an evaluator in the user's own module, configured on hydra.searchpath,
run from the README's command; their columns reach every table, the page and a picked model's card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from examples.custom_plugins.plugins import GraphOptimization, OperatorCount
from tests.conftest import REPO, search
from tests.doc_commands import documented

pytestmark = pytest.mark.slow
README_OVERRIDES = ["hydra.searchpath=[file://examples/custom_plugins/conf]", "space=custom", "evaluators=custom"]


def test_the_plugins_live_outside_the_package_and_the_package_does_not_name_them():
    assert GraphOptimization.__module__.startswith("examples.") and OperatorCount.__module__.startswith("examples.")
    for package in ("search", "spaces", "evaluators", "conf"):
        for path in (REPO / package).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml"):
                text = path.read_text()
                assert "operator_count" not in text and "graph_opt_level" not in text, path


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory, teacher_cache) -> Path:
    assert documented("python -m search 'hydra.searchpath=[file://examples/custom_plugins/conf]' space=custom "
                      "evaluators=custom")[3:] == README_OVERRIDES
    results = tmp_path_factory.mktemp("custom")
    proc = search(results, teacher_cache, *README_OVERRIDES, "trials=3", "workers=2", "run=custom", "remeasure=true",
                  "space.knobs.graph_optimization.levels=[disabled]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "operator_count" in proc.stdout  # the summary's front shows the new objective
    return results / "custom"


def test_new_columns_reach_both_tables_with_real_values(custom_run):
    trials, front = pd.read_csv(custom_run / "trials.csv"), pd.read_csv(custom_run / "pareto.csv")
    for table in (trials, front):
        assert {"graph_opt_level", "operator_count"} <= set(table.columns)
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) == 3 and done["operator_count"].notna().all() and (done["operator_count"] > 0).all()
    # the cover trials measure every declared level: all (the baseline's) and disabled
    assert set(done["graph_opt_level"]) == {"all", "disabled"}


def test_new_columns_reach_the_page_and_a_picked_models_card(custom_run, tmp_path):
    page = (custom_run / "pareto.html").read_text()
    assert "operators in the graph" in page and "graph_opt_level" in page
    out = tmp_path / "chosen"
    argv = documented("python -m search.pick results/<run> --sort operator_count --max operator_count=1000 "
                      "--out chosen/",
                      {"results/<run>": str(custom_run), "chosen/": str(out)})
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    card = json.loads(next(out.glob("trial-*.json")).read_text())
    assert card["metrics"]["operator_count"] > 0 and "nodes of the model's ONNX graph" in card["measured"]["operators"]
    level = card["runtime"]["session_options"]["graph_optimization_level"]
    row = pd.read_csv(custom_run / "trials.csv").set_index("trial").loc[card["trial"]]
    assert level == {"all": "ORT_ENABLE_ALL", "disabled": "ORT_DISABLE_ALL"}[row["graph_opt_level"]]


def test_the_knobs_runtime_setting_reaches_the_session():
    from search.runtime.session_settings import session_options
    from spaces import compose_runtime

    knob = GraphOptimization(levels=["basic"])
    options = session_options(compose_runtime([knob], {"graph_opt_level": "basic"}))
    import onnxruntime as ort

    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_pytest_collects_the_users_contract_tests_beside_the_suite():
    """examples/ is on pytest's testpaths: the example's own tests, which inherit the contracts, run with the suite."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--ignore=tests"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    collected = set(proc.stdout.split())
    for test in ("TestGraphOptimization::test_fields_survive_the_ray_boundary",
                 "TestOperatorCount::test_columns_reach_both_tables_the_plots_and_the_card"):
        assert f"examples/custom_plugins/test_plugins.py::{test}" in collected, proc.stdout[-2000:]
