"""The re-timing phase: after the search, every Pareto member and the baseline are timed again with their node to
themselves. The baseline is re-timed whether or not it is on the front: every ratio the run prints is against it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import optuna
import ray

from search.core import attributes
from search.core.attributes import Final
from search.core.candidate import Candidate
from search.core.messages import TrialResult
from search.strategy import study as studies
from search.run.cluster import task_result
from search.run.dispatcher import Dispatcher
from search.run.failures import take_error
from search.run.interrupt import StopRequest
from search.run.state import Search, note_machine, say, update_run_folder

RETIME_ROUNDS = 5  # re-timing the front can reshape it; the rounds that follow re-time newcomers
# Each re-timed trial is timed in at least this many sessions, a pass over all of them between two: their mean
# gives the figures, their scatter the intervals (search/results/intervals.py).
RETIME_SESSIONS = 2
# ... and in more when few trials are re-timed, up to RETIME_MAX_SESSIONS, so that the spread rests on at least
# SPREAD_DEGREES degrees of freedom: with a front of 3 and the baseline in 2 sessions, Student's t is 2.78 and
# the intervals a quarter wider than the spread needs (bench/figures.py, the digits); each extra session is one
# more re-measure task per trial (a median of 0.7 s there).
RETIME_MAX_SESSIONS = 4
SPREAD_DEGREES = 10


def retime_front(search: Search, study: optuna.Study, dispatcher: Dispatcher, stop: StopRequest) -> None:
    """Re-time the baseline and every Pareto member with its node to itself, until the front is all final.

    New figures can reshape the front, so this repeats for members not yet re-timed; one
    whose model left models/ during the search (the baseline, off the front) is rebuilt from its parameters.
    """
    _, front = update_run_folder(search, study.get_trials(deepcopy=False), {})
    baselines = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if attributes.is_baseline(t)]
    for _ in range(RETIME_ROUNDS):
        wanted = dict.fromkeys([*baselines, *(int(n) for n in front["trial"])])  # in order, once each
        sessions = search.settings.remeasure_sessions or sessions_for(len(wanted))
        todo = [n for n in wanted if _sessions(search.finals.get(n)) < sessions]
        if not todo or stop.requested:
            return
        say(f"re-timing phase: re-timing {_named(todo, baselines)}, each alone on its node, in "
            f"{sessions} sessions")
        trials = study.get_trials(deepcopy=False)
        kept = {n: _kept_model(search, n) for n in todo}
        candidates = {n: Candidate.from_dict(attributes.candidate_of(trials[n])) for n in todo}
        rebuilt, started = _sessions_of(search, study, dispatcher, stop, todo, (candidates, kept), sessions)
        _, front = update_run_folder(search, trials, rebuilt, refresh_cards=True)
        if not started:
            return


def _sessions_of(search: Search, study: optuna.Study, dispatcher: Dispatcher, stop: StopRequest, todo: list[int],
                 models: tuple[dict[int, Candidate], dict[int, bytes]], sessions: int) -> tuple[dict[int, bytes], bool]:
    """Times ``todo`` in up to ``sessions`` sessions, one pass over them all, then the next, each in a fresh
    process; ``models`` are each trial's candidate and kept model (empty: rebuilt in its first session).
    Returns the rebuilt models, and False when a session's process could not start (the phase ends there)."""
    candidates, kept = models
    rebuilt: dict[int, bytes] = {}
    wanted = [s for s in range(1, sessions + 1) if any(_sessions(search.finals.get(n)) < s for n in todo)]
    try:
        with SessionProcesses(dispatcher, sorted({candidates[n].target for n in todo}), wanted, stop) as processes:
            for session in wanted:
                due = [n for n in todo if _sessions(search.finals.get(n)) < session]
                if stop.requested:
                    break
                if due:
                    processes.begin(session, f"session {session}/{sessions}")
                    requests = [(n, candidates[n], kept[n] or rebuilt.get(n, b"")) for n in due]
                    to_rebuild = {n for n in due if not kept[n] and n not in rebuilt}  # later sessions reuse it
                    rebuilt |= _collect_finals(search, study, requests, stop, to_rebuild, dispatcher.release_claims,
                                               (session, sessions), processes)
                processes.end(session)
    except ray.exceptions.RayError as exc:  # the sessions so far stand; nothing is lost
        say(f"re-timing phase: a session's process could not start ({type(exc).__name__}: {exc}); "
            "the trials keep the figures measured so far")
        return rebuilt, False
    return rebuilt, True


class SessionProcesses:
    """The re-timing sessions' processes, a fresh one per session and target, all started together and ready
    (imports done, workload fetched) before the first session times anything: a process starting beside a
    measurement slows it, one that waits, ready, does not, and starting them side by side costs one start, not
    one per session. Each session's share of the target's Ray resources is 1 / sessions, so that all fit where
    one trial does (a GPU target's processes see its GPU). Before its first timing a session waits for its node
    to go quiet; a process lost mid-session is replaced before the next trial's timing; each session's are
    ended with it."""

    def __init__(self, dispatcher: Dispatcher, targets: list[str], sessions: list[int], stop: StopRequest) -> None:
        self.dispatcher, self.stop, self.share = dispatcher, stop, max(1, len(sessions))
        self.workers: dict[tuple[int, str], ray.actor.ActorHandle] = {}
        self.session, self.label = 0, ""
        started = time.perf_counter()
        pending = {}
        for session in sessions:
            for target in targets:
                self.workers[session, target], pending[session, target] = dispatcher.session_worker(target,
                                                                                                    self.share)
        pids = self._ready(list(pending.values()))
        if pids:
            say(f"re-timing phase: {len(pids)} fresh process(es) for {len(sessions)} session(s) ready in "
                f"{time.perf_counter() - started:.1f} s (pids {', '.join(str(p) for p in pids)})")

    def __enter__(self) -> SessionProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers.values():
            ray.kill(worker)

    def begin(self, session: int, label: str) -> None:
        """Session ``session`` starts: each of its processes waits for its node to go quiet, and says what it
        found."""
        self.session, self.label = session, label
        for (number, target), worker in self.workers.items():
            if number == session and not self.stop.requested:
                self._settle(target, worker)

    def end(self, session: int) -> None:
        for key in [k for k in self.workers if k[0] == session]:
            ray.kill(self.workers.pop(key))

    def remeasure(self, candidate: Candidate, model_bytes: bytes) -> ray.ObjectRef:
        return self.dispatcher.remeasure(self.workers[self.session, candidate.target], candidate, model_bytes)

    def renew(self, candidate: Candidate) -> None:
        """After a re-measurement that failed: its target's process may be gone, so a fresh one takes over."""
        key = (self.session, candidate.target)
        ray.kill(self.workers.pop(key))
        self.workers[key], ready = self.dispatcher.session_worker(candidate.target, self.share)
        if self._ready([ready]):
            self._settle(candidate.target, self.workers[key])

    def _ready(self, pending: list[ray.ObjectRef]) -> list[int]:
        """The processes' ids once all are ready ([] when a stop was asked first); a process that cannot start
        raises (a RayError: the phase ends, nothing is lost)."""
        ready: list[ray.ObjectRef] = []
        while not self.stop.requested and len(ready) < len(pending):
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        return [] if self.stop.requested else ray.get(pending)

    def _settle(self, target: str, worker: ray.actor.ActorHandle) -> None:
        settled = worker.settle.remote(self.dispatcher.search.settings.remeasure_quiet_s)
        while not self.stop.requested and not ray.wait([settled], timeout=0.5)[0]:
            pass
        if not self.stop.requested:
            start = ray.get(settled)
            say(f"re-timing phase: {self.label} on {target} in a fresh process (pid {start.pid}; "
                f"{start.settled.describe()})")


def sessions_for(trials: int) -> int:
    """The re-timing sessions each of ``trials`` re-timed trials gets: enough that the spread between sessions
    rests on SPREAD_DEGREES degrees of freedom (trials * (sessions - 1)), within the bounds."""
    wanted = 1 + math.ceil(SPREAD_DEGREES / max(1, trials))
    return max(RETIME_SESSIONS, min(RETIME_MAX_SESSIONS, wanted))


def _sessions(final: Final | None) -> float:
    """Re-timing sessions a trial has had; one that could not be re-timed has had them all (it keeps its figures)."""
    if final is None:
        return 0
    return 1 + len(final.sessions) if final.metrics else math.inf


def _named(todo: list[int], baselines: list[int]) -> str:
    members = [n for n in todo if n not in baselines]
    parts = ([f"the baseline (trial {', '.join(str(n) for n in todo if n in baselines)})"]
             if len(members) < len(todo) else []) + ([f"{len(members)} Pareto member(s)"] if members else [])
    return " and ".join(parts)


def _kept_model(search: Search, trial: int) -> bytes:
    path = search.run_dir / "models" / f"trial-{trial}.onnx"
    return path.read_bytes() if path.exists() else b""


def _collect_finals(search: Search, study: optuna.Study, requests: list[tuple[int, Candidate, bytes]],
                    stop: StopRequest, to_rebuild: set[int],
                    release_claims: Callable[[ray.ObjectRef, TrialResult], None],
                    session: tuple[int, int], processes: SessionProcesses) -> dict[int, bytes]:
    """Re-times one trial at a time and stores each re-measurement as it lands (``session``: which of how many;
    the first gives its figures, a later one another session of the same model); returns the models of
    ``to_rebuild``, rebuilt.

    One at a time, not one per worker: re-timed two at a time on a 2-core node, two-thread models measured
    23-38 % slower than in a fresh process (bench/figures.py, before this)."""
    rebuilt: dict[int, bytes] = {}
    total = len(requests)
    session, sessions = session
    for done, (number, candidate, model_bytes) in enumerate(requests, start=1):
        ref = processes.remeasure(candidate, model_bytes)
        while not stop.requested and not ray.wait([ref], timeout=0.5)[0]:
            pass
        if stop.requested:
            break
        result = task_result(ref)
        release_claims(ref, result)
        take_error(search.run_dir, number, result)
        note_machine(search, result)
        search.finals[number] = studies.store_final(study, number, result,
                                                    search.finals.get(number) if session > 1 else None)
        if result.error:
            say(f"re-timing phase: trial {number} could not be re-timed ({result.error}); it keeps its "
                + ("search figures" if session == 1 else "first session's figures"))
            processes.renew(candidate)
            continue
        if number in to_rebuild:
            rebuilt[number] = result.model_bytes
        say(f"re-timing phase: {done}/{total} · session {session}/{sessions} · trial {number}: "
            f"{result.metrics.get('latency_ms', float('nan')):.3f} ms p50"
            + (" (rebuilt)" if number in rebuilt else ""))
    return rebuilt
