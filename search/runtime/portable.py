"""Run and time an ONNX model under a parallelism mode, with numpy and onnxruntime alone.

This file is copied as it is into every bundle that ``python -m search.pick --out`` writes
(search/bundle/), so that a picked model runs on a deployment machine the way it was measured,
without this project, torch, Ray or Optuna. It must import nothing but the standard library,
numpy and onnxruntime (tests/test_bundle.py checks). The project's runners (runners.py) and the
latency evaluator are built on it, so the search and the bundle share one implementation.

Every runner takes the model's inputs by name (``feeds``, each batch-major: row i of every
input is one example) and returns all the model's outputs, in the graph's order, for the whole
batch. data_parallel runs its replicas on threads at once, and pipeline runs its stages on
threads at once over micro-batches. ONNX Runtime releases the GIL inside
``InferenceSession.run``, so these threads use separate cores.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

Providers = list[Any]  # ONNX Runtime's providers argument: names or (name, options) pairs
Feeds = Mapping[str, np.ndarray]  # a model's inputs by name
Z_95 = 1.959964
CHUNK = 10  # timed calls between two looks at the interval: checking is cheap, but not free


class Runner(Protocol):
    """Takes a batch as the model's inputs by name, returns all its outputs (graph order) for the whole batch."""

    def run(self, feeds: Feeds) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def _ort_value(value: Any) -> Any:
    """A plain value for a SessionOptions attribute: an enum member's name (``ORT_ENABLE_BASIC``) becomes the member."""
    if isinstance(value, str):
        for enum in (ort.GraphOptimizationLevel, ort.ExecutionMode, ort.ExecutionOrder):
            if hasattr(enum, value):
                return getattr(enum, value)
    return value


def session_options(settings: Mapping[str, Any]) -> ort.SessionOptions:
    """SessionOptions from plain settings: the mode's threads, then any knob's ``session_options``
    (SessionOptions attributes by name) and ``session_config`` (config entries)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
                              "parallel": ort.ExecutionMode.ORT_PARALLEL}[settings["execution_mode"]]
    options.log_severity_level = 3
    for name, value in settings.get("session_options", {}).items():
        if not hasattr(options, name):
            raise ValueError(f"onnxruntime.SessionOptions has no attribute {name!r}")
        setattr(options, name, _ort_value(value))
    for key, value in settings.get("session_config", {}).items():
        options.add_session_config_entry(key, str(value))
    return options


def load_provider_libraries(provider: str) -> None:
    """onnxruntime-gpu finds CUDA and cuDNN from the nvidia-* pip packages (or torch's) only once
    told to; a provider that cannot load them would fall back to the CPU."""
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def open_session(model: bytes | str, settings: Mapping[str, Any], providers: Providers) -> ort.InferenceSession:
    """A session of ``model`` (bytes or a path) under ``settings`` on ``providers``."""
    return ort.InferenceSession(model, session_options(settings), providers=providers)


def split_batch(feeds: Feeds, parts: int) -> list[dict[str, np.ndarray]]:
    """``feeds`` cut along axis 0 into at most ``parts`` shares of the same rows of every input.

    Shares are as even as ``np.array_split`` makes them; empty ones (a batch smaller than
    ``parts``) are left out.

    Raises:
        ValueError: when the inputs do not agree on the batch size.
    """
    sizes = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in feeds.items()}
    if len(set(sizes.values())) > 1 or None in sizes.values():
        raise ValueError(f"every input must have the batch on axis 0, of one size; got {sizes}")
    pieces = {name: np.array_split(value, parts) for name, value in feeds.items()}
    shares = [{name: split[k] for name, split in pieces.items()} for k in range(parts)]
    return [share for share in shares if all(len(value) for value in share.values())]


def batch_of(rows: Feeds, size: int) -> dict[str, np.ndarray]:
    """One call's inputs of ``size`` rows: the first rows of ``rows``, repeated when there are fewer.
    The search times every candidate on this batch of its test split, and verify.py on the bundled sample."""
    count = len(next(iter(rows.values())))
    reps = -(-size // count)
    return {k: np.ascontiguousarray(np.concatenate([v] * reps)[:size]) for k, v in rows.items()}


def _concatenate(results: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output of several shares' results joined along axis 0, in the shares' order."""
    return [np.concatenate(column) for column in zip(*results, strict=True)]


class SessionRunner:
    """One session: ``sequential``, ``intra_op`` and ``inter_op`` differ only in its options."""

    def __init__(self, model: bytes | str, settings: Mapping[str, Any], providers: Providers) -> None:
        self.session = open_session(model, settings, providers)
        self.sessions = [self.session]

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return self.session.run(None, dict(feeds))

    def close(self) -> None:
        pass


class DataParallelRunner:
    """``replicas`` one-thread sessions; a batch is split into that many shares, run at once."""

    def __init__(self, model: bytes | str, settings: Mapping[str, Any], providers: Providers) -> None:
        self.replicas = [open_session(model, settings, providers) for _ in range(settings["replicas"])]
        self.sessions = self.replicas
        self.pool = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="replica")

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        shares = split_batch(feeds, len(self.replicas))
        pairs = zip(self.replicas, shares, strict=False)  # fewer shares than replicas when the batch is small
        futures = [self.pool.submit(replica.run, None, share) for replica, share in pairs]
        return _concatenate([f.result() for f in futures])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


_STOP = object()


class StageRunner:
    """A model already cut into stage models (``parts``, in order; see graph_split.py), one
    session and one thread each, linked by queues.

    A batch is split into ``micro_batches`` parts that flow through the stages in order, so
    while stage 2 works on part 1, stage 1 already works on part 2. What flows is a dict of
    named tensors per part: its graph inputs and what the stages so far gave. Each stage takes
    the names its session reads, adds its outputs, and drops what no later stage nor the
    caller (``output_names``: the whole model's outputs, in order) needs. Only graph inputs
    are split along axis 0; anything a stage hands on (shape values included) belongs to its
    part whole.
    """

    def __init__(self, parts: list[bytes | str], output_names: list[str], settings: Mapping[str, Any],
                 providers: Providers) -> None:
        self.stages = [open_session(part, settings, providers) for part in parts]
        self.sessions = self.stages
        # names read once here, not on every micro-batch: runners are timed
        self.reads = [[i.name for i in session.get_inputs()] for session in self.stages]
        self.gives = [[o.name for o in session.get_outputs()] for session in self.stages]
        self.output_names = list(output_names)
        self.keep = self._kept_after_each_stage()
        self.input_names = set().union(*self.reads) - set().union(*self.gives)
        self.closed = False
        self.micro_batches = settings["micro_batches"]
        self.queues: list[queue.Queue] = [queue.Queue() for _ in range(len(self.stages) + 1)]
        self.threads = [threading.Thread(target=self._stage_loop, args=(k,), daemon=True, name=f"stage-{k}")
                        for k in range(len(self.stages))]
        for thread in self.threads:
            thread.start()

    def _kept_after_each_stage(self) -> list[set[str]]:
        """For each stage, the names a part still needs after it: later stages' inputs and the graph's outputs."""
        keep, needed = [], set(self.output_names)
        for reads in reversed(self.reads):
            keep.append(set(needed))
            needed |= set(reads)
        return keep[::-1]

    def _run_stage(self, k: int, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A part's tensors after stage ``k``: its outputs added, what nobody reads any more dropped."""
        outputs = self.stages[k].run(self.gives[k], {name: tensors[name] for name in self.reads[k]})
        merged = {**tensors, **dict(zip(self.gives[k], outputs, strict=True))}
        return {name: value for name, value in merged.items() if name in self.keep[k]}

    def _stage_loop(self, k: int) -> None:
        inbox, outbox = self.queues[k], self.queues[k + 1]
        while True:
            item = inbox.get()
            if item is _STOP:
                outbox.put(_STOP)
                return
            index, value = item
            if not isinstance(value, BaseException):  # a failed part passes through to the caller
                try:
                    value = self._run_stage(k, value)
                except Exception as exc:  # noqa: BLE001 - handed to run(), which raises it
                    value = exc
            outbox.put((index, value))

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        if self.closed:
            raise RuntimeError("the pipeline is closed: its stage threads have stopped")
        missing = self.input_names - feeds.keys()
        if missing:  # found here, not as a KeyError in a stage thread
            raise ValueError(f"the feeds lack the model's input(s) {sorted(missing)}")
        parts = split_batch(feeds, self.micro_batches)
        for index, part in enumerate(parts):
            self.queues[0].put((index, part))
        done = dict(self.queues[-1].get() for _ in parts)
        failed = next((v for v in done.values() if isinstance(v, BaseException)), None)
        if failed is not None:
            raise failed
        return _concatenate([[done[i][name] for name in self.output_names] for i in range(len(parts))])

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queues[0].put(_STOP)
        for thread in self.threads:
            thread.join()


def median_ci(samples: np.ndarray, z: float = Z_95) -> tuple[float, float]:
    """A ~95 % confidence interval for the median, from the sorted samples themselves.

    The number of samples below the true median is Binomial(n, 1/2); the interval runs from
    the order statistic ``z * sqrt(n) / 2`` ranks below the middle to as many above it. It
    needs no assumption about the shape of the timing distribution, whose tail of rare
    stalls makes mean +- std meaningless. With fewer than 6 samples it is the min-max range.
    """
    ordered = np.sort(np.asarray(samples, dtype=float))
    n = len(ordered)
    if n == 0:
        raise ValueError("no samples")
    half = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)
    high = min(n - 1, math.ceil(n / 2 + half))
    return float(ordered[low]), float(ordered[high])


def relative_half_width(samples: np.ndarray) -> float:
    """Half the CI's width over the median: 0.01 means the median is known to about +-1 %."""
    low, high = median_ci(samples)
    return (high - low) / 2 / float(np.median(samples))


def time_calls(runner: Runner, batch: Feeds, warmup: int, min_repeats: int, max_repeats: int, budget_s: float,
               ci_rel: float, min_time_s: float) -> np.ndarray:
    """Seconds per call of ``runner`` on ``batch``: ``warmup`` untimed calls, then timed calls
    until the p50's interval is within +-``ci_rel`` (after ``min_repeats`` calls and
    ``min_time_s``), ``max_repeats`` is reached or ``budget_s`` is spent.

    ``min_time_s`` matters for fast models: 50 calls of 0.15 ms span 8 ms, and a burst of
    another process (the driver telling the study, a Ray heartbeat) can slow every one of
    them alike, which a tight interval does not reveal. Spread over 0.25 s, such a burst
    touches a minority of the calls and the p50 stands.
    """
    for _ in range(warmup):
        runner.run(batch)
    times: list[float] = []
    started = time.perf_counter()
    deadline = started + budget_s
    while len(times) < max_repeats:
        for _ in range(min(CHUNK, max_repeats - len(times))):
            start = time.perf_counter()
            runner.run(batch)
            times.append(time.perf_counter() - start)
        now = time.perf_counter()
        if len(times) < min_repeats or (now - started < min_time_s and now < deadline):
            continue
        if now >= deadline or relative_half_width(np.asarray(times)) <= ci_rel:
            break
    return np.asarray(times)
