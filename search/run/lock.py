"""One run folder, one driver: an flock on the run folder itself, held while the driver runs.

``flock`` is released by the kernel when its holder dies, so a driver killed with ``kill -9``
leaves nothing that blocks a resume. Locking the folder (not a file in it) means a refused
driver writes nothing there. Once the run is accepted, ``.driver.lock`` names who holds it
(host, pid, start time), for the one line a second driver is refused with. On NFS, Linux maps
flock to the server's byte-range locks, which need a lock manager on the server and a file open
for writing; where the lock cannot be taken (ENOLCK, EBADF) the driver runs unguarded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from search.core.errors import ConfigError
from search.core.files import write_text

LOCK_NAME = ".driver.lock"


class RunLock:
    """Held by the driver that runs ``run_dir``; a second driver on it is refused."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / LOCK_NAME
        self.fd: int | None = None
        self.unguarded = False  # the file system cannot lock (NFS without a lock manager)

    def acquire(self) -> RunLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(f"cannot write results folder {self.run_dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"run {self.run_dir} is being run by another driver ({self.holder()}); wait for it "
                              "to finish or stop it, then run the same command to resume") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EBADF):
                os.close(fd)
                raise
            self.unguarded = True
        self.fd = fd
        return self

    def announce(self) -> None:
        """Name this driver in the folder: called once the run is accepted (a refused one writes nothing)."""
        write_text(self.path, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                          "started": datetime.now().isoformat(timespec="seconds")}))

    def holder(self) -> str:
        try:
            return _describe(self.path.read_text())
        except OSError:
            return _describe("")

    def release(self) -> None:
        if self.fd is not None:
            if not self.unguarded:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

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
