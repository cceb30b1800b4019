"""The trust boundary: every module here runs, traces or confines estimator code.

Everything else in :mod:`algzu` is the trusted harness (zoo, noise, ground truth, meters,
scoring, reports). Its process never imports an estimator's file (the module body would run
next to the weights and the scorer): a worker imports them and answers with data, an
:class:`~algzu.sandbox.workers.EstimatorCard` per estimator. What crosses the boundary, and
which way:

* :mod:`~algzu.sandbox.workers` (parent side) starts worker processes and talks to them:
  :class:`~algzu.sandbox.workers.SealedRunner` (the default) and
  :class:`~algzu.sandbox.workers.IsolatedRunner` (``--unsealed``).
* :mod:`~algzu.sandbox.landlock` is a worker's first instruction: Landlock confinement,
  before numpy or JAX start a thread.
* :mod:`~algzu.sandbox.serve` is the worker's life after that: a tracer (estimator code, no
  weights), an executor (weights, no estimator code) or, unsealed, both.
* :mod:`~algzu.sandbox.program` is what crosses from tracer to executor: a serialized
  StableHLO program, traced on abstract weights, checked and metered before it runs.
* :mod:`~algzu.sandbox.runner` runs one estimator on the noisy copies of one model at one
  budget, metered and checked: :func:`~algzu.sandbox.runner.iter_program` in the
  executor, :func:`~algzu.sandbox.runner.iter_block` where code and weights meet
  (unsealed), :func:`~algzu.sandbox.runner.run_block` in-process for tests.
"""
