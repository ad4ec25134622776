"""Start a private local Ray, or join an existing cluster; check it has what the target asks for."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from typing import Any
from collections.abc import Iterator, Sequence

import ray

from search.core.errors import ConfigError
from search.core.messages import TrialResult
from search.runtime.target import Target


# Ray starts its workers at nice 15, so that its own daemons stay responsive under load; but a trial measured at
# nice 15 yields its core to every other process that wakes (the driver, Ray's daemons), where the deployed model,
# and the bundle's verify.py, run at nice 0. The private Ray runs them at nice 0; a cluster's owner sets it with
# RAY_worker_niceness=0 before `ray start` (each node's record in machines.json says what its trials ran at).
WORKER_NICENESS = 0


def cluster_address(cluster: dict[str, Any]) -> str | None:
    """``cluster.address``, else Ray's own RAY_ADDRESS convention, else None (a private local Ray)."""
    return cluster.get("address") or os.environ.get("RAY_ADDRESS") or None


def start_ray(cluster: dict[str, Any], workers: int, targets: Sequence[Target]) -> None:
    address = cluster_address(cluster)
    # Ray's start-up warnings (about token auth) would break the progress output; the driver
    # reports failures itself.
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address:  # prepare() has checked it is reachable (before the run folder was made)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    else:
        # address="local": a private Ray, never a cluster that happens to run on this host.
        cpus = max(os.cpu_count() or 1, int(workers * max(t.num_cpus for t in targets)))
        _use_run_token()
        try:
            with _loopback_only():
                ray.init(address="local", num_cpus=cpus, num_gpus=None if any(t.num_gpus for t in targets) else 0,
                         object_store_memory=cluster.get("object_store_memory"),
                         _system_config={"worker_niceness": WORKER_NICENESS}, **common)
        except BaseException:
            _restore_auth_env()
            raise
    for target in targets:
        check_resources(target)


# The private Ray runs arbitrary code for whoever reaches it, so it is closed twice over:
# 1. Its servers listen on loopback only. Ray binds gcs_server, the raylet, the workers and
#    its agents to all interfaces (or the machine's address) unless the node IP is literally
#    127.0.0.1, and ray.init turns a 127.0.0.1 it is given into the machine's address, except
#    where Ray thinks it runs on macOS or Windows (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER). That
#    switch, read at call time, is turned off for the start-up only.
# 2. It requires a token made for this run (Ray's token auth), so that other users of the
#    machine cannot use it either. The token lives in this process's environment, which the
#    Ray processes it starts inherit, and nowhere on disk (~/.ray/auth_token is neither read
#    nor written); stop_ray puts back whatever RAY_AUTH_* the user had.
_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
_saved_auth_env: dict[str, str | None] | None = None


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray laid out otherwise: the run token still guards it
        yield
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _use_run_token() -> None:
    global _saved_auth_env
    if _saved_auth_env is None:
        _saved_auth_env = {name: os.environ.get(name) for name in _AUTH_ENV}
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ["RAY_AUTH_MODE"] = "token"
    _reload_auth_config()


def _restore_auth_env() -> None:
    global _saved_auth_env
    if _saved_auth_env is None:
        return
    for name, value in _saved_auth_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _saved_auth_env = None
    _reload_auth_config()


def _reload_auth_config() -> None:
    """Make Ray's C++ side of this process see RAY_AUTH_* as they are now (config first, then
    the token cache: the order Ray's own tests use)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token auth: nothing is cached
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT nobody answers on would keep ray.init retrying for minutes: refuse it in seconds."""
    if address == "auto":
        address = _resolve_auto()
        if address is None:
            return  # no cluster is recorded on this host: ray.init says so at once
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return  # ray://... client addresses: Ray checks them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: nothing answers there ({exc.strerror or exc}); "
                          "start it with `ray start --head`, or leave cluster.address unset for a local Ray") from None


def _resolve_auto() -> str | None:
    """What ``auto`` means to Ray: RAY_ADDRESS, else the cluster last started on this host.

    That record outlives a cluster that was killed, and ray.init then retries it forever.
    """
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray without this helper: leave the address to ray.init
        return None
    return canonicalize_bootstrap_address("auto")


def check_resources(target: Target) -> None:
    """A task asking for a GPU the cluster lacks would wait forever: refuse at start instead."""
    have = ray.cluster_resources()
    for resource, need in (("CPU", target.num_cpus), ("GPU", target.num_gpus)):
        if need and have.get(resource, 0) < need:
            raise ConfigError(
                f"target {target.name} needs {need} {resource} per trial; the Ray cluster has {have.get(resource, 0):g}"
            )


def task_result(ref: ray.ObjectRef) -> TrialResult:
    """A finished task's result, or one with the reason when its worker died (after its retries) or the
    task could not run: a trial's failure is recorded, never raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return TrialResult.failed(f"{type(exc).__name__}: {exc}")  # whole: the driver logs it, tables one line


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
    _restore_auth_env()
