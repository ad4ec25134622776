"""A trial's failure in one line, the reason behind it, and stopping a run that fails the same way every time.

A failed trial's error, as Ray reports it, carries terminal colour codes and a whole traceback;
the table gets one line (the exception and its message) and the run folder's ``errors.log`` the
rest. A reason is that line with its numbers, paths and addresses taken out, so that the same
mistake (a module the workers cannot import, a timeout too short) reads the same in every trial.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from search.config.settings import FailFast
from search.core.messages import TrialResult

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Died|Failure)\b:?.*)$")
PER_TRIAL = ("not applicable:",)  # a setting this model cannot take: that trial's own reason, never systematic
EXIT_SYSTEMATIC = 3  # bad input is 2, Ctrl-C 130


class SystematicFailure(Exception):
    """Trials fail for one reason again and again: the run stops (exit code 3) with that reason."""


def one_line(error: str, limit: int = 400) -> str:
    """The error as one line: colour codes gone; of a traceback, its last exception line."""
    text = ANSI.sub("", error or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        raised = [line for line in lines if EXCEPTION_LINE.match(line)]
        head = lines[0].split(":", 1)[0]  # who reported it: RayTaskError, WorkerCrashedError, ...
        last = raised[-1] if raised else lines[-1]
        lines = [last if last.startswith(head) or not raised else f"{head}: {last}"]
    return " ".join(" ".join(lines).split())[:limit]


def take_error(run_dir: Path, trial: int, result: TrialResult) -> None:
    """A failed trial's whole error (Ray's traceback and all) to the run folder's errors.log; the
    result keeps one line of it, for the table. Every result the driver takes in passes here."""
    if not result.error:
        return
    with open(run_dir / "errors.log", "a") as log:
        log.write(f"--- trial {trial}, {datetime.now().isoformat(timespec='seconds')}\n{result.error.rstrip()}\n")
    result.error = one_line(result.error)


def reason(error: str) -> str:
    """What stays the same when the same mistake fails another trial: numbers, paths, addresses out."""
    text = re.sub(r"\(at [\w.]+:\d+\)", "", one_line(error))
    text = re.sub(r"(/[\w.\-]+)+/?", "<path>", text)
    text = re.sub(r"0x[0-9a-fA-F]+|\b[0-9a-f]{12,}\b", "<id>", text)
    text = re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)
    return " ".join(text.split())


def likely_fix(why: str) -> str:
    """One suggestion for the reasons a first run meets most."""
    lowered = why.lower()
    if "modulenotfounderror" in lowered or "importerror" in lowered or "no module named" in lowered:
        return ("the Ray workers cannot import a module of your workload: install it on every node, or run from "
                "the folder that holds it")
    if "timed out" in lowered:
        return "trials take longer than trial_timeout_s: raise it, or leave it unset"
    if "memoryerror" in lowered or "out of memory" in lowered or "outofmemory" in lowered:
        return "trials run out of memory: lower batch_size or workers"
    if "died" in lowered or "crashed" in lowered:
        return "worker processes die: see errors.log in the run folder; max_retries=N re-runs such trials"
    return "see errors.log in the run folder for the whole traceback"


def verdict(rule: FailFast, errors: Sequence[str]) -> str | None:
    """The reason to stop under ``rule``, given the errors of the trials finished so far in order ("" completed),
    or None."""
    reasons = ["" if not e or e.startswith(PER_TRIAL) else reason(e) for e in errors]
    if rule.first and len(reasons) >= rule.first and reasons[0] and len(set(reasons[:rule.first])) == 1:
        return (f"the first {rule.first} trials all failed with the same reason: {one_line(errors[0])}; "
                f"likely fix: {likely_fix(reasons[0])}")
    counted = Counter(r for r in reasons if r)
    if len(reasons) >= rule.min_trials and counted:
        why, count = counted.most_common(1)[0]
        if count > rule.share * len(reasons):
            example = next(e for e, r in zip(errors, reasons, strict=True) if r == why)
            return (f"{count} of {len(reasons)} trials failed with the same reason: {one_line(example)}; "
                    f"likely fix: {likely_fix(why)}")
    return None
