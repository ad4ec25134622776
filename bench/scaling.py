"""Trials per hour with 2 workers against 1, through the real driver loop, with trials that keep a core busy.

    python bench/scaling.py [--trial-s 2.0] [--trials 16] [--repeats 3] [--nodes]

Each trial burns ``--trial-s`` seconds of CPU in its worker (a stand-in for a build) and returns made-up
figures; the driver loop is the real one (search/run/driver.py: ask/tell on SQLite, result files,
progress). Trials per hour is the trials over the span from the first trial's start to the last one's
end. With ``--nodes`` the 2-worker run also goes to a local Ray cluster of two 1-CPU ``ray start``
nodes on loopback, joined as ``cluster.address=`` joins one: the stand-in for a cluster. Prints the median over
``--repeats`` of each setting and its ratio to 1 worker; the goal is at least 1.8x.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overhead import no_work, run_loop  # noqa: E402
from search.config import compose_config  # noqa: E402
from search.core.messages import TrialResult  # noqa: E402
from search.run.cluster import start_ray, stop_ray  # noqa: E402
from search.run.driver import prepare  # noqa: E402

TRIAL_S = 2.0


def busy_trial(workload, plugins, request) -> TrialResult:
    """Keeps one core busy for TRIAL_S seconds of CPU time, as a build would, then reports made-up figures."""
    start = time.process_time()
    while time.process_time() - start < TRIAL_S:
        sum(i * i for i in range(10_000))
    return no_work(workload, plugins, request)


def trials_per_hour(workers: int, trials: int, results: str) -> float:
    study = run_loop(workers, trials, results, "nsga2", task=busy_trial)
    done = [t for t in study.trials if t.datetime_complete]
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return len(done) / span.total_seconds() * 3600


def on_local_ray(workers: int, trials: int, repeats: int) -> list[float]:
    target = prepare(compose_config([])).target
    start_ray({"object_store_memory": 200_000_000}, 2, [target])
    try:
        return [trials_per_hour(workers, trials, tempfile.mkdtemp()) for _ in range(repeats)]
    finally:
        stop_ray()


def on_two_nodes(trials: int, repeats: int) -> list[float]:
    """2 workers on a cluster of two 1-CPU `ray start` nodes on loopback, joined as a user joins a cluster."""
    auth = {"RAY_AUTH_MODE": "disabled"}  # nodes and driver must agree (Ray turns tokens on if ~/.ray has one)
    os.environ.update(auth)
    temp_dir = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths live under it
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", "--block"]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    nodes = [subprocess.Popen([ray_bin, "start", *args, *common], env={**os.environ, **auth}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for args in (["--head", f"--port={address.split(':')[1]}", f"--temp-dir={temp_dir}",
                           "--node-ip-address=127.0.0.1", "--include-dashboard=false"],)]
    try:
        time.sleep(5)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address={address}", "--node-ip-address=127.0.0.1",
                                       *common], env={**os.environ, **auth}, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        target = prepare(compose_config([])).target
        start_ray({"address": address}, 2, [target])
        deadline = time.monotonic() + 90
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        try:
            return [trials_per_hour(2, trials, tempfile.mkdtemp()) for _ in range(repeats)]
        finally:
            stop_ray()
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(os.getpgid(node.pid), signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", temp_dir], check=False)


def main() -> None:
    global TRIAL_S
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trial-s", type=float, default=TRIAL_S)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nodes", action="store_true", help="also 2 workers on a local cluster of two 1-CPU nodes")
    args = parser.parse_args()
    TRIAL_S = args.trial_s
    runs = {"1 worker": on_local_ray(1, args.trials, args.repeats),
            "2 workers": on_local_ray(2, args.trials, args.repeats)}
    if args.nodes:
        runs["2 workers, 2 nodes"] = on_two_nodes(args.trials, args.repeats)
    one = statistics.median(runs["1 worker"])
    print(f"trials of {args.trial_s:g} s of CPU, {args.trials} a run, median of {args.repeats}")
    print("| setting | trials per hour (runs) | median | vs 1 worker |\n|---|---|---|---|")
    for name, rates in runs.items():
        print(f"| {name} | {', '.join(f'{r:.0f}' for r in rates)} | {statistics.median(rates):.0f} | "
              f"{statistics.median(rates) / one:.2f}x |")


if __name__ == "__main__":
    main()
