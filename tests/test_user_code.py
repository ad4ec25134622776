"""The user's own code reaches every Ray worker, on this node and on others, without being installed.

A workload factory and its model class live in a module in a temporary folder outside the repository,
importable only in the driver (which puts the folder on its own ``sys.path``; no PYTHONPATH, so neither
the private Ray's workers nor a separately started cluster's nodes can import it). The model's
``forward`` notes, once per process, whether that process could import the module by name and on which
Ray node it ran: a worker that ran it without being able to import it got the code by value.

``search.optimize`` is run from a script outside the repository whose model class is defined in the
script itself (its ``__main__``); the front's models are then run in a plain ONNX Runtime session and
their macro-F1 recomputed independently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from string import Template

import pandas as pd
import pytest

from tests.conftest import REPO, tried

pytestmark = pytest.mark.slow

MODULE = "optsearch_user_wl"  # a name nothing on this machine has installed
# The shortest real run: a tiny MLP, tiny data, timings cut to a few calls, no re-timing phase.
SHORT = ["trials=4", "workers=2", "remeasure=false", "evaluators.latency.budget_s=0.05",
         "evaluators.latency.min_time_s=0", "evaluators.latency.warmup=2", "evaluators.latency.min_repeats=5",
         "evaluators.energy.window_s=0.05", "evaluators.energy.windows=2"]
AUTH = {"RAY_AUTH_MODE": "disabled"}  # as tests/test_cluster.py: every process of a cluster must agree

# string.Template, not %: the scripts are full of braces
USER_MODULE = Template('''
"""A user's workload, outside the repository: a tiny MLP on four separable clusters of 16 features."""
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from search.workloads import Split, Workload

MARKS = Path(__file__).resolve().parent / "marks"


def mark_process():
    """Once per process: could it import this module, and which Ray node is it?"""
    mark = MARKS / str(os.getpid())
    if mark.exists():
        return
    node = ""
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except Exception:
        pass
    MARKS.mkdir(exist_ok=True)
    mark.write_text(f"{int(importlib.util.find_spec('$module') is not None)} {node}")


class UserMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def __setstate__(self, state):
        # Every process that runs a trial unpickles the model, even where the run's store serves the trial's
        # build and the model's forward never runs there (a cover trial reusing the baseline's build).
        super().__setstate__(state)
        mark_process()

    def forward(self, x):
        mark_process()
        return self.body(x)


def load(seed: int = 0) -> Workload:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(4, 16)).astype(np.float32) * 3

    def split(n):
        y = rng.integers(0, 4, n)
        return Split((centers[y] + rng.normal(size=(n, 16))).astype(np.float32), y.astype(np.int64))

    train, val, test = split(256), split(64), split(128)
    torch.manual_seed(seed)
    model = UserMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return Workload(name="user-mlp", model=model.eval(), train=train, val=val, test=test, distill_epochs=1,
                    key=f"user-mlp-{seed}")
''').substitute(module=MODULE)

LAUNCHER = """
import sys

sys.path.insert(0, sys.argv[1])  # the user's folder: on this process's path only
from search.__main__ import main

sys.exit(main(sys.argv[2:]))
"""


def user_folder(tmp_path: Path) -> Path:
    """The user's module and its workload config (conf/workload/user_mlp.yaml), outside the repository."""
    folder = tmp_path / "usercode"
    (folder / "conf" / "workload").mkdir(parents=True)
    (folder / f"{MODULE}.py").write_text(USER_MODULE)
    (folder / "conf" / "workload" / "user_mlp.yaml").write_text(f"_target_: {MODULE}.load\nseed: ${{seed}}\n")
    return folder


def run_launcher(tmp_path: Path, folder: Path, *overrides: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess:
    """The driver from a launcher in its own folder, run from a third: Ray puts the driver's script folder and
    working directory on its workers' paths, and neither holds the module."""
    launch, cwd = tmp_path / "launch", tmp_path / "cwd"
    launch.mkdir()
    cwd.mkdir()
    (launch / "launcher.py").write_text(LAUNCHER)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    args = [sys.executable, str(launch / "launcher.py"), str(folder), f"hydra.searchpath=[file://{folder}/conf]",
            "workload=user_mlp", f"results_dir={tmp_path / 'results'}", *SHORT, *overrides]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**clean, "PYTHONWARNINGS": "ignore", **(env or {})})


def marks(folder: Path) -> dict[int, tuple[bool, str]]:
    """PID -> (could import the module, Ray node id) of every process that unpickled the model or ran it."""
    found = {}
    for path in (folder / "marks").iterdir():
        importable, _, node = path.read_text().partition(" ")
        found[int(path.name)] = (importable == "1", node)
    return found


def test_module_is_only_importable_where_the_driver_put_it(tmp_path):
    """The premise of the tests below: without the driver's sys.path entry, the module cannot be imported."""
    folder = user_folder(tmp_path)
    probe = f"import importlib.util; print(importlib.util.find_spec('{MODULE}') is None)"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=clean)
    assert proc.stdout.strip() == "True", proc.stderr
    assert str(folder) not in os.environ.get("PYTHONPATH", "")


def _check_run(tmp_path: Path, folder: Path, proc: subprocess.CompletedProcess, run: str
               ) -> tuple[pd.DataFrame, dict[int, str]]:
    """The run finished every trial, and worker processes that could not import the module ran the model."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = tried(pd.read_csv(tmp_path / "results" / run / "trials.csv"))
    assert len(table) == 4 and (table["state"] == "COMPLETE").all(), table["error"].tolist()
    seen = marks(folder)
    workers = {pid: node for pid, (importable, node) in seen.items() if not importable}
    assert any(importable for importable, _ in seen.values()), "the driver ran the model (its checks) with the module"
    assert workers, f"no process ran the model without being able to import its module: {seen}"
    return table, workers


def test_user_module_reaches_the_private_rays_workers(tmp_path):
    folder = user_folder(tmp_path)
    proc = run_launcher(tmp_path, folder, "run=local")
    _check_run(tmp_path, folder, proc, "local")


def test_user_module_reaches_every_node_of_a_cluster(tmp_path):
    from tests.cluster_helpers import start_cluster

    folder = user_folder(tmp_path)
    cluster = start_cluster(head_cpus=1, worker_cpus=[1])  # one trial per node at a time: workers=2 uses both
    try:
        proc = run_launcher(tmp_path, folder, "run=cluster", f"cluster.address={cluster.address}", env=AUTH)
    finally:
        cluster.stop()
    table, workers = _check_run(tmp_path, folder, proc, "cluster")
    assert table["node"].nunique() == 2, table["node"].tolist()
    # on both nodes some worker ran the user's model without the module on its path
    trial_nodes = {node.split("/")[-1] for node in table["node"]}
    assert {node[:8] for node in workers.values()} == trial_nodes, (workers, trial_nodes)


OPTIMIZE_SCRIPT = Template("""
\"\"\"A user's script, run as `python my_script.py` outside the repository; its model classes are its own.\"\"\"
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

import search

SHORT = $short


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.body(x)


class MaskedNet(nn.Module):
    \"\"\"Two named inputs: float features and a bool mask of the features to use.\"\"\"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, features, mask):
        return self.body(features * mask.to(features.dtype))


def data(n, rng, centers):
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.normal(size=(n, 12))).astype(np.float32), y.astype(np.int64)


def one_run(results, which):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 12)).astype(np.float32) * 2.5
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = [data(n, rng, centers) for n in (192, 64, 96)]
    torch.manual_seed(0)
    if which == "dict":
        masks = [rng.random((len(x), 12)) > 0.2 for x in (x_train, x_val, x_test)]
        train, val, test = [({"features": x, "mask": m}, y) for x, m, y in
                            zip((x_train, x_val, x_test), masks, (y_train, y_val, y_test))]
        model, args = MaskedNet(), (torch.from_numpy(x_train), torch.from_numpy(masks[0]))
    else:
        train, val, test = (x_train, y_train), (x_val, y_val), (x_test, y_test)
        model, args = Net(), (torch.from_numpy(x_train),)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):  # brief full-batch training
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(*args), torch.from_numpy(y_train)).backward()
        optimizer.step()
    model.eval()

    front = search.optimize(model, train=train, val=val, test=test, metric=search.metrics.MacroF1(),
                            overrides=[*SHORT, f"results_dir={results}", f"run={which}"], name=f"script-{which}")

    feeds = test[0] if which == "dict" else {"input": test[0]}
    members = {}
    for _, row in front.table.iterrows():
        session, size = front.model(int(row["trial"])), int(row["batch_size"])
        first = session.output_names[0]
        batched = np.concatenate([session({k: v[i:i + size] for k, v in feeds.items()})[first]
                                  for i in range(0, len(y_test), size)])
        whole = session(feeds if which == "dict" else test[0])[first]
        members[int(row["trial"])] = {
            "table": float(row["macro_f1"]), "inputs": session.input_names,
            "batched": float(f1_score(y_test, batched.argmax(1), average="macro")),
            "whole": float(f1_score(y_test, whole.argmax(1), average="macro"))}
    # the first member's bundle, loaded as a deployment would, called with the inputs by name
    import importlib.util
    trial = int(front.table["trial"].iloc[0])
    out = front.bundle(trial, Path(results) / f"bundle-{which}")
    spec = importlib.util.spec_from_file_location(f"bundle_run_{which}", out / "run.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    few = {k: v[:8] for k, v in feeds.items()}
    with runner.load(out) as bundled:
        got = bundled(**few) if which == "dict" else bundled(few["input"])
    expected = front.model(trial)(few)
    by_name = front.model(trial)(**few)  # front.model takes inputs as the bundle's load does: by name too
    same = all(np.allclose(got[k], expected[k], rtol=1e-4, atol=1e-5) and np.array_equal(by_name[k], expected[k])
               for k in expected)
    return {"columns": list(front.table.columns), "run_dir": str(front.run_dir), "members": members,
            "bundle_matches": same}


if __name__ == "__main__":
    # both variants in one process, one after the other, as a notebook would call optimize twice
    print(json.dumps({which: one_run(sys.argv[1], which) for which in sys.argv[2:]}))
""").substitute(short=repr(SHORT))


@pytest.fixture(scope="module")
def script_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The script, run once from a folder outside the repository: one array input, then two named inputs."""
    tmp = tmp_path_factory.mktemp("user-script")
    script = tmp / "my_script.py"
    script.write_text(OPTIMIZE_SCRIPT)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), str(tmp / "results"), "array", "dict"], cwd=tmp,
                          capture_output=True, text=True, timeout=400, env={**clean, "PYTHONWARNINGS": "ignore"})
    return proc, tmp / "results"


@pytest.mark.parametrize("which", ["array", "dict"])
def test_optimize_from_a_script_outside_the_repo(script_run, which):
    proc, results = script_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])[which]
    assert "macro_f1" in out["columns"] and "model_path" in out["columns"]
    assert Path(out["run_dir"]) == results / which
    trials = tried(pd.read_csv(results / which / "trials.csv"))
    assert len(trials) == 4 and (trials["state"] == "COMPLETE").all(), trials["error"].tolist()
    assert out["members"], "the front has members"
    for trial, member in out["members"].items():
        expected_inputs = ["features", "mask"] if which == "dict" else ["input"]
        assert member["inputs"] == expected_inputs, (trial, member)
        # the figure in the table is the model file's, through a plain session, at the trial's batch size
        assert member["batched"] == pytest.approx(member["table"], abs=1e-9), (trial, member)
        # and on the whole test split in one call (argmax is not changed by batching for these models)
        assert member["whole"] == pytest.approx(member["table"], abs=1e-9), (trial, member)
    # the bundle of a model handed in from Python runs with its inputs by name, as the plain session does
    assert out["bundle_matches"]
