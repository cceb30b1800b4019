"""``attack_relabeled_sampler``: the shipped ``stratified`` sampler (randomised QMC, reads the
model only by running it) under another name, declared mechanistic.

Attack class: other (issue #11, honest verdicts): a claim the harness cannot check. Whether an
estimator is mechanistic is its author's word, and a verdict counted every row that said so.

What it exploits: ``sampling+prior`` is the reference of the headline, and better sampling
beats it without reading the model: ``stratified`` scores 1.76 [1.12, 2.78] at 1e8 on the
432 protocol and 2.16 [1.47, 3.15] closed-book. Declared mechanistic, the same program
(its own keys) scored 1.96 [1.24, 2.88] and 2.6 [1.77, 3.8], and up to 16be9a4 the verdicts
of ``algzu challenge 432 [--heldout] --include tests/redteam/attack_relabeled_sampler.py``
said "A mechanistic estimator beats sampling+prior" at 1e8 (and 1e9 open-book): ARC's open
challenge "won" by a sampler that reads nothing but the model's outputs on random inputs.

What a sound harness must do: never let the word "mechanistic" decide a win by itself. A
mechanistic win must also beat every model-agnostic estimator on the same board at that
budget, measured (``mechanistic = False``: ``sampling``, ``stratified``), so an estimator that
is a sampler under another name ties with the sampler it copies and wins nothing
(``tests/test_redteam.py::test_a_sampler_declared_mechanistic_wins_no_verdict``).
"""

import dataclasses

from algzu.estimator import Estimator, register_estimator
from algzu.estimators import stratified


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackRelabeledSampler(Estimator):
    name = "attack_relabeled_sampler"
    mechanistic = True  # the author's word
    backend = "jax"
    tasks = stratified.Stratified.tasks

    def estimate(self, model, budget_flops, key):
        return stratified.Stratified().estimate(model, budget_flops, key)
