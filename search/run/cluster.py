"""Start a private local Ray, or join an existing cluster; check it has what the target asks for."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any
from collections.abc import Sequence

import ray

from search.errors import ConfigError
from search.runtime.target import Target


def cluster_address(cluster: dict[str, Any]) -> str | None:
    """``cluster.address``, else Ray's own RAY_ADDRESS convention, else None (a private local Ray)."""
    return cluster.get("address") or os.environ.get("RAY_ADDRESS") or None


def start_ray(cluster: dict[str, Any], workers: int, targets: Sequence[Target]) -> None:
    address = cluster_address(cluster)
    # Ray's start-up warnings (token auth on by default when ~/.ray/auth_token exists, which is
    # what we want) would break the progress output; the driver reports failures itself.
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address:  # prepare() has checked it is reachable (before the run folder was made)
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    else:
        # address="local": a private Ray, never a cluster that happens to run on this host.
        cpus = max(os.cpu_count() or 1, int(workers * max(t.num_cpus for t in targets)))
        ray.init(address="local", num_cpus=cpus, num_gpus=None if any(t.num_gpus for t in targets) else 0,
                 object_store_memory=cluster.get("object_store_memory"), **common)
    for target in targets:
        check_resources(target)


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


def task_result(ref: ray.ObjectRef) -> dict[str, Any]:
    """A finished task's result dict, or ``{"error": ...}`` when its worker died (after its
    retries) or the task could not run: a trial's failure is recorded, never raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"}


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
