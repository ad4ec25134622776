"""In-process cache of stage outputs, keyed by (stage, its config, its input's key, target).

Ray reuses worker processes, so trials that share a prefix (same prune rate and
distillation on the same teacher) skip the stages they share.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any, TypeVar
from collections.abc import Callable

T = TypeVar("T")


def stage_key(stage: str, config: dict[str, Any], input_key: str, target: str) -> str:
    blob = json.dumps([stage, config, input_key, target], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class StageCache:
    """A small LRU: enough for a worker's recent prefixes, bounded so memory stays flat."""

    def __init__(self, max_entries: int = 32) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0

    def get_or_build(self, key: str, build: Callable[[], T]) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        value = build()
        self._items[key] = value
        if len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        return value


STAGES = StageCache()
