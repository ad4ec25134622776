"""The live progress line: trials done, failures, front size, best so far, time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import pandas as pd


BEST_SHOWN = 2  # objectives whose best value the line shows: more would not fit on one line


def _best(front: pd.DataFrame, metric: str, direction: str) -> str:
    values = front[metric].dropna().astype(float)
    if values.empty:
        return f"{metric} n/a"
    best = values.max() if direction == "maximize" else values.min()
    return f"{'best' if direction == 'maximize' else 'lowest'} {metric} {best:.4g}"


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


@dataclass
class Progress:
    total: int
    already_done: int = 0
    objectives: Sequence[tuple[str, str]] = ()  # the best of the first BEST_SHOWN is shown
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    started: float = field(default_factory=time.perf_counter)
    open_line: bool = False  # a tty line is being rewritten in place
    time_budget_s: float | None = None  # a budget caps the time left

    def update(self, front: pd.DataFrame, done: int, failed: int, feasible: int | None = None) -> None:
        """One progress line; ``feasible`` (a constrained run's count of trials that met its limits) joins it."""
        elapsed = time.perf_counter() - self.started
        this_run = max(done - self.already_done, 1)
        left = elapsed / this_run * max(self.total - done, 0)
        if self.time_budget_s is not None:
            left = min(left, self.time_budget_s - elapsed)
        best = ""
        if len(front):
            best = "".join(f" · {_best(front, metric, direction)}"
                           for metric, direction in self.objectives[:BEST_SHOWN])
        limits = "" if feasible is None else f" · {feasible} feasible"
        line = (f"trials {done}/{self.total} · {failed} failed{limits} · front {len(front)}{best}"
                f" · {_clock(elapsed)} elapsed, ~{_clock(left)} left")
        if self.stream.isatty():
            self.stream.write("\r\033[K" + line)
            self.open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """Ends the in-place line, once, so that what is printed next starts on its own line."""
        if self.open_line:
            self.stream.write("\n")
            self.open_line = False
