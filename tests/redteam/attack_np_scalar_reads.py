"""``attack_np_scalar_reads``: numpy backend; ``float(w[i, j])`` reads, then the harness's own evaluator.

Attack class: numpy backend, leave the meter (issue #10, class 1), third variant.

What it exploits: indexing a flopscope array and converting the element with ``float()``
is free (a view and a Python conversion; no ``flopscope.numpy`` arithmetic). Reading every
weight that way rebuilds the model in plain Python numbers; the harness's own fast JAX
evaluator (:func:`algzu.evaluate.evaluate`, 2^18 inputs) then computes the accuracy. JAX
work is invisible to flopscope, so 0 FLOPs are charged.

What a sound harness must do: no element of the weights reaches estimator code for free
(each read charged by the trusted side), and no unmetered compute engine (JAX, plain numpy,
Python) is reachable from a numpy estimator's process; or the backend is unsealed and
never counts for a verdict.
"""

import dataclasses
import itertools

import numpy as np

from algzu.estimator import Estimator, register_estimator
from algzu.model import Model

SAMPLES = 1 << 18


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackNpScalarReads(Estimator):
    name = "attack_np_scalar_reads"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        from algzu.evaluate import evaluate

        params = {}
        for name, w in model.params.items():
            values = [float(w[idx]) for idx in itertools.product(*map(range, w.shape))]
            params[name] = np.asarray(values, np.float32).reshape(w.shape)
        return evaluate(Model(model.spec, params), samples=SAMPLES, seed=3).value
