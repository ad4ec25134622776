"""The re-timing phase: after the search, every Pareto member is timed again with its node to itself."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import ray

from search.core import attributes
from search.core.candidate import Candidate
from search.core.messages import TrialResult
from search.strategy import study as studies
from search.run.cluster import task_result
from search.run.dispatcher import Dispatcher
from search.run.failures import take_error
from search.run.interrupt import StopRequest
from search.run.state import Search, note_machine, say, update_run_folder

RETIME_ROUNDS = 5  # re-timing the front can reshape it; the rounds that follow re-time newcomers


def retime_front(search: Search, study: optuna.Study, dispatcher: Dispatcher, stop: StopRequest) -> None:
    """Re-time every Pareto member with its node to itself, until the front is all final.

    New figures can reshape the front, so this repeats for members not yet re-timed; one
    whose model left models/ during the search is rebuilt from its parameters.
    """
    _, front = update_run_folder(search, study.get_trials(deepcopy=False), {})
    for _ in range(RETIME_ROUNDS):
        todo = [int(n) for n in front["trial"] if int(n) not in search.finals]
        if not todo or stop.requested:
            return
        say(f"re-timing phase: re-timing {len(todo)} Pareto member(s), each alone on its node")
        trials = study.get_trials(deepcopy=False)
        kept = {n: _kept_model(search, n) for n in todo}
        candidates = {n: Candidate.from_dict(attributes.candidate_of(trials[n])) for n in todo}
        refs = {dispatcher.remeasure(c, kept[n]): n for n, c in candidates.items()}
        rebuilt = _collect_finals(search, study, refs, stop, to_rebuild={n for n in todo if not kept[n]},
                                  release_claims=dispatcher.release_claims)
        _, front = update_run_folder(search, trials, rebuilt, refresh_cards=True)


def _kept_model(search: Search, trial: int) -> bytes:
    path = search.run_dir / "models" / f"trial-{trial}.onnx"
    return path.read_bytes() if path.exists() else b""


def _collect_finals(search: Search, study: optuna.Study, refs: dict[ray.ObjectRef, int], stop: StopRequest,
                    to_rebuild: set[int],
                    release_claims: Callable[[ray.ObjectRef, TrialResult], None]) -> dict[int, bytes]:
    """Stores each re-measurement as it lands; returns the models of ``to_rebuild``, rebuilt."""
    rebuilt: dict[int, bytes] = {}
    total = len(refs)
    while refs and not stop.requested:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
        for ref in ready:
            number = refs.pop(ref)
            result = task_result(ref)
            release_claims(ref, result)
            take_error(search.run_dir, number, result)
            note_machine(search, result)
            search.finals[number] = studies.store_final(study, number, result)
            if result.error:
                say(f"re-timing phase: trial {number} could not be re-timed ({result.error}); it keeps its search "
                    "figures")
                continue
            if number in to_rebuild:
                rebuilt[number] = result.model_bytes
            say(f"re-timing phase: {total - len(refs)}/{total} · trial {number}: "
                f"{result.metrics.get('latency_ms', float('nan')):.3f} ms p50"
                + (" (rebuilt)" if number in rebuilt else ""))
    return rebuilt
