"""Run an ONNX model under a parallelism mode: what the evaluators time, meter and score.

Every mode is executed for real: data_parallel runs its replicas on threads at once, and
pipeline runs its stages on threads at once over micro-batches. ONNX Runtime releases the
GIL inside ``InferenceSession.run``, so these threads use separate cores.
Imports onnxruntime and onnx only (the memory probe runs this in a fresh process without torch).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from search.runtime.graph_split import split_model
from search.runtime.session_settings import session_options

Providers = list[Any]  # ONNX Runtime's providers argument: names or (name, options) pairs


class Runner(Protocol):
    """Takes a batch, returns the model's first output for the whole batch."""

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def _session(model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes, session_options(settings), providers=providers)


def _run_one(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


class SessionRunner:
    """One session: ``sequential``, ``intra_op`` and ``inter_op`` differ only in its options."""

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> None:
        self.session = _session(model_bytes, settings, providers)

    def run(self, x: np.ndarray) -> np.ndarray:
        return _run_one(self.session, x)

    def close(self) -> None:
        pass


class DataParallelRunner:
    """``replicas`` one-thread sessions; a batch is split into that many shares, run at once."""

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers) -> None:
        self.replicas = [_session(model_bytes, settings, providers) for _ in range(settings["replicas"])]
        self.pool = ThreadPoolExecutor(max_workers=len(self.replicas), thread_name_prefix="replica")

    def run(self, x: np.ndarray) -> np.ndarray:
        shares = [s for s in np.array_split(x, len(self.replicas)) if len(s)]
        pairs = zip(self.replicas, shares, strict=False)  # fewer shares than replicas when the batch is small
        futures = [self.pool.submit(_run_one, replica, share) for replica, share in pairs]
        return np.concatenate([f.result() for f in futures])

    def close(self) -> None:
        self.pool.shutdown(wait=True)


_STOP = object()


class PipelineRunner:
    """The graph cut into ``stages`` sessions, one thread each, linked by queues.

    A batch is split into ``micro_batches`` parts that flow through the stages in order, so
    while stage 2 works on part 1, stage 1 already works on part 2.
    """

    def __init__(self, model_bytes: bytes, settings: dict[str, Any], providers: Providers,
                 parts: list[bytes] | None = None) -> None:
        parts = parts or split_model(model_bytes, settings["stages"])
        self.stages = [_session(part, settings, providers) for part in parts]
        self.closed = False
        self.micro_batches = settings["micro_batches"]
        self.queues: list[queue.Queue] = [queue.Queue() for _ in range(len(self.stages) + 1)]
        self.threads = [threading.Thread(target=self._stage_loop, args=(k,), daemon=True, name=f"stage-{k}")
                        for k in range(len(self.stages))]
        for thread in self.threads:
            thread.start()

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
                    value = _run_one(self.stages[k], value)
                except Exception as exc:  # noqa: BLE001 - handed to run(), which raises it
                    value = exc
            outbox.put((index, value))

    def run(self, x: np.ndarray) -> np.ndarray:
        if self.closed:
            raise RuntimeError("the pipeline is closed: its stage threads have stopped")
        parts = [p for p in np.array_split(x, self.micro_batches) if len(p)]
        for index, part in enumerate(parts):
            self.queues[0].put((index, part))
        done = dict(self.queues[-1].get() for _ in parts)
        failed = next((v for v in done.values() if isinstance(v, BaseException)), None)
        if failed is not None:
            raise failed
        return np.concatenate([done[i] for i in range(len(parts))])

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
