"""A quiet node for timing: trials build side by side, but a model is timed only when nothing else runs.

A readers-writer lock over files, one set per node: building takes the node shared,
measuring takes it exclusive. flock gives a waiting writer no priority, so new builds could
keep overlapping and starve a measurement; a turnstile fixes that: a measurement holds the
turnstile while it waits, and a build passes the turnstile before it takes its shared lock,
so no build starts while a measurement is queued. The kernel frees an flock when its holder
dies, so a killed worker cannot wedge the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
from pathlib import Path
from collections.abc import Iterator

# One per machine: every run on it, whoever started it, times only while nothing of any run builds.
# OPTSEARCH_MEASURE_LOCK names another, for processes whose timings nobody reads: a test suite's
# parallel processes each take their own, so that one's searches never wait for the other's.
LOCK_PATH = Path(os.environ.get("OPTSEARCH_MEASURE_LOCK")
                 or Path(tempfile.gettempdir()) / f"optsearch-measure-{os.getuid()}.lock")


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _turnstile(path: Path) -> Path:
    return path.with_name(path.name + ".turnstile")


_THIS_THREAD = threading.local()  # .building: this thread's shared holds while it builds, as (lock path, file)


def _building() -> list[tuple[Path, object]]:
    if not hasattr(_THIS_THREAD, "building"):
        _THIS_THREAD.building = []
    return _THIS_THREAD.building


def _take_shared(path: Path, handle) -> None:
    with _flock(_turnstile(path), fcntl.LOCK_EX):
        pass
    fcntl.flock(handle, fcntl.LOCK_SH)


@contextlib.contextmanager
def building(path: Path = LOCK_PATH) -> Iterator[None]:
    """Shared: any number of trials build (prune, distill, quantize) at once, none while a timing waits."""
    with open(path, "a+") as handle:
        _take_shared(path, handle)
        _building().append((path, handle))
        try:
            yield
        finally:
            _building().remove((path, handle))
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def not_building(path: Path = LOCK_PATH) -> Iterator[None]:
    """This thread's shared holds of ``building`` set aside meanwhile, and taken again after: for a wait
    inside a build (on another worker's build of the same artifact, on the node to time a rung's
    quick build) that must not keep the node from a measurement."""
    held = [handle for held_path, handle in _building() if held_path == path]
    for handle in held:
        fcntl.flock(handle, fcntl.LOCK_UN)
    try:
        yield
    finally:
        for handle in held:
            _take_shared(path, handle)


@contextlib.contextmanager
def measuring_alone(path: Path = LOCK_PATH) -> Iterator[None]:
    """Exclusive: no build and no other measurement runs on this node meanwhile.

    Inside ``building`` (a recovery rung times a quick build mid-training) the build's own shared
    hold is set aside meanwhile (``not_building``): holding it, the exclusive lock would wait on itself.
    """
    with not_building(path), contextlib.ExitStack() as node:
        with _flock(_turnstile(path), fcntl.LOCK_EX):  # released once the node is ours, so builds queue again
            node.enter_context(_flock(path, fcntl.LOCK_EX))
        yield
