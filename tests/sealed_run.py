"""Run one estimator on one model the way the harness does, for tests.

:func:`run_once` goes through :func:`algzu.sandbox.runner.run_block`: the estimator is traced on
abstract weights, exported, metered by :mod:`algzu.hlo_meter`, refused if over budget, and
the program compiled and run on the model's weights (in this process, so unsealed).
"""

import jax
import numpy as np

from algzu.estimator import Estimator
from algzu.model import Model
from algzu.sandbox.runner import CellResult, run_block


def run_once(est: Estimator, model: Model, budget_flops: int, key: jax.Array | None = None) -> CellResult:
    """One cell: ``est`` on ``model`` at ``budget_flops`` (key 0 unless given)."""
    stacked = {n: np.asarray(v)[None] for n, v in model.params.items()}
    key = jax.random.key(0) if key is None else key
    [cell] = run_block(est, model.spec, stacked, int(budget_flops), [key], [0])
    return cell
