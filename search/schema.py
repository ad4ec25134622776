"""Public front: ``Field`` (a knob's candidate field) and ``Column`` (an evaluator's or a fact's column), which
plugins declare. They live in search/core/schema.py; users' plugins import them from here."""

from search.core.schema import Column, Field, Schema

__all__ = ["Column", "Field", "Schema"]
