"""Bad input ends with one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

from search.__main__ import main
from tests.doc_commands import documented

REPO = Path(__file__).resolve().parent.parent

BAD_INPUT = [
    (["+target=tpu"], "known targets: cpu, cpu_1t, gpu, tensorrt"),
    (["+target=tensorrt"], "needs ONNX Runtime's TensorrtExecutionProvider"),
    (["targets=[cpu,tpu]"], "unknown target(s) ['tpu'] (known targets: cpu, cpu_1t, gpu, tensorrt)"),
    (["targets=[cpu,cpu]"], "targets lists a target twice"),
    (["targets=[cpu,cpu_1t]", "+target=gpu"], "give either +target=NAME"),
    (["space.knobs.quant_bits.half=[bf16]"], "quant_bits 16-bit format: none of ['bf16'] runs on target cpu"),
    (["space.knobs.parallelism.modes=[model_parallel]"], "parallelism: ['model_parallel'] not allowed"),
    (["space.knobs.batch_size.choices=[0,8]"], "batch_size: sizes must be integers >= 1"),
    (["sampler=foo"], "known samplers: gp, nsga2, nsga3, random, random_refine, tpe, tpe_refine"),
    (["time_budget=-1"], "time_budget must be a number of seconds > 0"),
    (["stall_trials=0"], "stall_trials must be an integer >= 1"),
    (["warm_start=no/such/run"], "warm_start=no/such/run: no run folder there"),
    (["workload=nope"], "known workloads: digits"),
    (["trialz=3"], "trialz"),
    (["trials=abc"], "trials must be an integer"),
    (["workers=0"], "workers must be an integer >= 1"),
    (["space.knobs.quant_bits.choices=[3]"], "quant_bits"),
    (["space.knobs.prune_rate.high=1.5"], "prune_rate"),
    (["~workload", "+workload._target_=no_such_module.load"], "no_such_module"),
    (["~workload", "+workload._target_=tests.workloads.not_a_workload"], "expected search.workloads.Workload"),
    (["~workload", "+workload._target_=tests.workloads.wrong_shape"],
     "model rejects test input of shape (2, 1, 16, 16)"),
    (["~workload", "+workload._target_=tests.workloads.unexportable"], "cannot be exported to ONNX"),
    (["trial_timeout_s=-1"], "trial_timeout_s must be a number of seconds > 0"),
    (["max_retries=-1"], "max_retries must be an integer >= 0"),
    (["remeasure=sometimes"], "remeasure must be true or false"),
    (["cover=maybe"], "cover must be true or false"),
    (["space.knobs.quant_bits.modes=[fuzzy]"], "quant_bits: modes ['fuzzy'] not allowed"),
    (["workload=onnx_file"], "Missing mandatory value: workload.model_path"),
    (["evaluators.latency.noise_floor=2"], "latency: noise_floor must be in [0, 1)"),
    (["results_dir=/proc/optsearch-cannot-write"], "cannot write results folder"),
    (["+evaluators.f1._target_=no_such_module.F1"], "evaluator f1 (no_such_module.F1)"),
    (["+space.knobs.mystery._target_=no_such_module.Fusion"], "knob mystery (no_such_module.Fusion)"),
    (["+evaluators.odd._target_=collections.OrderedDict"], "is a OrderedDict, not a evaluators.Evaluator"),
    (["+space.knobs.odd._target_=collections.OrderedDict"], "is a OrderedDict, not a spaces.Knob"),
    (["+space.knobs.odd._target_=tests.plugins_for_tests.MisstagedKnob"],
     "stage 'onxx' unknown; choose from torch, onnx"),
    ([f"++evaluators.{e}.objective=false" for e in ("metric", "latency", "energy", "size")],
     "no evaluator is an objective"),
    # a plugin's settings against its signature: wrong simple types named by their config path, unknown ones
    (["space.knobs.quant_bits.modes=minmax"],
     "space.knobs.quant_bits.modes must be a list of strings ([str]), got 'minmax'"),
    (["+space.knobs.quant_bits.mode=[minmax]"],
     "knob quant_bits: unknown setting 'mode' (did you mean modes?); it takes"),
    (["evaluators.latency.warmup=2.5"], "evaluators.latency.warmup must be an integer (int), got 2.5"),
    (["workload.epochs=many"], "workload.epochs must be an integer (int), got 'many'"),
    (["sampler.base.window=lots"], "sampler.base.window must be an integer (int), got 'lots'"),
    (["~workload", "+workload._target_=search.workloads.onnx_file.load"],
     "workload factory: missing setting(s) model_path, data_path"),
    (["evaluators.latency.foo=1"], "unknown override key 'evaluators.latency.foo' (evaluators.latency has warmup, "),
]


@pytest.mark.parametrize(("overrides", "says"), BAD_INPUT, ids=[" ".join(o) for o, _ in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(overrides, says, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any results folder a bug might create lands here
    assert main([*overrides, "trials=2"] if "trials=abc" not in overrides else overrides) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert says in err[0]
    assert not (tmp_path / "results").exists(), "a run that cannot start leaves no folder behind"


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_gpu_target_without_cuda_fails_fast_with_what_is_missing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(documented("python -m search +target=gpu")[3:]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDAExecutionProvider" in err and "\n" not in err
    assert not (tmp_path / "results").exists(), "nothing is written for a run that cannot start"


@pytest.mark.parametrize("overrides", [["+target=tpu"],
                                       ["~workload", "+workload._target_=tests.workloads.unexportable"]])
def test_command_line_exit_code_and_nothing_but_one_line(overrides):
    proc = subprocess.run([sys.executable, "-m", "search", *overrides], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == "", "native code must not dump to stdout either"
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_help_lists_the_overrides(capsys):
    assert main(documented("python -m search --help")[3:]) == 0
    assert "trials=N" in capsys.readouterr().out


TYPO_EVALUATORS = """\
defaults:
  - default
  - _self_

latency:
  budgetS: 1
"""
NEAR_MISSES = [  # what a newcomer typed, and what the one line must say
    (["trial=6"], "unknown override key 'trial' (did you mean trials?)"),
    (["evaluators.latency.budgt_s=2"], "unknown override key 'evaluators.latency.budgt_s' "
                                       "(did you mean evaluators.latency.budget_s?)"),
    (["sampler=tpee"], "unknown sampler 'tpee' (did you mean tpe? known samplers: gp, nsga2"),
    (["target=gpu"], "target=gpu: use +target=gpu (target is not in the defaults list, so it is added with +)"),
    (["target=cpu_1t"], "target=cpu_1t: use +target=cpu_1t (target is not in the defaults list"),
    (["evaluators.latency.budget_s=fast"], "evaluators.latency.budget_s must be a number (float), got 'fast'"),
    (["hydra.searchpath=[file://{conf}]", "evaluators=typo"],  # a misspelt key in the user's own YAML
     "evaluator latency: unknown setting 'budgetS' (did you mean budget_s?); it takes warmup, min_repeats, "),
]


@pytest.mark.parametrize(("overrides", "says"), NEAR_MISSES, ids=[" ".join(o) for o, _ in NEAR_MISSES])
def test_a_near_miss_on_the_command_line_says_what_was_meant(overrides, says, tmp_path):
    conf = tmp_path / "conf"
    (conf / "evaluators").mkdir(parents=True)
    (conf / "evaluators" / "typo.yaml").write_text(TYPO_EVALUATORS)
    command = [o.format(conf=conf) for o in overrides] + [f"results_dir={tmp_path / 'results'}", "trials=2"]
    proc = subprocess.run([sys.executable, "-m", "search", *command], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert says in lines[0]
    assert not re.search(r"\w+(Error|Exception)\b", lines[0]), "no raw Python exception in the line"
    assert not (tmp_path / "results").exists()
