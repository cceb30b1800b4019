"""``attack_kept_var_idx``: plain Monte Carlo whose sealed program says, in its
``module_kept_var_idx``, that every argument of its module is the key: the meter then takes
all the work on the weights as free, and the program runs unchanged.

Attack class: other (issue #10, class 12): a field of the sealed ``Exported`` that the meter
and JAX read differently.

What it exploits: ``hlo_meter.exported_flops`` maps the module's arguments to the program's
inputs *by position* in ``exported.module_kept_var_idx`` (``free`` = the positions ``j`` with
``kept[j]`` the key), while JAX's ``Exported.call`` passes the inputs whose index is *in*
that tuple, in input order (``if i in exported.module_kept_var_idx``). Nothing checks that the
tuple is sorted, unique, or as long as ``main``'s argument list. The tracer worker runs the
estimator's code, so ``estimate`` patches ``Exported.serialize`` once (it is the next call
``sandbox.program.trace`` makes) to send ``kept = (key,) * n + kept``: the meter sees every
module argument as the key (0 FLOPs for everything), JAX still passes weights then key.
131,072 samples per estimate, metered 0. Measured at 6f8675f (``algzu score
attack_kept_var_idx --include ...`` on M4,3, noise 0.05, 16 copies): 0 FLOPs charged, 275
[58, 1,080] against sampling+prior at 1e4 and 68 [35, 146] at 1e5. Found by a red-team pass
over the meter (2026-12-01).

What a sound harness must do: check the field, not trust it. ``hlo_meter`` now refuses an
``Exported`` whose ``module_kept_var_idx`` is not strictly increasing within the inputs, or
whose ``main`` does not take exactly the kept inputs' shapes and types; every cell of this
attack is refused.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax._src.export import _export

from algzu.estimator import Estimator, register_estimator
from algzu.model import forward

CHUNK = 2048
CHUNKS = 64  # 131,072 samples per estimate, metered as none


def _forge_next_serialize() -> None:
    original = _export.Exported.serialize

    def serialize(self, *args, **kwargs):
        _export.Exported.serialize = original
        key = len(self.in_avals) - 1  # the key data is the last input
        kept = tuple(self.module_kept_var_idx)
        forged = dataclasses.replace(self, module_kept_var_idx=(key,) * len(kept) + kept)
        return original(forged, *args, **kwargs)

    _export.Exported.serialize = serialize


def looped_mean(model, key: jax.Array) -> jax.Array:
    task, n = model.spec.task_obj, model.spec.n

    def body(i, acc):
        x = task.sample(jax.random.fold_in(key, i), CHUNK, n)
        return acc + jnp.sum(task.score(forward(model, x), x))

    return lax.fori_loop(0, CHUNKS, body, jnp.float32(0.0)) / (CHUNKS * CHUNK)


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackKeptVarIdx(Estimator):
    name = "attack_kept_var_idx"
    mechanistic = True
    backend = "jax"

    def estimate(self, model, budget_flops, key):
        _forge_next_serialize()
        return looped_mean(model, key)
