"""Bring your own regression model: an MLP predicting disease progression on scikit-learn's diabetes table.

The same contract as the classifier example, with a metric that is not accuracy: the workload
names ``metric`` (here from the config, ``metric: {_target_: search.metrics.MeanSquaredError}``),
whose name becomes the results column and the objective (``mse``, minimized) and whose loss
(mean squared error) is what recovery training after pruning minimizes. The model maps the 10
standardized features to ``(batch, 1)``: the standardized target. Run it with:

    python -m search 'hydra.searchpath=[file://examples/regression/conf]' workload=regression
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split
from torch import nn

from search.metrics import MeanSquaredError, Metric
from search.transforms.training import train_model
from search.workloads import Split, Workload


def _splits(seed: int) -> tuple[tuple[Split, Split, Split], float, float]:
    """60 / 20 / 20 of the 442 patients; features and target standardized with the training split's statistics only.

    Returns:
        the splits, and the target's training mean and std (to turn an output back into disease progression).
    """
    x, y = load_diabetes(return_X_y=True)  # ships inside scikit-learn: nothing is downloaded
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, random_state=seed)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed)
    x_mean, x_std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    y_mean, y_std = float(y_train.mean()), float(y_train.std())

    def split(features: np.ndarray, target: np.ndarray) -> Split:
        # y is (n, 1), like the model's output; (n,) works as well
        return Split(((features - x_mean) / x_std).astype(np.float32),
                     ((target - y_mean) / y_std).astype(np.float32)[:, None])

    return (split(x_train, y_train), split(x_val, y_val), split(x_test, y_test)), y_mean, y_std


def load(seed: int = 0, hidden: int = 128, epochs: int = 60, distill_epochs: int = 30,
         metric: Metric | None = None) -> Workload:
    """The workload; ``metric`` comes from the config (mean squared error when None)."""
    metric = metric or MeanSquaredError()
    (train, val, test), y_mean, y_std = _splits(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(train.x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                          nn.Linear(hidden, 1))
    # Adam in batches of 64 on the 265 training rows; the epoch with the best validation MSE is kept
    # (the MLP overfits after about 20 epochs: more only cost time)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread (on a busy machine, 50x)
    try:
        train_model(model, train, val, epochs=epochs, lr=1e-3, seed=seed, metric=metric, batch_size=64)
    finally:
        torch.set_num_threads(threads)
    return Workload(
        name="diabetes-mlp", model=model.eval(), train=train, val=val, test=test,
        preprocessing="10 diabetes features (age, sex, bmi, bp, s1-s6 as scikit-learn ships them), each standardized "
                      "with the training split's mean and std; the target is standardized the same way "
                      f"(mean {y_mean:.2f}, std {y_std:.2f})",
        output_notes={"logits": f"standardized disease progression one year on: output x {y_std:.2f} + {y_mean:.2f} "
                                "is the progression score (scikit-learn's diabetes target)"},
        classifier="4",  # the last Linear: its one output is the prediction, never pruned
        metric=metric, distill_epochs=distill_epochs, batch_size=64,
        key=f"diabetes-mlp-{seed}-{hidden}-{epochs}-{metric.name}",
    )
