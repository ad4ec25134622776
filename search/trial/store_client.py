"""The worker's view of the run's artifact store: a stage's output (the recovered student, the finished
model) is taken from the store when an earlier trial built it, and put there when this one builds it.

The store itself (search/run/store.py) is one Ray actor on the driver's node that keeps the files;
a worker reaches it by name and keeps its recent artifacts in memory. A claim names the trial building
an artifact (its Ray task), so that two trials needing it at once do not both build it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from search.runtime.node_lock import not_building

CLAIM_POLL_S = 0.2  # how often a worker waiting for another's build asks again


def stage_key(stage: str, config: dict[str, Any], input_key: str, target: str) -> str:
    """An artifact's address: its stage, the settings that built it, what it was built from, where."""
    blob = json.dumps([stage, config, input_key, target], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]



@dataclass
class Artifact:
    """A stage's output: the ONNX bytes, what its build learned, and what building it from scratch took."""

    data: bytes
    facts: dict[str, Any] = field(default_factory=dict)
    build_s: float = 0.0



@dataclass
class Reuse:
    """One trial's reuse: artifacts taken from the store instead of built, and the build time that saved."""

    hits: int = 0
    saved_s: float = 0.0

    def as_metrics(self) -> dict[str, Any]:
        return {"store_hits": self.hits, "build_s_saved": round(self.saved_s, 3)}



class StageStore:
    """What a worker builds through: its recent artifacts in memory, the run's store (``service``, a Ray
    actor handle; None outside a run) behind them. ``claimant`` names the trial building (its Ray task)."""

    def __init__(self, service: Any = None, claimant: str = "", recent: OrderedDict[str, Artifact] | None = None,
                 max_entries: int = 16) -> None:
        self.service, self.claimant = service, claimant
        self.max_entries = max_entries
        self._recent = RECENT if recent is None else recent  # a worker's, kept across its trials
        self.reuse = Reuse()

    def get_or_build(self, key: str, build: Callable[[], Artifact]) -> Artifact:
        """The stored artifact of ``key``, else ``build()``'s, stored for every later trial."""
        found = self._recent.get(key) or self._from_service(key)
        if found is not None:
            self.reuse.hits += 1
            self.reuse.saved_s += found.build_s
            self._remember(key, found)
            return found
        try:
            made = build()
        except BaseException:
            if self.service is not None:
                self.service.release.remote(self.claimant)  # whoever waits on it builds it instead
            raise
        if self.service is not None:
            _ray().get(self.service.put.remote(key, made, self.claimant))
        self._remember(key, made)
        return made

    def _from_service(self, key: str) -> Artifact | None:
        """The stored artifact; None when this caller is to build it (after waiting out another's build)."""
        if self.service is None:
            return None
        while True:
            verdict, found = _ray().get(self.service.lookup.remote(key, self.claimant))
            if verdict != "wait":
                return found
            # waiting is not building: a build that held the node meanwhile would deadlock with the builder it
            # waits for, when that one times a recovery rung (it needs the node to itself)
            with not_building():
                time.sleep(CLAIM_POLL_S)

    def _remember(self, key: str, artifact: Artifact) -> None:
        self._recent[key] = artifact
        self._recent.move_to_end(key)
        while len(self._recent) > self.max_entries:
            self._recent.popitem(last=False)



RECENT: OrderedDict[str, Artifact] = OrderedDict()  # this process's recent artifacts (Ray reuses worker processes)


def _ray():
    import ray

    return ray



@functools.cache
def service(name: str) -> Any:
    """The store actor named ``name``, looked up once per worker process."""
    import ray

    return ray.get_actor(name)
