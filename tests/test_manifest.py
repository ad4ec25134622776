"""The reproducibility manifest: true for this machine, and a resume that finds other versions says so."""

from __future__ import annotations

import copy
import os
import platform
import shlex
import subprocess
import sys

import numpy as np
import onnxruntime
import torch

from tests.conftest import REPO
from search.run.manifest import carry_forward, differences, make_manifest


def test_the_manifest_is_true_for_this_machine():
    manifest = make_manifest(seed=7)
    software = manifest["software"]
    assert software["python"] == platform.python_version()
    assert software["onnxruntime"] == onnxruntime.__version__ and software["numpy"] == np.__version__
    assert software["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for package in ("onnx", "torch-pruning", "optuna", "ray"):
        assert software[package]
    machine = manifest["machine"]
    assert machine["cores"] == os.cpu_count() and machine["usable_cores"] == len(os.sched_getaffinity(0))
    assert machine["memory_bytes"] > 2**30 and machine["cpu"]
    assert manifest["providers"] == onnxruntime.get_available_providers()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert manifest["project"]["commit"] == head
    assert manifest["seed"] == 7 and manifest["command"] == shlex.join(sys.orig_argv)  # as typed: python -m ...


def test_a_resume_with_other_versions_names_them_and_keeps_the_earlier_manifest():
    now = make_manifest(seed=0)
    earlier = copy.deepcopy(now)
    earlier["software"]["torch"] = "2.0.0"
    earlier["machine"]["cpu"] = "another CPU"
    entries, changed = carry_forward({"manifest": earlier}, now)
    assert any(c.startswith("torch 2.0.0 -> ") for c in changed) and any("another CPU" in c for c in changed)
    assert entries["manifest"] is now and entries["manifest_earlier"] == [earlier]
    again, changed = carry_forward(entries, make_manifest(seed=0))
    assert changed == [] and again["manifest_earlier"] == [earlier]  # said once: the next resume is quiet


def test_the_same_software_and_machine_differ_in_nothing():
    assert differences(make_manifest(seed=0), make_manifest(seed=0)) == []
