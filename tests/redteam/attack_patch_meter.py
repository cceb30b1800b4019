"""``attack_patch_meter``: monkeypatch ``algzu.meter.jaxpr_flops`` from estimator code, then
spend 2^18 samples of honest Monte Carlo.

Attack class: tampering with the meter from inside (issue #10, class 6).

What it exploits: the meter is a Python module in the estimator's own process, and
``algzu.meter.prepare_jax`` (the unsealed metering path, since removed) looked
``jaxpr_flops`` up as a module global *after* tracing ``estimate``. So ``estimate`` replaces it, at trace time, with a function that
answers 0 once (and puts the original back, so the process is otherwise unharmed), then
returns plain Monte Carlo over 2^18 inputs (:func:`algzu.planning.sample_mean`): about
4.8e7 real FLOPs on M4,3 and 1.4e9 on M16,10, charged 0, at every budget.

What a sound harness must do: meter on the trusted side, in a process the estimator's
code never runs in; then this program is charged its real work and refused as
``over_budget`` at every suite budget.
"""

import dataclasses

from algzu.estimator import Estimator, register_estimator
from algzu.planning import sample_mean

SAMPLES = 1 << 18


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackPatchMeter(Estimator):
    name = "attack_patch_meter"
    mechanistic = True
    backend = "jax"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        import algzu.meter as meter

        original = meter.jaxpr_flops

        def zero_once(jaxpr):
            meter.jaxpr_flops = original
            return 0

        meter.jaxpr_flops = zero_once
        return sample_mean(model, SAMPLES, key)
