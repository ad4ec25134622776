"""One run folder, one driver: a lock file in the folder, held while the driver runs.

``flock`` is released by the kernel when its holder dies, so a driver killed with ``kill -9``
leaves nothing that blocks a resume. The file names who holds it (host, pid, start time), for
the one line a second driver is refused with. On NFS, Linux maps flock to the server's
byte-range locks: it works where the server runs a lock manager; where it does not (ENOLCK),
the driver says so once and runs unguarded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import IO

from search.errors import ConfigError

LOCK_NAME = ".driver.lock"


class RunLock:
    """Held by the driver that runs ``run_dir``; a second driver on it is refused."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.handle: IO[str] | None = None
        self.unguarded = False  # the file system cannot lock (NFS without a lock manager)

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as exc:
            raise ConfigError(f"cannot write results folder {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise ConfigError(f"run {self.path.parent} is being run by another driver ({holder}); wait for it to "
                              "finish or stop it, then run the same command to resume") from None
        except OSError as exc:
            if exc.errno != errno.ENOLCK:
                raise
            self.unguarded = True
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "started": datetime.now().isoformat(timespec="seconds")}))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            if not self.unguarded:
                fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (ValueError, KeyError, TypeError):
        return "a driver that has not yet said who it is"
