"""Every path a user names keeps working after the package's parts moved: the fronts their code and YAML
import, the commands, and every ``_target_`` in conf/ and examples/ (and the sampler paths configs used before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import get_method, get_object
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parent.parent
EARLIER_TARGETS = ["search.refine.RuntimeRefiningSampler", "search.samplers.WindowedSampler",
                   "search.samplers.IncrementalNSGAIISampler"]


def targets_in(folder: Path) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.append(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(folder.rglob("*.yaml")):
        walk(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    return sorted(set(found))


SHIPPED = targets_in(REPO / "conf") + targets_in(REPO / "examples")


def test_the_fronts_users_import_hold_what_they_name():
    import search
    from search.errors import ConfigError, NotApplicable
    from search.metrics import (Accuracy, CosineFidelity, FromFunction, MacroF1, MeanAbsoluteError, MeanSquaredError,
                                Metric, TopKAccuracy)
    from search.schema import Column, Field
    from search.workloads import Split, Workload

    assert callable(search.optimize) and search.Workload is Workload and search.Split is Split
    assert issubclass(ConfigError, ValueError) and issubclass(NotApplicable, RuntimeError)
    assert all(issubclass(m, Metric) for m in (Accuracy, CosineFidelity, FromFunction, MacroF1, MeanAbsoluteError,
                                                MeanSquaredError, TopKAccuracy))
    assert Field("x").name == "x" and Column("y", unit="ms").unit == "ms"
    assert search.metrics.FromFunction is FromFunction and search.schema.Field is Field


@pytest.mark.parametrize("target", SHIPPED)
def test_every_target_in_conf_and_examples_resolves(target):
    found = get_object(target)
    assert callable(found), target


@pytest.mark.parametrize("target", EARLIER_TARGETS)
def test_sampler_paths_earlier_configs_name_still_resolve(target):
    from search import strategy

    assert get_method(target) is getattr(strategy, target.rsplit(".", 1)[1])


def test_the_shipped_configs_name_the_samplers_where_they_live():
    assert {t for t in SHIPPED if t.startswith("search.")} >= {"search.strategy.RuntimeRefiningSampler",
                                                             "search.strategy.WindowedSampler",
                                                             "search.strategy.IncrementalNSGAIISampler"}


@pytest.mark.parametrize("command", ["search", "search.pick", "search.report"])
def test_the_commands_run_as_modules(command, tmp_path):
    done = subprocess.run([sys.executable, "-m", command, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    if command == "search.report":  # it takes a run folder only: --help is refused with its usage, exit 2
        assert done.returncode == 2 and "usage: python -m search.report" in done.stderr
    else:
        assert done.returncode == 0 and "usage: python -m " + command in done.stdout
