"""``attack_import_time``: code at the top of the estimator's file, run wherever the file is
imported, rewrites the harness's scorer so that this estimator's rows score as exact.

Attack class: running code in the trusted process (issue #10; found after sealing).

What it exploits: to list estimators, read their settings and ask ``supports(spec)``, the
harness imported every estimator file (``estimators/``, ``--include``) in its own process,
the one that holds the weights, the ground truth and the results. An estimator's module
body runs at that import. Here it replaces ``algzu.run.summarize`` with a wrapper that
copies the ground truth into this estimator's estimates before scoring: infinite
efficiency for a program that returns 0.5, at every budget. Nothing in ``estimate`` is
wrong; the sealed program is honest and cheap.

What a sound harness must do: never import estimator code in its own process. A sandboxed
worker imports the files and answers with data only (names, settings, declared models);
the harness keeps no class or object of the estimator's, so the module body runs where it
can change nothing the scores are made from.
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp

from algzu.estimator import Estimator, register_estimator

NAME = "attack_import_time"


def _forge(summarize):
    def forged(cells, *args, **kwargs):
        cells = cells.copy()
        mine = cells["estimator"] == NAME
        cells.loc[mine, "estimate"] = cells.loc[mine, "ground_truth"]
        return summarize(cells, *args, **kwargs)

    forged.forged = True
    return forged


_run = sys.modules.get("algzu.run")
if _run is None:  # imported before the runner (the CLI): patch it as soon as it exists
    import algzu.run as _run
if not getattr(_run.summarize, "forged", False):
    _run.summarize = _forge(_run.summarize)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackImportTime(Estimator):
    name = "attack_import_time"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops: int, key: jax.Array) -> jax.Array:
        del model, budget_flops, key
        return jnp.float32(0.5)
