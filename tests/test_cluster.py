"""A real two-node Ray cluster on this machine: `ray start --head` plus a second node, joined by the search."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from search.core import attributes
from search.strategy.study import load_run_study
from tests.conftest import search, tried

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
# Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists; every process
# (both nodes and the driver) must agree, so the mode is set explicitly for all of them.
AUTH = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(*args: str) -> subprocess.Popen:
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", "--block"]
    return subprocess.Popen([RAY, "start", *args, *common], env={**os.environ, **AUTH}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def alive_nodes(address: str) -> int:
    code = (f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **AUTH},
                          timeout=60)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else 0


def stop_cluster(nodes: list[subprocess.Popen], temp_dir: str) -> None:
    """Stop only this cluster: its `ray start` processes, then every process under its own temp dir."""
    for node in nodes:  # a test's cluster holds nothing to save: kill at once (SIGTERM waited ~25 s for the raylets)
        with_group = os.getpgid(node.pid) if node.poll() is None else None
        if with_group:
            os.killpg(with_group, signal.SIGKILL)
    subprocess.run(["pkill", "-KILL", "-f", temp_dir], check=False)
    for node in nodes:
        node.wait(timeout=30)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture()
def two_node_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    address = f"127.0.0.1:{free_port()}"
    nodes = [start_node("--head", f"--port={address.split(':')[1]}", f"--temp-dir={temp_dir}",
                        "--include-dashboard=false")]
    try:
        deadline = time.monotonic() + 90
        while alive_nodes(address) < 1 and time.monotonic() < deadline:
            time.sleep(1)
        nodes.append(start_node(f"--address={address}"))
        while alive_nodes(address) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert alive_nodes(address) == 2, "the two-node cluster did not come up"
        yield address
    finally:
        stop_cluster(nodes, temp_dir)


def test_search_joins_an_existing_cluster_and_uses_both_nodes(two_node_cluster, tmp_path, teacher_cache):
    proc = search(tmp_path, teacher_cache, f"cluster.address={two_node_cluster}", "trials=4", "workers=2", "run=c",
                  "remeasure=true", env=AUTH)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = tried(pd.read_csv(tmp_path / "c" / "trials.csv"))
    assert len(table) == 4 and (table["state"] == "COMPLETE").all()
    # the nodes that built and measured them in the search (a re-timed row's node is the re-timing's)
    built_on = {attributes.outcome_of(t).node for t in load_run_study(tmp_path / "c").trials
                if t.number in set(table["trial"])}
    assert len(built_on) == 2, built_on


@pytest.mark.parametrize("how", ["override", "RAY_ADDRESS"])
def test_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path, teacher_cache, how):
    address = f"127.0.0.1:{free_port()}"
    if how == "override":
        proc = search(tmp_path, teacher_cache, f"cluster.address={address}", "trials=2", "run=u", env=AUTH)
    else:
        proc = search(tmp_path, teacher_cache, "trials=2", "run=u", env={**AUTH, "RAY_ADDRESS": address})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: cannot join the Ray cluster")
    assert not (tmp_path / "u").exists(), "a run that cannot start leaves no folder behind"
