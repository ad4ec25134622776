"""Run this bundle's model the way the search measured it, with onnxruntime and numpy alone.

    python run.py                          # the bundled sample: each output's shape and first values
    python run.py INPUTS.npz --out OUT.npz # your inputs (one array per input name) -> every output

From Python:

    import sys; sys.path.insert(0, "BUNDLE")
    from run import load
    model = load("BUNDLE")
    outputs = model(input_ids=ids, attention_mask=mask)   # or model({"input": x}), or model(x) for one input

The runtime settings (parallelism mode, degree, replicas, stages, micro-batches, threads,
provider and its options) are bundle.json's: the ones the card's figures were measured under.
This file, portable.py and machine.py are copied from the project unchanged (search/bundle/).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # portable.py and machine.py lie beside this file
    sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import portable  # noqa: E402

BUNDLE_FILE = "bundle.json"


class BundleError(Exception):
    """The bundle or the call is unusable: one line."""


def read_spec(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / BUNDLE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder} is not a bundle: cannot read {BUNDLE_FILE} ({exc})") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def providers_of(spec: dict[str, Any], folder: Path) -> portable.Providers:
    """The provider and its options; an option naming a folder (TensorRT's engine cache) points inside the bundle."""
    options = dict(spec.get("provider_options") or {})
    for key, relative in (spec.get("bundle_dir_options") or {}).items():
        (folder / relative).mkdir(parents=True, exist_ok=True)
        options[key] = str(folder / relative)
    return [(spec["provider"], options)] if options else [spec["provider"]]


def settings_of(spec: dict[str, Any], intra_op_threads: int | None = None) -> dict[str, Any]:
    """The runtime settings; ``intra_op_threads`` overrides every session's intra-op threads (to try another count)."""
    settings = dict(spec["runtime"])
    if intra_op_threads is not None:
        settings["intra_op_num_threads"] = int(intra_op_threads)
    return settings


class BundleModel:
    """The bundled model under its runtime settings: call it with the inputs by name, get the outputs by name."""

    def __init__(self, folder: Path, spec: dict[str, Any], settings: dict[str, Any]) -> None:
        self.folder, self.spec, self.settings = folder, spec, settings
        self.inputs = {i["name"]: i for i in spec["inputs"]}
        self.output_names = list(spec["outputs"])
        portable.load_provider_libraries(spec["provider"])
        providers = providers_of(spec, folder)
        mode = settings["parallelism"]
        if mode == "pipeline":
            parts = [str(folder / stage["file"]) for stage in spec["stages"]]
            self.runner: portable.Runner = portable.StageRunner(parts, self.output_names, settings, providers)
        elif mode == "data_parallel":
            self.runner = portable.DataParallelRunner(str(folder / spec["model"]["file"]), settings, providers)
        else:
            self.runner = portable.SessionRunner(str(folder / spec["model"]["file"]), settings, providers)

    @property
    def active_providers(self) -> list[str]:
        """The providers the sessions actually run on (ONNX Runtime falls back silently where one fails)."""
        return sorted({p for session in self.runner.sessions for p in session.get_providers()})

    def feeds(self, inputs: Mapping[str, Any] | np.ndarray | None, named: dict[str, Any]) -> dict[str, np.ndarray]:
        if inputs is not None and not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise BundleError(f"the model takes {len(self.inputs)} inputs ({', '.join(self.inputs)}): "
                                  "pass them by name")
            inputs = {next(iter(self.inputs)): inputs}
        given = {**(inputs or {}), **named}
        if set(given) != set(self.inputs):
            raise BundleError(f"the model takes the inputs {sorted(self.inputs)}; got {sorted(given)}")
        feeds = {}
        for name, value in given.items():
            array, dtype = np.asarray(value), np.dtype(self.inputs[name]["dtype"])
            if array.dtype != dtype:
                if not np.can_cast(array.dtype, dtype, casting="same_kind"):
                    raise BundleError(f"input {name}: expected {dtype}, got {array.dtype}")
                array = array.astype(dtype)
            feeds[name] = np.ascontiguousarray(array)
        return feeds

    def __call__(self, inputs: Mapping[str, Any] | np.ndarray | None = None, /, **named: Any) -> dict[str, np.ndarray]:
        outputs = self.runner.run(self.feeds(inputs, named))
        return dict(zip(self.output_names, outputs, strict=True))

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> BundleModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(folder: str | Path = HERE, intra_op_threads: int | None = None) -> BundleModel:
    """The bundle in ``folder``, ready to call; ``intra_op_threads`` tries another thread count than the card's."""
    folder = Path(folder).resolve()
    spec = read_spec(folder)
    return BundleModel(folder, spec, settings_of(spec, intra_op_threads))


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as stored:  # plain arrays only: nothing is unpickled
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path} as .npz of arrays: {exc}") from None


def sample(folder: Path, spec: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The bundled sample: its inputs by name, and the outputs the picked model gave on them."""
    stored = read_npz(folder / spec["sample"]["file"])
    inputs = {i["name"]: stored[f"input/{i['name']}"] for i in spec["inputs"]}
    outputs = {name: stored[f"output/{name}"] for name in spec["outputs"]}
    return inputs, outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="?", type=Path, help=".npz with one array per input name (default: the sample)")
    parser.add_argument("--out", type=Path, help="write every output to this .npz")
    parser.add_argument("--intra-op-threads", type=int, help="override the card's intra-op threads")
    args = parser.parse_args(argv)
    try:
        with load(HERE, args.intra_op_threads) as model:
            inputs = read_npz(args.inputs) if args.inputs else sample(model.folder, model.spec)[0]
            outputs = model(inputs)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        np.savez(args.out, **outputs)
        print(f"wrote {', '.join(outputs)} to {args.out}")
    for name, value in outputs.items():
        print(f"{name}: {value.dtype} {list(value.shape)} first values {np.ravel(value)[:4].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
