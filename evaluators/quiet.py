"""A quiet node for timing: trials build side by side, but a model is timed only when nothing else runs.

A readers-writer lock over one file per node: building takes it shared, measuring takes it
exclusive. A worker that has built a model next asks to measure, and takes no new shared
lock until it has, so a waiting measurement gets the node once the builds in progress end.
The kernel frees an flock when its holder dies, so a killed worker cannot wedge the node.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Iterator

LOCK_PATH = Path(tempfile.gettempdir()) / f"optsearch-measure-{os.getuid()}.lock"


@contextlib.contextmanager
def _flock(mode: int, path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def building(path: Path = LOCK_PATH) -> contextlib.AbstractContextManager[None]:
    """Shared: any number of trials may build (prune, distill, quantize) at once."""
    return _flock(fcntl.LOCK_SH, path)


def measuring_alone(path: Path = LOCK_PATH) -> contextlib.AbstractContextManager[None]:
    """Exclusive: no build and no other measurement runs on this node meanwhile."""
    return _flock(fcntl.LOCK_EX, path)
