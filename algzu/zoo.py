"""The zoo: every model algzu ships, by stable id.

* ``algzoo/...``: ARC's official checkpoints, read from the ``.pth`` files shipped in
  ``algzu/zoo/official`` (MIT-0).
* ``TASK-dD-nN`` (and ``TASK-ARCH-dD-nN`` for a non-default architecture): models trained
  by :mod:`algzu.train`, shipped as ``algzu/zoo/ID.safetensors`` with a JSON sidecar that
  says how to reproduce them.
* ``handcrafted/...``: models built by hand in :mod:`algzu.handcrafted`.

:func:`load_model` accepts a zoo id or a checkpoint path.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from algzu import checkpoint
from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
OFFICIAL_DIR = ZOO_DIR / "official"

# ARC's checkpoints: file, spec, and ARC's stated accuracy.
OFFICIAL: dict[str, tuple[str, ModelSpec, float]] = {
    "algzoo/example_2nd_argmax": ("algzoo_rnn_blog.pth", ModelSpec("rnn", "2nd_argmax", 16, 10), 0.9531),
    "algzoo/2nd_argmax-d2-n2": ("algzoo_rnn_small.pth", ModelSpec("rnn", "2nd_argmax", 2, 2), 0.99993),
    "algzoo/longest_cycle-d2-n3": (
        "algzoo_transformer_small.pth",
        ModelSpec("transformer", "longest_cycle", 2, 3, n_layers=2),
        1.0,
    ),
}


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One row of ``algzu zoo list``."""

    id: str
    task: str
    arch: str
    d: int
    n: int
    n_params: int
    accuracy: float | None  # recorded expected score (accuracy, or MSE for median)
    source: str  # official / trained / handcrafted


def model_id(spec: ModelSpec) -> str:
    """The stable zoo id of a trained model with this spec."""
    default_arch = "transformer" if spec.task_obj.input_kind == "discrete" else "rnn"
    arch = "" if spec.arch == default_arch else f"{spec.arch}-"
    return f"{spec.task}-{arch}d{spec.d}-n{spec.n}"


def _handcrafted():
    from algzu.handcrafted import HANDCRAFTED

    return HANDCRAFTED


def _handcrafted_accuracy(model_id: str) -> float | None:
    from algzu.handcrafted import ACCURACY

    return ACCURACY.get(model_id, (None, None))[0]


def entries() -> list[ZooEntry]:
    """Every model in the zoo, official first, then trained, then handcrafted."""
    rows = [
        ZooEntry(i, s.task, s.arch, s.d, s.n, s.n_params, acc, "official")
        for i, (_, s, acc) in OFFICIAL.items()
    ]
    for sidecar in sorted(ZOO_DIR.glob("*.json")):
        data = json.loads(sidecar.read_text())
        spec = ModelSpec.from_dict(data["spec"])
        acc = data.get("evaluation", {}).get("value")
        rows.append(ZooEntry(sidecar.stem, spec.task, spec.arch, spec.d, spec.n, spec.n_params, acc, "trained"))
    for i, build in _handcrafted().items():
        spec = build().spec
        rows.append(ZooEntry(i, spec.task, spec.arch, spec.d, spec.n, spec.n_params, _handcrafted_accuracy(i),
                             "handcrafted"))
    return rows


def ids() -> list[str]:
    return [e.id for e in entries()]


def load_model(ref: str, task: str | None = None) -> Model:
    """A zoo model by id, or a checkpoint by path (``.pth`` or ``.safetensors``).

    Raises:
        AlgzuError: unknown id (the message lists valid ones) or a bad checkpoint.
    """
    if ref in OFFICIAL:
        file, spec, _ = OFFICIAL[ref]
        params = checkpoint.load(OFFICIAL_DIR / file).params
        return Model(spec, params)
    trained = ZOO_DIR / f"{ref}.safetensors"
    if "/" not in ref and trained.exists():
        return checkpoint.load(trained, task)
    handcrafted = _handcrafted()
    if ref in handcrafted:
        return handcrafted[ref]()
    if ref.endswith((".pth", ".safetensors")) or "/" in ref and Path(ref).exists():
        return checkpoint.load(ref, task)
    raise AlgzuError(f"unknown model {ref!r}: not a zoo id or checkpoint path; zoo ids: {', '.join(ids())}")
