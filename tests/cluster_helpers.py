"""A local Ray cluster of `ray start` nodes that a test can take apart node by node.

Each node is its own `ray start --block` process, started in a new session: the raylet, its agents
and every worker process the raylet spawns stay in that session, so one node is stopped by killing
its session's processes, and the other nodes (and every other Ray on the machine) are left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.driver_control import _command, session_processes
from tests.test_cluster import AUTH, RAY, alive_nodes, free_port

# The GCS marks a node dead after `failure_threshold` missed health checks, `period_ms` apart (Ray's
# defaults: 5 x 3 s, after a 5 s initial delay). A test that kills a node waits for that, so the head's
# GCS checks every 0.5 s and gives up after 3 misses.
FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
                   "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    """One `ray start --block` node; ``proc.pid`` leads the session every process of the node is in."""

    proc: subprocess.Popen
    cpus: int

    def processes(self, named: str | None = None) -> list[int]:
        return session_processes(self.proc.pid, named)

    def node_id(self) -> str:
        """The node's Ray id (hex), read from its raylet's command line."""
        for pid in self.processes(named="raylet"):
            for arg in _command(pid).split():
                if arg.startswith("--node_id="):
                    return arg.split("=", 1)[1]
        raise AssertionError(f"no raylet found in the session of node {self.proc.pid}")

    def kill(self, timeout_s: float = 30) -> dict[int, str]:
        """SIGKILL every process of this node (and only of this node) until none is left.

        Returns PID -> command line (as it was just before the kill; a Ray worker's names its task) of each killed."""
        killed, deadline = {}, time.monotonic() + timeout_s
        while (left := self.processes()) and time.monotonic() < deadline:
            commands = {pid: _command(pid) for pid in left}  # all read first: a killed process takes others along
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.setdefault(pid, commands[pid])
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        if self.proc.poll() is None:
            self.proc.wait(timeout=timeout_s)
        assert not self.processes(), f"processes of node {self.proc.pid} outlived its kill: {self.processes()}"
        return killed


@dataclass
class Cluster:
    address: str
    temp_dir: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def head(self) -> Node:
        return self.nodes[0]

    def start_node(self, cpus: int, *args: str, env: dict[str, str] | None = None) -> Node:
        command = [RAY, "start", *args, f"--num-cpus={cpus}", "--object-store-memory=100000000",
                   "--disable-usage-stats", "--block"]
        log = open(Path(self.temp_dir) / f"node-{len(self.nodes)}.log", "wb")  # noqa: SIM115 - lives with the node
        proc = subprocess.Popen(command, env={**os.environ, **AUTH, **(env or {})}, start_new_session=True,
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        node = Node(proc, cpus)
        self.nodes.append(node)
        return node

    def wait_alive(self, count: int, deadline: float) -> None:
        while alive_nodes(self.address) < count:
            assert time.monotonic() < deadline, f"the cluster did not reach {count} live nodes"
            assert all(n.proc.poll() is None for n in self.nodes), "a node's `ray start` exited"
            time.sleep(1)

    def stop(self) -> None:
        """Only this cluster: each node's session, then anything left under its own temp dir."""
        for node in self.nodes:
            node.kill()
        subprocess.run(["pkill", "-KILL", "-f", self.temp_dir], check=False)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(head_cpus: int, worker_cpus: list[int], timeout_s: float = 90) -> Cluster:
    """A head with ``head_cpus`` CPUs and one worker node per entry of ``worker_cpus``, all alive."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths live under it
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", temp_dir)
    try:
        deadline = time.monotonic() + timeout_s
        cluster.start_node(head_cpus, "--head", f"--port={port}", f"--temp-dir={temp_dir}",
                           "--include-dashboard=false", env=FAST_NODE_DEATH)
        cluster.wait_alive(1, deadline)
        for cpus in worker_cpus:
            cluster.start_node(cpus, f"--address={cluster.address}")
        cluster.wait_alive(1 + len(worker_cpus), deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster
