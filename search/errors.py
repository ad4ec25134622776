"""Public front: the errors a plugin raises (``ConfigError`` for bad input, ``NotApplicable`` for a setting
a model cannot take). They live in search/core/errors.py; users' code imports them from here."""

from search.core.errors import ConfigError, NotApplicable

__all__ = ["ConfigError", "NotApplicable"]
