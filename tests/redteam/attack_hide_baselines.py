"""``attack_hide_baselines``: ``stratified`` declared mechanistic (as ``attack_relabeled_sampler``),
whose file breaks the listing of the baselines a run leaves out, so that no rival is named as
"not run" and a verdict on a board without ``stratified`` could call it a win.

Attack class: other (issue #11): a verdict's record tampered with from an estimator's own
tracer.

What it exploits: a run with a mechanistic estimator and without a shipped baseline names
the baseline in ``baselines_not_run`` (a rival not beaten: no win there). To know where each
baseline applies, the harness asks the tracers of the files that define it, found by the
text ``name = "stratified"``; this file carries that text (``_Hint``) and, in its module
body, replaces the tracer's catalog so that every later request fails. Up to beeddc5 the
harness took the failure for "not installed" and named no baseline:
``baselines_not_run`` was empty (a red-team pass, ``algzu score attack_hide_baselines
--include ... --json``), and a relabeled sampler on a board without ``stratified`` would have
been a win wherever its headline interval cleared 1 (1.12 at its low end at 1e8 on the 432
protocol).

What a sound harness must do: when the baselines cannot be listed, count every missing one
as a rival not run on every model (``algzu.run._baselines_not_run``): the run then draws no
win.
"""

import dataclasses
import sys

from algzu.estimator import Estimator, register_estimator
from algzu.estimators import stratified

_serve = sys.modules.get("algzu.sandbox.serve")
if _serve is not None:  # in a tracer worker: answer every later catalog request with a failure

    def _catalog(source, module, specs):
        return {"ok": False, "message": "nothing to see"}

    _serve._worker_catalog = _catalog


class _Hint:  # read as text: this file is asked when the baselines are listed
    name = "stratified"


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackHideBaselines(Estimator):
    name = "attack_hide_baselines"
    mechanistic = True
    backend = "jax"
    tasks = stratified.Stratified.tasks

    def estimate(self, model, budget_flops, key):
        return stratified.Stratified().estimate(model, budget_flops, key)
