"""Errors the driver turns into one clear line instead of a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


class NotApplicable(RuntimeError):
    """A knob value that would change nothing for this model; the trial is refused with this reason."""
