"""The promises every hardware target keeps: it composes, names a provider and resources, and runs every knob."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from search.runtime.target import Target
from search.testing._shipped import composed_target, shipped_knobs


class TargetContract:
    """Inherit it and give the ``target_config`` fixture: the target's config as Hydra composes it (a
    dict), or its name (composed as ``+target=NAME``; give ``target_overrides`` such as
    ``["hydra.searchpath=[file://my/conf]"]`` for one of your own). Every test below runs on it.
    """

    @pytest.fixture
    def target_config(self) -> str | Mapping[str, Any]:
        raise NotImplementedError

    @pytest.fixture
    def target_overrides(self) -> list[str]:
        return []

    def test_composes_to_a_target_with_a_provider_and_resources(self, target_config, target_overrides):
        target = composed_target(target_config, target_overrides)
        assert isinstance(target, Target)
        if isinstance(target_config, str):
            assert target.name == target_config, f"+target={target_config} composes a target named {target.name}"
        assert target.provider.endswith("ExecutionProvider"), f"{target.provider} is no ONNX Runtime provider name"
        assert target.num_cpus > 0 and target.num_gpus >= 0, (target.num_cpus, target.num_gpus)
        assert target.thread_budget >= 1, target.thread_budget

    def test_every_shipped_knob_narrows_to_it_with_something_left(self, target_config, target_overrides):
        target = composed_target(target_config, target_overrides)
        for knob in shipped_knobs():
            knob.narrow([target])  # a ConfigError here: the knob has nothing this target runs
            assert knob.distributions(), f"{knob.name} searches nothing on {target.name}"
