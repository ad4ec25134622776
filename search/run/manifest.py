"""The reproducibility manifest: which software, machine, code, seed and command made a run's figures.

Written into config.yaml at the start of every session of a run and into every model card, so
that a figure that differs later can be traced to what differs. A resumed run that finds other
versions or another machine says so once, and keeps the earlier manifests.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from search.runtime.machine import COMPARED_FACTS, describe_machine

PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnx", "torch", "torch-pruning", "optuna", "ray", "numpy",
            "transformers", "hydra-core")
PROJECT = "optsearch"
REPO = Path(__file__).resolve().parents[2]  # search/run/manifest.py -> the checkout
COMPARED = ("software", "project", "providers")  # what a resume compares; the machine is compared by its facts
MACHINE_FACTS = ("host", *COMPARED_FACTS)


def software_versions() -> dict[str, str]:
    """Python and each installed package of PACKAGES, by distribution name (absent ones left out)."""
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def project_identity() -> dict[str, Any]:
    """The project's version, and its git commit where it runs from a checkout (``dirty``: uncommitted changes)."""
    try:
        version = metadata.version(PROJECT)
    except metadata.PackageNotFoundError:
        version = None
    commit = _git("rev-parse", "HEAD") if (REPO / ".git").exists() else None
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no")) if commit else None
    return {"version": version, "commit": commit, "dirty": dirty}


def providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def make_manifest(seed: int) -> dict[str, Any]:
    """This session's manifest: versions, machine, providers, project, seed and the command line."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": software_versions(),
        "machine": describe_machine(),
        "providers": providers(),
        "project": project_identity(),
        "seed": seed,
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
    }


def differences(earlier: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two manifests, one short phrase each ("torch 2.13.0 -> 2.14.0")."""
    found = []
    for section in COMPARED:
        old, new = earlier.get(section) or {}, now.get(section) or {}
        if isinstance(old, list) or isinstance(new, list):
            if old != new:
                found.append(f"{section} {old} -> {new}")
            continue
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                found.append(f"{key} {old.get(key)} -> {new.get(key)}")
    old_machine, new_machine = earlier.get("machine") or {}, now.get("machine") or {}
    found += [f"machine {key} {old_machine.get(key)} -> {new_machine.get(key)}" for key in MACHINE_FACTS
              if old_machine.get(key) != new_machine.get(key)]
    return found


def carry_forward(stored: dict[str, Any] | None, now: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config's manifest entries for this session (``manifest`` now, ``manifest_earlier`` the
    sessions before it whose manifest differed) and what differs from the last session."""
    stored = stored or {}
    earlier = list(stored.get("manifest_earlier") or [])
    last = stored.get("manifest")
    changed = differences(last, now) if last else []
    if changed:
        earlier.append(last)
    return {"manifest": now, "manifest_earlier": earlier}, changed
