"""``python -m search [override ...]``: run (or resume) a search; bad input is one line and exit 2."""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from pathlib import Path

from search.core.errors import ConfigError

USAGE = """usage: python -m search [key=value ...] [+target=NAME]
  trials=N  run=NAME  seed=S  workers=W  sampler=tpe_refine|tpe|nsga2|random  workload=NAME
  cluster.address=auto|HOST:PORT  batch_size=B  (docs/overrides.md lists every override)"""


def _disk_trouble(exc: BaseException) -> bool:
    """A full or read-only disk, as the OS or SQLite reports it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "OperationalError" and ("disk is full" in text or "readonly" in text)


def _search(args: list[str]) -> Path:
    """Compose, then run: a mistyped override is refused before the run's own imports (torch, Ray: seconds)."""
    from search.config import compose_config

    cfg = compose_config(args)
    from search.run.driver import run_search

    return run_search(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    from search.run.failures import EXIT_SYSTEMATIC, SystematicFailure

    try:
        run_dir = _search(args)
    except ConfigError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the cause wrote
        return 2
    except SystematicFailure as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_SYSTEMATIC
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the disk filled or turned read-only during the run: what is recorded stays
        if not _disk_trouble(exc):
            raise
        print(f"error: the results folder's disk failed during the run ({' '.join(str(exc).split())[:200]}); finished "
              "trials are in study.db: free some space, then run the same command to resume", file=sys.stderr)
        return 2
    from search.run.summary import summary

    print(summary(run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
