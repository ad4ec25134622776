"""``search.optimize``: the same search from Python, on a model and arrays held in memory.

    import search
    front = search.optimize(model, train=(x_train, y_train), val=(x_val, y_val), test=(x_test, y_test),
                            metric=search.metrics.MacroF1(), overrides=["trials=20"])
    front.table                      # the Pareto front (pareto.csv) with each model's file
    outputs = front.model(trial=3)({"input": x_test[:8]})   # a plain ONNX Runtime session

The overrides are the command line's (``trials=``, ``run=``, ``+target=gpu``, ``space=full``, ...),
and the results folder is the same as ``python -m search`` writes. A model class defined in the
notebook or script itself reaches the Ray workers: it is pickled by value (search/run/shipping.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
from omegaconf import OmegaConf
from torch import nn

from search.core.errors import ConfigError
from search.core.metrics import Metric
from search.workloads import Split, Workload

SplitLike = Split | tuple | Mapping


@dataclass
class OnnxModel:
    """A front member's model in a plain ONNX Runtime session. It takes its inputs as a bundle's ``load(DIR)``
    does: by name (``model(input_ids=..., attention_mask=...)``), as a dict, or one array for a one-input
    model; arrays are cast to the input's dtype where that loses nothing. It returns every output by name."""

    path: Path

    def __post_init__(self) -> None:
        self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.input_names = list(self.inputs)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def feeds(self, inputs: Mapping[str, Any] | np.ndarray | None, named: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if inputs is not None and not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise ConfigError(f"the model takes {len(self.inputs)} inputs ({', '.join(self.inputs)}): "
                                  "pass them by name")
            inputs = {self.input_names[0]: inputs}
        given = {**(inputs or {}), **named}
        if set(given) != set(self.inputs):
            raise ConfigError(f"the model takes the inputs {sorted(self.inputs)}; got {sorted(given)}")
        return {name: _as_input(name, value, self.inputs[name].type) for name, value in given.items()}

    def __call__(self, inputs: Mapping[str, Any] | np.ndarray | None = None, /, **named: Any) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, self.feeds(inputs, named))
        return dict(zip(self.output_names, outputs, strict=True))


ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def _as_input(name: str, value: Any, onnx_type: str) -> np.ndarray:
    array, dtype = np.asarray(value), ONNX_TYPES.get(onnx_type)
    if dtype is not None and array.dtype != dtype:
        if not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ConfigError(f"input {name}: expected {np.dtype(dtype)}, got {array.dtype}")
        array = array.astype(dtype)
    return np.ascontiguousarray(array)


@dataclass
class Front:
    """The run's Pareto front: ``table`` (pareto.csv plus each member's ``model_path``) and its folder."""

    table: pd.DataFrame
    run_dir: Path

    def model(self, trial: int) -> OnnxModel:
        """The front member ``trial``'s model, ready to run."""
        rows = self.table[self.table["trial"] == trial]
        if rows.empty:
            raise KeyError(f"trial {trial} is not on the front; members: {sorted(self.table['trial'])}")
        return OnnxModel(Path(rows["model_path"].iloc[0]))

    def bundle(self, trial: int, out: str | Path) -> Path:
        """Write front member ``trial``'s bundle to ``out`` (as ``python -m search.pick --out``): it runs
        and verifies with onnxruntime and numpy alone (``out/run.py``, ``out/verify.py``)."""
        from search.pick import run_schema, write_out

        rows = self.table[self.table["trial"] == trial]
        if rows.empty:
            raise KeyError(f"trial {trial} is not on the front; members: {sorted(self.table['trial'])}")
        config, schema = run_schema(self.run_dir)
        write_out(self.run_dir, rows.iloc[0], Path(out), config, schema)
        return Path(out)


def as_split(value: SplitLike, name: str) -> Split:
    """A Split from a Split, an ``(x, y)`` pair, or a dict ``{"x": ..., "y": ...}``; x may be a dict of named arrays."""
    if isinstance(value, Split):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Split(*value)
    if isinstance(value, Mapping) and "x" in value:
        return Split(value["x"], value.get("y"))
    raise ConfigError(f"optimize: {name} must be a Split, an (x, y) pair or {{'x': ..., 'y': ...}}; "
                      f"got {type(value).__name__}")


def _content_key(model: nn.Module, splits: Sequence[Split]) -> str:
    """Stage caches are keyed by model and data: the same name with other weights is another workload."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    for split in splits:
        for array in split.inputs.values():
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def unavailable(name: str) -> Workload:
    """What the stored config of a run started from Python names as its workload factory."""
    raise ConfigError(f"the workload {name} of this run was handed in from Python (search.optimize); "
                      "it cannot be made again from the run folder: call search.optimize again with the same model")


def optimize(model: nn.Module, train: SplitLike, val: SplitLike, test: SplitLike, metric: Metric | None = None,
             overrides: Sequence[str] = (), name: str = "model", **workload_options: Any) -> Front:
    """Run the search on ``model`` and its splits; return the Pareto front.

    Args:
        model: the trained torch model (one input: called ``model(x)``; several: ``model(**inputs)``).
        train, val, test: the splits (see ``as_split``); the metric is measured on ``test`` only.
        metric: the task metric (search/metrics.py); None: accuracy.
        overrides: command-line overrides, e.g. ``["trials=20", "run=mine", "space=full"]``.
        name: the workload's name in cards and the results folder.
        workload_options: any other ``Workload`` field: ``axes``, ``keep``, ``classifier``,
            ``distill_epochs``, ``preprocessing``, ``input_notes``, ...
    """
    from search.config import compose_config
    from search.run.driver import run_search

    if not isinstance(model, nn.Module):
        raise ConfigError(f"optimize: model must be a torch.nn.Module, got {type(model).__name__}")
    splits = [as_split(s, n) for s, n in ((train, "train"), (val, "val"), (test, "test"))]
    workload = Workload(name, model.cpu().eval(), *splits, metric=metric,
                        key=workload_options.pop("key", f"{name}-{_content_key(model, splits)}"), **workload_options)
    cfg = compose_config(list(overrides))
    OmegaConf.set_struct(cfg, False)
    cfg.workload = {"_target_": "search.api.unavailable", "name": name, "key": workload.key}
    return load_front(run_search(cfg, workload))


def load_front(run_dir: Path) -> Front:
    """The front of a finished run folder, each member with the path of its model."""
    table = pd.read_csv(Path(run_dir) / "pareto.csv")
    table["model_path"] = [str(Path(run_dir) / "models" / f"trial-{int(t)}.onnx") for t in table["trial"]]
    return Front(table, Path(run_dir))
