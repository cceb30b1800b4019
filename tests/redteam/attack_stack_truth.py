"""``attack_stack_truth``: take the ground truth itself from ``run_suite``'s frame.

Attack class: other (issue #10, class 12): the scorer's own state in the estimator's
process.

What it exploits: ``algzu score`` runs estimators in-process (``run_block``), called from
:func:`algzu.run.run_suite`, whose frame holds ``truth`` (every copy's ground
truth) while the cells run; :func:`algzu.sandbox.runner.iter_block`'s frame holds ``k``, the copy
being estimated. Walking up the stack from ``estimate`` gives ``truth[k].value``: the
exact ground truth, for 0 FLOPs (numpy backend, no arithmetic at all). The isolated worker
has no ``truth``: there it fails with an exception.

What a sound harness must do: run estimator code in a process that holds neither the
ground truth nor any other scorer state (sealed by default for ``algzu score`` too).
"""

import dataclasses
import inspect

from algzu.estimator import Estimator, register_estimator


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackStackTruth(Estimator):
    name = "attack_stack_truth"
    mechanistic = True
    backend = "numpy"

    def estimate(self, model, budget_flops, key):
        copy, frame = None, inspect.currentframe()
        while frame is not None:
            f_locals = frame.f_locals
            if copy is None and frame.f_code.co_name == "iter_block" and isinstance(f_locals.get("k"), int):
                copy = f_locals["k"]
            truth = f_locals.get("truth")
            if copy is not None and isinstance(truth, list) and len(truth) > copy and hasattr(truth[copy], "value"):
                return float(truth[copy].value)
            frame = frame.f_back
        raise RuntimeError("attack_stack_truth: no ground truth on the stack")
