"""``attack_open_book``: load the zoo's public base model at trace time, precompute its
accuracy and a regression of accuracy on the weight perturbation, apply it in ~5P FLOPs.

Attack class: open-book precomputation on public weights (issue #10, class 9). **Legal**
under issue #10: it reads only public data (the shipped zoo, the published protocol in
:data:`algzu.suites.SUITES`) and never the copies being scored. It is here to be measured,
not refused: issue #11 (closed-book suites with fresh bases nobody has seen, and the
``sampling+prior`` headline) is what takes its edge away.

What it exploits: nothing of the harness; only that the base is public and trace-time
work is free. For each public base theta with the same spec and each protocol sigma, it
draws 4P (at least 512) perturbations eps of its own, evaluates theta + sigma * eps
(:func:`algzu.evaluate.expected_scores`, 2^14 inputs, under
``jax.ensure_compile_time_eval``), and fits a ridge regression
``acc ~ a + g . eps + c (|eps|^2 / P - 1)``. The traced program computes
``delta = w - theta`` and applies the fit: about 5P FLOPs (P = 32 on M4,3, 432 on M16,10).

What a sound harness must do: allow it (it is honest open-book work) and meter what the
program does; issue #11 must make its verdict honest: closed-book bases for any "beats
sampling" claim, efficiency against ``sampling+prior``.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 14
RIDGE = 1.0


def fit(spec, model_id: str, std: float, names: list[str]):
    """(theta, a, g, c) of the ridge fit around the public base ``model_id`` at noise ``std``."""
    from algzu import zoo
    from algzu.evaluate import expected_scores

    base = zoo.load_model(model_id)
    theta = np.concatenate([np.ravel(np.asarray(base.params[n], np.float32)) for n in names])
    p = theta.size
    m = max(4 * p, 512)
    eps = np.random.default_rng(2024).standard_normal((m, p)).astype(np.float32)
    weights = theta + std * eps
    sizes = np.cumsum([0] + [int(np.prod(base.params[n].shape)) for n in names])
    stacked = {n: weights[:, sizes[i]:sizes[i + 1]].reshape((m, *base.params[n].shape)) for i, n in enumerate(names)}
    y = np.array([e.value for e in expected_scores(spec, stacked, samples=SAMPLES, seed=17)])
    x = np.concatenate([np.ones((m, 1)), eps, (eps**2).sum(1, keepdims=True) / p - 1], axis=1)
    beta = np.linalg.solve(x.T @ x + RIDGE * np.eye(p + 2), x.T @ y)
    # acc = a + g . delta / std + c (|delta|^2 / (P std^2) - 1): fold the -c into the intercept.
    return theta, float(beta[0] - beta[p + 1]), beta[1 : p + 1] / std, float(beta[p + 1] / (p * std**2))


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackOpenBook(Estimator):
    name = "attack_open_book"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        from algzu import zoo
        from algzu.suites import SUITES

        spec = model.spec
        names = sorted(model.params)
        ids = [e.id for e in zoo.entries() if (e.task, e.arch, e.d, e.n) == (spec.task, spec.arch, spec.d, spec.n)]
        protocol = sorted({(c.model, c.noise_std) for s in SUITES.values() for c in s.cases if c.model in ids})
        if not protocol:
            raise RuntimeError("attack_open_book: no public base and protocol for this spec")
        with jax.ensure_compile_time_eval():
            fits = [fit(spec, model_id, std, names) for model_id, std in protocol]
        w = jnp.concatenate([jnp.ravel(model.params[n]) for n in names])
        predictions = []
        for theta, a, g, c in fits:
            delta = w - jnp.asarray(theta)
            predictions.append(a + jnp.dot(jnp.asarray(g, jnp.float32), delta) + c * jnp.sum(delta * delta))
        if len(fits) > 1:  # the nearest base: |w - theta_c|^2 for each candidate
            distance = jnp.stack([jnp.sum((w - jnp.asarray(t)) ** 2) for t, *_ in fits])
            estimate = jax.lax.dynamic_slice(jnp.stack(predictions), (jnp.argmin(distance),), (1,))[0]
        else:
            estimate = predictions[0]
        return jnp.clip(estimate.astype(jnp.float32), 0.0, 1.0)
