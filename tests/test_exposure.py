"""The private Ray that a default `python -m search` starts: reachable from this machine only, and
only with the token made for the run."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from search.run.cluster import start_ray, stop_ray
from search.runtime.target import Target

pytestmark = pytest.mark.slow
AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def ray_pids(session_dir: str) -> set[int]:
    """This process's descendants (gcs_server, raylet, agents, workers), and any process whose
    command line names this Ray's own session folder."""
    children: dict[int, list[int]] = {}
    named = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(ppid, []).append(int(entry))
        if session_dir in cmdline:
            named.add(int(entry))
    found, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found | named


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def parse_address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/* writes each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(raw), int(port, 16)


def listeners() -> list[tuple[str, str, int, str]]:
    """(protocol, address, port, inode) of every listening TCP socket and bound UDP socket."""
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if (proto.startswith("tcp") and state == "0A") or proto.startswith("udp"):  # 0A: LISTEN
                address, port = parse_address(local)
                found.append((proto, str(address), port, inode))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.fixture(scope="module")
def private_ray(tmp_path_factory):
    before = {name: os.environ.get(name) for name in AUTH_ENV}
    home = tmp_path_factory.mktemp("home")  # a user without ~/.ray/auth_token: none may be written
    old_home = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        start_ray({"object_store_memory": 100_000_000}, 1, [Target(name="cpu")])
        node = ray._private.worker._global_node
        yield {"gcs": node.gcs_address, "session_dir": node.get_session_dir_path(), "home": home}
    finally:
        stop_ray()
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home
    assert {name: os.environ.get(name) for name in AUTH_ENV} == before, "stop_ray leaves RAY_AUTH_* as they were"
    assert not (home / ".ray").exists(), "no token was written to the user's home"


@ray.remote
def pid_and_ip() -> tuple[int, str]:
    return os.getpid(), ray.util.get_node_ip_address()


def test_a_private_ray_listens_on_loopback_only(private_ray):
    worker_pid, worker_ip = ray.get(pid_and_ip.remote())  # a task runs, so a worker listens too
    assert worker_ip == "127.0.0.1"
    assert private_ray["gcs"].rsplit(":", 1)[0] == "127.0.0.1"
    pids = ray_pids(private_ray["session_dir"])
    assert worker_pid in pids, "the worker that ran the task is one of the processes checked"
    owners = {inode: pid for pid in pids for inode in socket_inodes(pid)}
    mine = [(proto, address, port, owners[inode]) for proto, address, port, inode in listeners() if inode in owners]
    listening_pids = {pid for *_, pid in mine}
    # gcs_server, the raylet, the driver's and the worker's core worker all listen
    assert worker_pid in listening_pids and os.getpid() in listening_pids and len(listening_pids) >= 4, mine
    exposed = [entry for entry in mine if not is_loopback(entry[1])]
    assert not exposed, f"listening off loopback: {exposed}"


def start_client(gcs: str, env: dict[str, str], home: Path) -> subprocess.Popen:
    """Another process of this machine's that joins the private Ray and runs a task. It keeps the
    address 127.0.0.1 as given (Ray would otherwise turn it into the machine's address, where
    nothing listens) and has only the credentials in ``env``."""
    code = (f"import ray, logging; ray.init(address={gcs!r}, logging_level=logging.ERROR); "
            "print('ran', ray.get(ray.remote(lambda: 1).remote()))")
    clean = {k: v for k, v in os.environ.items() if k not in AUTH_ENV and k != "RAY_ADDRESS"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**clean, "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env})


def test_a_private_ray_refuses_a_client_without_the_run_token(private_ray, tmp_path):
    token = os.environ["RAY_AUTH_TOKEN"]  # the run's, set by start_ray for the Ray processes it starts
    clients = {"no token": {"RAY_AUTH_MODE": "disabled"},
               "a wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * len(token)},
               "the run's token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}}
    procs = {name: start_client(private_ray["gcs"], env, tmp_path) for name, env in clients.items()}
    try:
        out = {name: proc.communicate(timeout=180) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert procs["the run's token"].returncode == 0 and "ran 1" in out["the run's token"][0], out["the run's token"]
    for name in ("no token", "a wrong token"):
        stdout, stderr = out[name]
        assert procs[name].returncode != 0 and "ran" not in stdout, f"{name}: {stdout[-1000:]}{stderr[-1000:]}"
        assert "Unauthenticated" in stderr, f"{name}: {stderr[-2000:]}"
    assert ray.get(pid_and_ip.remote())[1] == "127.0.0.1", "the run's own driver still works"
