"""The runner a candidate is measured through: its parallelism mode on its target's provider."""

from __future__ import annotations

from search.core.candidate import Candidate
from search.runtime.runners import Runner, make_runner
from search.runtime.target import Target, load_provider_libraries


def runner_for(model_bytes: bytes, target: Target, candidate: Candidate) -> Runner:
    load_provider_libraries(target.provider)
    return make_runner(model_bytes, candidate.runtime, target.providers(candidate.get("quant_bits")))
