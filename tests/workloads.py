"""Workload factories for integration tests, used as ``workload=...`` overrides like a user's own."""

from __future__ import annotations

import torch

from search.workloads import Workload, digits


class ConvOnlyNet(torch.nn.Module):
    """No Linear and no MatMul, so int4 weight-only has nothing to apply to."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 10, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def conv_only(seed: int = 0, epochs: int = 10) -> Workload:
    """The digits data with a small conv-only classifier trained for a few epochs."""
    from search.transforms.training import train_classifier

    train, val, test = digits.split_digits(seed)
    model = ConvOnlyNet()
    train_classifier(model, train, val, epochs=epochs, lr=5e-3, seed=seed)
    return Workload(name="conv-only", model=model.eval(), train=train, val=val, test=test,
                    classifier="body.2", distill_epochs=1, key=f"conv-only-{seed}-{epochs}")


def not_a_workload(seed: int = 0) -> dict:
    return {"model": None}


def wrong_shape(seed: int = 0) -> Workload:
    """The digits teacher handed 16x16 inputs: the data does not fit the model."""
    import numpy as np

    from search.workloads import Split

    base = digits.load(seed=seed)
    big = Split(np.zeros((8, 1, 16, 16), dtype=np.float32), np.zeros(8, dtype=np.int64))
    return Workload(name="wrong-shape", model=base.model, train=big, val=big, test=big)


class SvdHead(torch.nn.Module):
    """A classifier whose forward uses an SVD, which ONNX export does not support."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        singular = torch.linalg.svdvals(x.flatten(2).reshape(-1, 8, 8))
        return self.head(singular)


def unexportable(seed: int = 0) -> Workload:
    train, val, test = digits.split_digits(seed)
    return Workload(name="svd", model=SvdHead().eval(), train=train, val=val, test=test)


# --- Bad input with any model: tiny untrained models whose data or metric is wrong in one way each. ---
# Used as `~workload +workload._target_=tests.workloads.NAME` (tests/test_bad_input_any_model.py).

NOT_CALLABLE = 3  # a metric `fn` dotted path that names something other than a function


class TinyMLP(torch.nn.Module):
    """4 features -> ``classes`` scores (``classes=0``: one value per row, shape (batch,))."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.classes = classes
        self.body = torch.nn.Linear(4, max(classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out.squeeze(-1) if self.classes == 0 else out


class MaskedMLP(torch.nn.Module):
    """Two named inputs: float ``features`` and a ``mask`` of the features to use."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.body(features * mask.to(features.dtype))


def _rows(n: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def _tiny(name: str, model: torch.nn.Module | None = None, metric=None, make=None) -> Workload:
    """A tiny workload; ``make(x, y)`` builds each split (a plain Split by default)."""
    from search.workloads import Split

    torch.manual_seed(0)
    make = make or Split
    splits = [make(*_rows(n, seed)) for seed, n in enumerate((16, 8, 8))]
    return Workload(name=name, model=(model or TinyMLP()).eval(), train=splits[0], val=splits[1], test=splits[2],
                    metric=metric, distill_epochs=1)


def tiny_mlp(metric=None) -> Workload:
    """A well-formed tiny workload: only the ``metric`` handed in from config can be wrong."""
    return _tiny("tiny-mlp", metric=metric)


def _nan(output, targets) -> float:
    return float("nan")


def _raises(output, targets) -> float:
    raise ZeroDivisionError("the user's metric divided by zero")


def _array_valued(output, targets):
    import numpy as np

    return np.array([0.5, 0.7])


def metric_nan() -> Workload:
    from search.core.metrics import FromFunction

    return _tiny("metric-nan", metric=FromFunction(_nan, name="nanny"))


def metric_raises() -> Workload:
    from search.core.metrics import FromFunction

    return _tiny("metric-raises", metric=FromFunction(_raises, name="boom"))


def metric_not_a_number() -> Workload:
    from search.core.metrics import FromFunction

    return _tiny("metric-array", metric=FromFunction(_array_valued, name="two_values"))


def length_mismatch() -> Workload:
    """A split with 8 inputs and 7 labels."""
    from search.workloads import Split

    return _tiny("length-mismatch", make=lambda x, y: Split(x, y[:-1]))


def input_lengths_differ() -> Workload:
    """Two named inputs of different lengths in one split."""
    from search.workloads import Split

    return _tiny("input-lengths", MaskedMLP(), make=lambda x, y: Split({"features": x, "mask": x[:-1] > 0}, y))


def input_names_differ() -> Workload:
    """Train and val call the second input ``mask``, test calls it ``flags``."""
    from search.workloads import Split

    base = _tiny("names-differ", MaskedMLP(), make=lambda x, y: Split({"features": x, "mask": x > 0}, y))
    base.test = Split({"features": base.test.inputs["features"], "flags": base.test.inputs["mask"]}, base.test.y)
    return base


def input_dtypes_differ() -> Workload:
    """The mask is bool in train and val, int64 in test."""
    from search.workloads import Split

    base = _tiny("dtypes-differ", MaskedMLP(), make=lambda x, y: Split({"features": x, "mask": x > 0}, y))
    test = base.test.inputs
    base.test = Split({"features": test["features"], "mask": test["mask"].astype("int64")}, base.test.y)
    return base


def one_array_for_two_inputs() -> Workload:
    """A model taking ``features`` and ``mask`` handed one array."""
    return _tiny("one-array", MaskedMLP())


def flat_output_accuracy() -> Workload:
    """Accuracy (the default metric) on a model whose output is one value per row, shape (batch,)."""
    return _tiny("flat-output", TinyMLP(classes=0))


def mse_width_mismatch() -> Workload:
    """MSE on 3 output values per row against 2 label values per row."""
    from search.core.metrics import MeanSquaredError
    from search.workloads import Split

    return _tiny("mse-width", metric=MeanSquaredError(),
                 make=lambda x, y: Split(x, x[:, :2].copy()))


def no_labels() -> Workload:
    """Accuracy needs labels; every split has y=None."""
    from search.workloads import Split

    return _tiny("no-labels", make=lambda x, y: Split(x, None))


