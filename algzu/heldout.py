"""Closed-book suites: base models that no estimator, and no estimator's author, has seen.

A suite run on the zoo's public base models is *open-book*: anything an estimator's author
can compute offline from a public base (its accuracy, a regression of accuracy on weight
perturbations) can be shipped in the estimator's source and costs nothing at scoring time.
ARC's challenge is about ARC's own model, so open-book runs stay; but the claim "estimator
X beats sampling" needs models nobody could have studied. A *closed-book* twin of a suite
keeps its families (task, architecture, d, n), noise levels, copies and budgets and
replaces each base model by one of:

* a **fresh base** (``--heldout``): trained with the zoo's recipe for that family (the
  training budget and number of seeds of the shipped zoo model with the same spec, best
  seed kept, :func:`algzu.train.train_and_save`) from seeds drawn from the secret. Bases
  are cached outside the results folder (:func:`default_cache_dir`, keyed by a hash of the
  secret and the family) so they are trained once, never committed and never printed;
* a **private checkpoint** (``--zoo-dir DIR``): ``DIR/FAMILY.safetensors`` (with its JSON
  sidecar) or ``DIR/FAMILY.pth``, ``FAMILY`` being the zoo id of the spec
  (:func:`algzu.zoo.model_id`, e.g. ``2nd_argmax-d16-n10``).

The twin's models are named ``heldout/FAMILY``. Estimators see what they always see (the
spec, the budget, abstract shapes, and under sealing not even the copy's weights while
their code runs): never the base weights, the training seeds or the secret. The sealed
tracer cannot open the cache (Landlock confines it to the Python installation, algzu's
packages and the estimators' files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from algzu import checkpoint
from algzu.errors import AlgzuError
from algzu.model import Model
from algzu.suites import ModelCase, Suite

PREFIX = "heldout/"
# A family the zoo does not ship is trained on this many sequences, one seed.
DEFAULT_SEQS = 1 << 22


def default_cache_dir() -> Path:
    """Where fresh bases are cached: ``$ALGZU_HELDOUT_CACHE``, else ``~/.cache/algzu/heldout``."""
    return Path(os.environ.get("ALGZU_HELDOUT_CACHE") or Path.home() / ".cache" / "algzu" / "heldout")


def family_recipe(spec) -> tuple[int, int]:
    """``(sequences per seed, seeds)`` of the zoo's training run for this family."""
    from algzu.zoo import ZOO_DIR, model_id

    sidecar = ZOO_DIR / f"{model_id(spec)}.json"
    if not sidecar.exists():
        return DEFAULT_SEQS, 1
    training = json.loads(sidecar.read_text())["training"]
    return int(training["seqs"]), len(training["seeds"])


def _secret_hash(secret: str, *parts: str) -> bytes:
    return hashlib.sha256("\0".join((secret, *parts)).encode()).digest()


def fresh_base(spec, secret: str, *, cache_dir: str | Path | None = None,
               progress: Callable[[int, int], None] | None = None) -> Model:
    """A base model of ``spec``'s family trained from seeds drawn from ``secret`` (cached).

    Args:
        spec: the family (task, architecture, d, n).
        secret: the held-out secret; the same secret gives the same base.
        cache_dir: where trained bases are kept (:func:`default_cache_dir` by default).
        progress: called as ``progress(done_sequences, total_sequences)`` while training.
    """
    from algzu.train import train_and_save
    from algzu.zoo import model_id

    family = model_id(spec)
    seqs, n_seeds = family_recipe(spec)
    name = _secret_hash(secret, "base", family, str(seqs), str(n_seeds)).hex()[:32]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{name}.safetensors"
    if not path.exists():
        first = int.from_bytes(_secret_hash(secret, "seeds", family)[:4], "little") & 0x3FFFFFFF
        try:
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise AlgzuError(f"cannot create the held-out cache {cache}: {e.strerror}") from None
        train_and_save(spec, seqs=seqs, seeds=range(first, first + n_seeds), out_dir=cache, name=name,
                       progress=progress)
    return checkpoint.load(path)


def private_base(spec, zoo_dir: str | Path) -> Model:
    """The base of ``spec``'s family from a private folder of checkpoints."""
    from algzu.zoo import model_id

    family = model_id(spec)
    for suffix in (".safetensors", ".pth"):
        path = Path(zoo_dir) / f"{family}{suffix}"
        if path.exists():
            model = checkpoint.load(path, spec.task)
            if dataclasses.replace(model.spec, n_heads=spec.n_heads) != spec:
                raise AlgzuError(f"{path}: a {model.spec} model, expected {spec}")
            return model
    raise AlgzuError(f"--zoo-dir {zoo_dir}: no {family}.safetensors or {family}.pth")


def closed_book(suite: Suite, *, secret: str | None = None, zoo_dir: str | Path | None = None,
                cache_dir: str | Path | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> tuple[Suite, dict[str, Model]]:
    """The closed-book twin of ``suite`` and its base models, by case id.

    Args:
        suite: the open-book suite.
        secret: draw fresh bases from this secret (``--heldout``).
        zoo_dir: or read them from this private folder (``--zoo-dir``).
        cache_dir: where fresh bases are cached.
        progress: called as ``progress(description, done, total)`` while training.

    Raises:
        AlgzuError: neither or both of ``secret`` and ``zoo_dir``, or a missing checkpoint.
    """
    from algzu.zoo import load_model, model_id

    if (secret is None) == (zoo_dir is None):
        raise AlgzuError("a closed-book run needs a secret (--heldout with --secret-file) or --zoo-dir, not both")
    cases, models = [], {}
    for case in suite.cases:
        spec = load_model(case.model).spec
        family = PREFIX + model_id(spec)
        if family not in models:
            if zoo_dir is not None:
                models[family] = private_base(spec, zoo_dir)
            else:
                def report(done: int, total: int, family: str = family) -> None:
                    if progress is not None:
                        progress(f"training closed-book base {family}", done, total)

                models[family] = fresh_base(spec, secret, cache_dir=cache_dir, progress=report)
        cases.append(ModelCase(family, case.noise_std))
    twin = dataclasses.replace(suite, name=f"{suite.name}-closed-book", cases=tuple(cases), closed_book=True,
                               description=f"closed-book twin of {suite.name}: fresh base models of the same "
                                           f"families; {suite.description}")
    return twin, models
