"""The candidate a trial builds: the fields the configured knobs declare, plain data across the Ray boundary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from search.core.session_settings import runtime_settings

CORE_FIELDS = ("target", "batch_size")  # every candidate has them, whatever knobs are configured
RUNTIME_KEY = "runtime"  # the ONNX Runtime settings the knobs composed, stored with the fields


class UnknownField(ValueError):
    """A candidate field no configured knob declares: an error, never silently dropped."""


class Candidate:
    """What to build and how to run it: one value per declared field, read as attributes.

    ``target`` and ``batch_size`` are always there; every other field is a knob's (the
    default space: quant_bits, quant_mode, quant_granularity, prune_rate, prune_round_to,
    distill_temperature, distill_alpha, parallelism, degree, micro_batches). ``runtime`` is the ONNX Runtime
    settings the knobs composed for it (see search/runtime/session_settings.py). A field a
    candidate lacks reads as AttributeError; ``get`` gives a default.
    """

    __slots__ = ("_values", "runtime")

    def __init__(self, target: str, runtime: Mapping[str, Any] | None = None, **values: Any) -> None:
        values.setdefault("batch_size", 32)
        object.__setattr__(self, "_values", {"target": target, **values})
        object.__setattr__(self, "runtime", dict(runtime) if runtime is not None else _default_runtime(values))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"candidate has no field {name!r} (no configured knob sets it)") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Candidate is immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Candidate) and self._values == other._values and self.runtime == other.runtime

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __reduce__(self) -> tuple:
        # pickled by its fields (Ray sends it to workers): the default would set the slots through __setattr__
        return (_rebuilt, (self._values, self.runtime))

    def __repr__(self) -> str:
        return f"Candidate({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    @property
    def values(self) -> dict[str, Any]:
        return dict(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def replace(self, **changes: Any) -> Candidate:
        values = {**self._values, **changes}
        runtime = None if any(k in changes for k in ("parallelism", "degree", "micro_batches")) else self.runtime
        return Candidate(runtime=runtime, **values)

    def to_dict(self) -> dict[str, Any]:
        """Flat fields plus ``runtime``: how it is stored in study.db and sent to workers."""
        return {**self._values, RUNTIME_KEY: dict(self.runtime)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], declared: Iterable[str] | None = None) -> Candidate:
        """The candidate ``data`` holds; with ``declared`` (the configured knobs' fields), a field
        outside it is an :class:`UnknownField` error."""
        values = {k: v for k, v in data.items() if k != RUNTIME_KEY}
        found = cls(runtime=data.get(RUNTIME_KEY), **values)
        if declared is not None:
            found.check_declared(declared)
        return found

    def check_declared(self, declared: Iterable[str]) -> None:
        """Raise :class:`UnknownField` for a field outside ``declared`` (the configured knobs' fields)."""
        unknown = sorted(set(self._values) - set(declared) - set(CORE_FIELDS))
        if unknown:
            raise UnknownField(f"candidate field(s) {', '.join(unknown)} are declared by no configured knob "
                               f"(declared: {', '.join(sorted(set(declared) | set(CORE_FIELDS)))})")


def _rebuilt(values: Mapping[str, Any], runtime: Mapping[str, Any]) -> Candidate:
    return Candidate(runtime=runtime, **values)


def _default_runtime(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of a candidate made by hand (tests, benches): its parallelism fields, else sequential."""
    degree = values.get("degree", values.get("threads", 1))
    return runtime_settings(values.get("parallelism") or "sequential", degree or 1, values.get("micro_batches"))
