"""Run an ONNX model under a parallelism mode: what the evaluators time, meter and score.

Every runner takes the model's inputs by name (``feeds``, each batch-major: row i of every
input is one example) and returns all the model's outputs, in the graph's order, for the
whole batch. Every mode is executed for real: data_parallel runs its replicas on threads at
once, and pipeline runs its stages on threads at once over micro-batches. ONNX Runtime releases
the GIL inside ``InferenceSession.run``, so these threads use separate cores.
Imports onnxruntime and onnx only (the memory probe runs this in a fresh process without torch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

from search.runtime.graph_split import split_model
from search.runtime.session_settings import session_options

Providers = list[Any]  # ONNX Runtime's providers argument: names or (name, options) pairs
Feeds = Mapping[str, np.ndarray]  # a model's inputs by name


class Runner(Protocol):
    """Takes a batch as the model's inputs by name, returns all its outputs (graph order) for the whole batch."""

    def run(self, feeds: Feeds) -> list[np.ndarray]: ...

    def close(self) -> None: ...


def _session(model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, session_options(settings), providers=providers)


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


def _concatenate(results: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Each output of several shares' results joined along axis 0, in the shares' order."""
    return [np.concatenate(column) for column in zip(*results, strict=True)]


class SessionRunner:
    """One session: ``sequential``, ``intra_op`` and ``inter_op`` differ only in its options."""

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> None:
        self.session = _session(model_bytes, settings, providers)

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        return self.session.run(None, dict(feeds))

    def close(self) -> None:
        pass


class DataParallelRunner:
    """``replicas`` one-thread sessions; a batch is split into that many shares, run at once."""

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> None:
        self.replicas = [_session(model_bytes, settings, providers) for _ in range(settings["replicas"])]
        self.pool = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="replica")

    def run(self, feeds: Feeds) -> list[np.ndarray]:
        shares = split_batch(feeds, len(self.replicas))
        pairs = zip(self.replicas, shares, strict=False)  # fewer shares than replicas when the batch is small
        futures = [self.pool.submit(replica.run, None, share) for replica, share in pairs]
        return _concatenate([f.result() for f in futures])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


_STOP = object()


class PipelineRunner:
    """The graph cut into ``stages`` sessions, one thread each, linked by queues.

    A batch is split into ``micro_batches`` parts that flow through the stages in order, so
    while stage 2 works on part 1, stage 1 already works on part 2. What flows is a dict of
    named tensors per part: its graph inputs and what the stages so far gave. Each stage takes
    the names its session reads, adds its outputs, and drops what no later stage nor the
    caller needs. Only graph inputs are split along axis 0; anything a stage hands on (shape
    values included) belongs to its part whole.
    """

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers,
                 parts: list[bytes] | None = None) -> None:
        parts = parts or split_model(model_bytes, settings["stages"])
        self.stages = [_session(part, settings, providers) for part in parts]
        # names read once here, not on every micro-batch: runners are timed
        self.reads = [[i.name for i in session.get_inputs()] for session in self.stages]
        self.gives = [[o.name for o in session.get_outputs()] for session in self.stages]
        self.output_names = [o.name for o in onnx.load_from_string(model_bytes).graph.output]
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


def make_runner(model_bytes: bytes, settings: dict[str, Any], providers: Providers,
                pipeline_parts: list[bytes] | None = None) -> Runner:
    """The runner of ``settings["parallelism"]`` (see search/session_settings.py); a pipeline
    takes its stage models from ``pipeline_parts`` when they were cut already."""
    if settings["parallelism"] == "pipeline":
        return PipelineRunner(model_bytes, settings, providers, pipeline_parts)
    kind = DataParallelRunner if settings["parallelism"] == "data_parallel" else SessionRunner
    return kind(model_bytes, settings, providers)
