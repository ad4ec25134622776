"""Start a private local Ray, or join an existing cluster; check it has what the target asks for."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from search.errors import ConfigError
from search.target import Target


def start_ray(cluster: dict[str, Any], workers: int, target: Target) -> None:
    address = cluster.get("address")
    # Ray's start-up warnings (token auth on by default when ~/.ray/auth_token exists, which is
    # what we want) would break the progress output; the driver reports failures itself.
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}") from None
    else:
        # address="local": a private Ray, never a cluster that happens to run on this host.
        cpus = max(os.cpu_count() or 1, int(workers * target.num_cpus))
        ray.init(address="local", num_cpus=cpus, num_gpus=0 if not target.num_gpus else None,
                 object_store_memory=cluster.get("object_store_memory"), **common)
    check_resources(target)


def check_resources(target: Target) -> None:
    """A task asking for a GPU the cluster lacks would wait forever: refuse at start instead."""
    have = ray.cluster_resources()
    for resource, need in (("CPU", target.num_cpus), ("GPU", target.num_gpus)):
        if need and have.get(resource, 0) < need:
            raise ConfigError(
                f"target {target.name} needs {need} {resource} per trial; the Ray cluster has {have.get(resource, 0):g}"
            )


def stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()
