"""``attack_trace_time_design``: plain Monte Carlo on inputs drawn while tracing, staged as
constants with their targets, so it pays for the forward pass and nothing else.

Attack class: other (issue #10, class 12): work moved out of the meter into trace time, like
``attack_trace_time_truth``, but of the legal kind: it reads nothing but its weights and studies
no model, so neither sealing nor closed-book runs can refuse it.

What it exploits: a constant costs nothing, while ``sampling`` paid for its random numbers
(16 FLOPs a normal) and its 2nd-argmax targets (7n): 69 of its 182 FLOPs a sample on M4,3,
230 of 5,479 on M16,10 (up to c36581a). Drawing the inputs with numpy at trace time and
staging them with their targets, it ran the same forward pass on ~1.6x the samples on
M4,3: measured with a probe of this file on the M4,3 protocol (256 copies), 1.64 [1.38, 1.94]
against sampling+prior at 1e5. Its copies share one design, which makes its errors
correlated across copies but leaves its expected MSE that of fresh samples.

What a sound harness must do: price an input the same whether it is drawn at run time or at
trace time. After c36581a the meter charges only work that depends on the copy's weights:
drawing inputs from the key and computing their targets are free for every estimator, so
``sampling`` pays the forward pass only, as this does, and staging buys nothing
(``tests/test_redteam.py::test_inputs_staged_while_tracing_buy_nothing``).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from algzu.estimator import Estimator, register_estimator
from algzu.model import forward
from algzu.planning import abstract_model, chance_estimate, largest_count_within, metered_flops

MAX_SAMPLES = 1 << 17  # a staged design beyond this would make the program too large to send


def staged_mean(model, count: int):
    """Mean score of ``model`` on ``count`` inputs drawn now, with numpy (trace time)."""
    spec = model.spec
    x = np.random.default_rng(7).standard_normal((count, spec.n)).astype(np.float32)
    with jax.ensure_compile_time_eval():  # the targets are computed now, a constant too
        target = np.asarray(spec.task_obj.target(jnp.asarray(x)))
    logits = forward(model, jnp.asarray(x))
    return jnp.mean(jnp.argmax(logits, axis=-1) == target, dtype=jnp.float32)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackTraceTimeDesign(Estimator):
    name = "attack_trace_time_design"
    mechanistic = True  # what an attacker would declare
    backend = "jax"
    tasks = frozenset({"2nd_argmax"})
    archs = frozenset({"rnn"})

    def estimate(self, model, budget_flops, key):
        del key  # the design is fixed: no random numbers to pay for
        spec = model.spec

        def cost(count):
            return metered_flops(lambda m: staged_mean(m, count), abstract_model(spec))

        per_sample = (cost(2048) - cost(1024)) / 1024
        count = min(largest_count_within(cost, per_sample, budget_flops), MAX_SAMPLES)
        if count == 0:
            return chance_estimate(spec)
        return staged_mean(model, count)
