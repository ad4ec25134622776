"""Bundles: a picked model with what runs and re-checks it, in an environment with only onnxruntime and numpy."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO, finished_run
from tests.doc_commands import documented
from search.runtime.session_settings import PARALLELISM

SHIPPED = ("run.py", "verify.py", "portable.py", "machine.py")
ALLOWED_IMPORTS = {"numpy", "onnxruntime", "portable", "machine", "run", "__future__"}


def _package_paths(name: str) -> list[Path]:
    """The folders of an installed package: the package, its vendored libraries, its metadata."""
    package = Path(importlib.util.find_spec(name).submodule_search_locations[0])
    found = [package, Path(importlib.metadata.distribution(name)._path)]
    return found + [p for p in [package.with_name(f"{name}.libs")] if p.exists()]


@pytest.fixture(scope="session")
def ort_only_python(tmp_path_factory) -> str:
    """A fresh virtual environment holding onnxruntime and numpy and nothing else (no torch, no project)."""
    venv = tmp_path_factory.mktemp("ort-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name in ("numpy", "onnxruntime"):
        for path in _package_paths(name):
            (site / path.name).symlink_to(path)
    probe = subprocess.run([python, "-I", "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0, "the environment must not see torch"
    return python


@pytest.fixture(scope="session")
def modes_run(tmp_path_factory, teacher_cache) -> Path:
    """A real search whose cover trials measure every parallelism mode once."""
    return finished_run(tmp_path_factory, teacher_cache, "modes", "trials=6")


def pick_bundle(run: Path, trial: int, out: Path) -> int:
    """``python -m search.pick RUN --all --min trial=N --max trial=N --out OUT``, in this process (no start-up)."""
    from search.pick import main as pick_main

    return pick_main(documented("python -m search.pick results/<run> --all --min trial=<N> --max trial=<N> "
                                "--out chosen/",
                                {"results/<run>": str(run), "<N>": str(trial), "chosen/": str(out)})[3:])


def in_ort_only(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -I``: no current folder, no PYTHONPATH, no user site; only what the venv holds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([python, "-I", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="session")
def bundles(modes_run, tmp_path_factory) -> dict[str, Path]:
    """One bundle per parallelism mode, each of the trial that measured it."""
    table = pd.read_csv(modes_run / "trials.csv")
    table = table[table["state"] == "COMPLETE"]
    made = {}
    for mode in PARALLELISM:
        trials = table[table["parallelism"] == mode]["trial"]
        assert len(trials), f"no completed {mode} trial in the cover run"
        out = tmp_path_factory.mktemp("bundles") / mode
        assert pick_bundle(modes_run, int(trials.iloc[0]), out) == 0
        made[mode] = out
    return made


def test_shipped_files_import_only_numpy_onnxruntime_and_each_other():
    for name in SHIPPED:
        path = REPO / "search" / ("bundle" if name in ("run.py", "verify.py") else "runtime") / name
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for module in modules:
                top = module.split(".")[0]
                assert top in ALLOWED_IMPORTS or top in sys.stdlib_module_names, f"{name} imports {module}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", PARALLELISM)
def test_each_mode_runs_and_verifies_with_only_onnxruntime_and_numpy(bundles, ort_only_python, mode):
    bundle = bundles[mode]
    spec = json.loads((bundle / "bundle.json").read_text())
    assert spec["runtime"]["parallelism"] == mode
    if mode == "pipeline":
        assert len(spec["stages"]) == spec["runtime"]["stages"] >= 2
    if mode == "data_parallel":
        assert spec["runtime"]["replicas"] >= 2
    checked = in_ort_only(ort_only_python, *documented("python chosen/verify.py", {"chosen/": f"{bundle}/"})[1:],
                          "--budget-s", "0.3", cwd=bundle.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify: ok" in checked.stdout and "measured / card p50" in checked.stdout
    ran = in_ort_only(ort_only_python, *documented("python chosen/run.py", {"chosen/": f"{bundle}/"})[1:],
                      cwd=bundle.parent)
    assert ran.returncode == 0, ran.stderr
    # from Python: load() and a call by input name give the recorded outputs
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np; from run import load, read_spec, sample\n"
            "m = load(sys.argv[1]); x, y = sample(m.folder, m.spec); out = m(**x)\n"
            "print(all(np.allclose(out[k], y[k], rtol=1e-3, atol=1e-4) for k in y)); m.close()")
    called = in_ort_only(ort_only_python, "-c", code, str(bundle), cwd=bundle.parent)
    assert called.stdout.strip() == "True", called.stderr


@pytest.mark.slow
def test_verify_fails_when_the_model_file_is_altered(bundles, ort_only_python, tmp_path):
    import shutil

    bundle = shutil.copytree(bundles["sequential"], tmp_path / "altered")
    spec = json.loads((bundle / "bundle.json").read_text())
    model = bundle / spec["model"]["file"]
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(model)
    biggest = max(proto.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    changed = numpy_helper.to_array(biggest) * -1.0
    biggest.CopyFrom(numpy_helper.from_array(changed.astype(numpy_helper.to_array(biggest).dtype), biggest.name))
    onnx.save(proto, model)
    checked = in_ort_only(ort_only_python, str(bundle / "verify.py"), "--budget-s", "0.1", cwd=tmp_path)
    assert checked.returncode == 1
    assert "FAIL file altered" in checked.stdout
    # with its checksum forged to match, the outputs give it away
    from search.bundle.write import sha256

    spec["model"]["sha256"] = sha256(model.read_bytes())
    (bundle / "bundle.json").write_text(json.dumps(spec))
    checked = in_ort_only(ort_only_python, str(bundle / "verify.py"), "--budget-s", "0.1", cwd=tmp_path)
    assert checked.returncode == 1 and "FAIL output" in checked.stdout, checked.stdout


@pytest.mark.slow
def test_verify_refuses_a_provider_this_machine_lacks(bundles, ort_only_python, tmp_path):
    import shutil

    bundle = shutil.copytree(bundles["sequential"], tmp_path / "gpu")
    spec = json.loads((bundle / "bundle.json").read_text())
    spec["provider"] = "CUDAExecutionProvider"
    (bundle / "bundle.json").write_text(json.dumps(spec))
    checked = in_ort_only(ort_only_python, str(bundle / "verify.py"), cwd=tmp_path)
    assert checked.returncode == 1 and "CUDAExecutionProvider is not available here" in checked.stdout


@pytest.mark.slow
def test_the_sample_is_the_batch_the_search_timed(bundles, modes_run):
    spec = json.loads((bundles["sequential"] / "bundle.json").read_text())
    with np.load(bundles["sequential"] / "sample.npz", allow_pickle=False) as stored:
        rows = {k.removeprefix("input/"): stored[k] for k in stored.files if k.startswith("input/")}
    with np.load(modes_run / "sample.npz", allow_pickle=False) as run_sample:
        for name, value in rows.items():
            assert len(value) == spec["batch_size"]
            np.testing.assert_array_equal(value, run_sample[name][:spec["batch_size"]])


@pytest.mark.slow
def test_cards_and_config_carry_a_true_manifest(modes_run):
    import onnxruntime
    import torch
    import yaml

    config = yaml.safe_load((modes_run / "config.yaml").read_text())
    manifest = config["manifest"]
    assert manifest["software"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert manifest["software"]["onnxruntime"] == onnxruntime.__version__
    assert manifest["seed"] == 0 and "search" in manifest["command"] and "trials=6" in manifest["command"]
    assert manifest["machine"]["cores"] == os.cpu_count()
    card = json.loads(next((modes_run / "models").glob("trial-*.json")).read_text())
    assert card["manifest"]["machine"]["cpu"] == manifest["machine"]["cpu"]
    assert card["manifest"]["node"] and card["manifest"]["software"] == manifest["software"]


def test_a_second_bundle_in_the_same_folder_replaces_the_first_and_a_foreign_folder_is_refused(
        bundles, modes_run, tmp_path, capsys):
    pipeline, sequential = bundles["pipeline"], bundles["sequential"]
    out = tmp_path / "out"
    shutil.copytree(pipeline, out)  # a pipeline bundle: its model, card and stages/
    (out / "notes.txt").write_text("mine")
    trial = json.loads((sequential / "bundle.json").read_text())["trial"]
    assert pick_bundle(modes_run, trial, out) == 0
    spec = json.loads((out / "bundle.json").read_text())
    assert spec["trial"] == trial and not spec["stages"]
    wanted = {p.name for p in sequential.iterdir() if p.name != "__pycache__"} | {"notes.txt"}
    assert {p.name for p in out.iterdir()} == wanted  # no stages/, no other model: only the new bundle and mine

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("a,b\n")
    assert pick_bundle(modes_run, trial, foreign) == 2
    assert "holds no bundle" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["data.csv"]
