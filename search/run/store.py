"""The run's artifact store: every stage's output (the recovered student, the finished model) is kept
once per run, under ``results/<run>/artifacts/``, addressed by what it was built from.

Workers on any node reach it through one Ray actor that runs on the driver's node (DESIGN: no disk is
shared with the workers, and only the driver's side writes the run folder). It outlives workers and,
being files, the driver: a resumed run finds everything built before. Two workers that need the same
artifact at once do not both build it: the first claims it, the other waits for it. A claim dies with
its trial (the builder releases it when its build raises; the driver releases a crashed or cancelled
trial's). Files are ONNX bytes and JSON: nothing from the folder is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.core.files import write_bytes, write_text
from search.trial.store_client import Artifact

FOLDER = "artifacts"


class ArtifactFolder:
    """The artifacts as files: ``<key>.onnx`` and ``<key>.json`` (facts, build time, the bytes' sha256)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def get(self, key: str) -> Artifact | None:
        """The artifact, or None when absent or damaged (a damaged one is built again)."""
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            data = (self.folder / f"{key}.onnx").read_bytes()
        except (OSError, ValueError):
            return None
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            return None
        return Artifact(data, dict(meta.get("facts") or {}), float(meta.get("build_s") or 0.0))

    def put(self, key: str, artifact: Artifact) -> None:
        """Bytes first, then the JSON that vouches for them: a kill in between leaves no valid entry."""
        write_bytes(self.folder / f"{key}.onnx", artifact.data)
        meta = {"sha256": hashlib.sha256(artifact.data).hexdigest(), "facts": artifact.facts,
                "build_s": artifact.build_s}
        write_text(self.folder / f"{key}.json", json.dumps(meta, default=str))

    def usage(self) -> tuple[int, int]:
        """(artifacts, bytes on disk)."""
        files = list(self.folder.glob("*.onnx")) if self.folder.exists() else []
        return len(files), sum(f.stat().st_size for f in files)



class StoreService:
    """The store's one process (a Ray actor on the driver's node): the folder, and who is building what."""

    def __init__(self, folder: str) -> None:
        self.files = ArtifactFolder(Path(folder))
        self.claims: dict[str, str] = {}  # artifact key -> the Ray task building it

    def lookup(self, key: str, claimant: str) -> tuple[str, Artifact | None]:
        """("hit", artifact); ("build", None): the caller now holds the claim; ("wait", None): another builds it."""
        found = self.files.get(key)
        if found is not None:
            return "hit", found
        holder = self.claims.setdefault(key, claimant)
        return ("build", None) if holder == claimant else ("wait", None)  # a retried task re-takes its own claim

    def put(self, key: str, artifact: Artifact, claimant: str) -> None:
        self.files.put(key, artifact)
        if self.claims.get(key) == claimant:
            del self.claims[key]

    def release(self, claimant: str) -> None:
        """Drop every claim of a trial that ended without putting what it claimed."""
        self.claims = {k: v for k, v in self.claims.items() if v != claimant}



def start_service(run_dir: Path) -> tuple[Any, str]:
    """The store's actor, on this (the driver's) node, reading and writing ``run_dir/artifacts``, and its
    name. Trials carry the name, not the handle: a handle in every task's arguments cost the driver a
    borrower's round trip per trial; a worker looks the actor up by name once (``service``)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = f"optsearch-store-{uuid.uuid4().hex[:12]}"
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = ray.remote(StoreService).options(name=name, num_cpus=0, scheduling_strategy=here, max_concurrency=1)
    return actor.remote(str((run_dir / FOLDER).resolve())), name



def workload_fingerprint(workload: Any) -> str:
    """A digest of what every artifact depends on beyond its own settings: the model's weights, the
    training and validation data and the recovery settings. A resumed run whose model file changed
    under the same name builds afresh instead of reusing artifacts of the old one."""
    import numpy as np

    digest = hashlib.sha256()
    if workload.onnx_model is not None:
        digest.update(workload.onnx_model)
    else:
        from search.transforms.prune import weights_digest

        digest.update(weights_digest(workload.model).encode())
    for split in (workload.train, workload.val):
        for name, array in split.inputs.items():
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        labels = split.y if isinstance(split.y, Mapping) else {"": split.y}
        for name, array in labels.items():
            if array is not None:
                digest.update(str(name).encode())
                digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
    recovery = (workload.distill_epochs, workload.distill_lr, workload.batch_size, workload.metric.describe())
    digest.update(repr(recovery).encode())
    return digest.hexdigest()[:16]
