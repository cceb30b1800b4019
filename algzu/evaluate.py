"""Expected score of a model by Monte Carlo sampling, or exactly by enumeration.

This is the ground-truth primitive of the harness. :func:`expected_scores` evaluates K
weight sets of one spec at once on *common random numbers*: every copy sees the same input
batch, which amortises input generation and the task's target over the copies and lowers
the variance of their differences. Discrete tasks with at most
``algzu.task.MAX_EXHAUSTIVE_INPUTS`` inputs are evaluated exactly by enumerating them
(standard error 0).

How the sampled path is fast (figures for M16,10 on 2 CPU cores are in ``results/bench.md``):

* **Small batches, many per call.** One jitted call runs a ``lax.scan`` over many batches of
  :data:`DEFAULT_BATCH` inputs, so K copies x d hidden units x one batch stay in cache and
  dispatch is paid once per call, not once per batch.
* **Lanes layout for the RNN.** The ReLU RNN runs with the batch on the minor axis,
  ``h`` of shape ``(K, d, batch)``, and ``W_hh h`` written as a broadcast product summed
  over ``d``. XLA's CPU backend then compiles the whole unrolled recurrence of every copy
  into one fused kernel instead of one small matmul kernel per time step. Other
  architectures use :func:`algzu.model.forward` under ``vmap``.
* **Per-batch sums, summed on the host in float64.** Each batch's score sum is exact in
  float32 for 0/1 scores; batches are keyed by ``fold_in(key, batch_index)``, so the result
  does not depend on how batches are grouped into calls or spread over devices.

Inputs are drawn by the task's own :meth:`algzu.task.Task.sample` (i.i.d. N(0, 1) for
Gaussian tasks), so the distribution is exactly the task's.

Multi-device and multi-host
---------------------------
Batches are sharded over every device in ``jax.devices()`` with ``jax.shard_map`` on a 1-D
mesh (axis ``"batch"``): device j runs batches ``j*steps ... (j+1)*steps - 1`` of each call
and the per-batch sums are all-gathered, so every process holds the whole result. Because
batch i always sees the inputs of ``fold_in(key, i)``, the answer is the same on 1 device,
on 2 (``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts, which
also puts both cores of a small CPU machine to work), or on many hosts.

On several hosts, start JAX's distributed runtime in every process *before* anything else
touches JAX, then call :func:`expected_scores` with the same arguments in every process
(SPMD); each process gets the full list of evaluations::

    import jax
    jax.distributed.initialize()          # coordinator/process ids from the cluster env
    evs = expected_scores(spec, params, samples=1 << 26, seed=0)   # same call everywhere

``jax.devices()`` then lists the devices of all hosts and the mesh spans them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec, forward
from algzu.task import Task

# Inputs per scanned batch. 512 keeps a 16-copy block of M16,10 hidden states
# (16 x 16 x 512 float32 = 512 KiB) within a core's L2; larger batches fall out of cache
# and ran ~1.2x slower per sequence at 1024, smaller ones pay more loop overhead.
DEFAULT_BATCH = 512
# evaluate() scores one model: with a single copy, RNG and the target dominate, and bigger
# batches amortise the per-batch work (1.5x the rate of 512 per CPU-second at 4096).
EVALUATE_BATCH = 4096
# Upper bound on batches per device in one jitted call: ~1/4 s of work for K = 16, so
# Python dispatch is negligible while a call stays short enough to interrupt.
MAX_STEPS_PER_CALL = 256
_AXIS = "batch"
# Rows (copies x batch segments) of the RNN's fused kernel; see :func:`_segments`.
_MIN_ROWS = 16


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Expected score of one model.

    Attributes:
        value: accuracy for classification tasks, mean squared error for scalar tasks.
        stderr: standard error of ``value`` (0 when exhaustive).
        samples: inputs evaluated.
        method: ``sampled`` or ``exhaustive``.
    """

    value: float
    stderr: float
    samples: int
    method: str


def _rnn_logits_lanes(params, xt: jax.Array) -> jax.Array:
    """Logits ``(G, n_out, B)`` of G stacked ReLU RNNs, row g on its own inputs ``xt[:, g]``.

    ``xt`` has shape ``(n, G, B)``, or ``(n, 1, B)`` for inputs shared by every row. The
    same function as :func:`algzu.model.rnn_forward` per row, with the batch on the minor
    axis and each matrix product written as a broadcast multiply summed over the contracted
    axis, which XLA fuses across all time steps (see the module docstring).
    """
    w_ih = params["rnn.weight_ih_l0"]  # (G, d, 1)
    w_hh = params["rnn.weight_hh_l0"][..., None]  # (G, d, d, 1)
    w_out = params["linear.weight"][..., None]  # (G, n_out, d, 1)
    h = jax.nn.relu(w_ih * xt[0][:, None, :])  # h_0 = 0, so W_hh h_0 vanishes
    for t in range(1, xt.shape[0]):
        h = jax.nn.relu(w_ih * xt[t][:, None, :] + jnp.sum(w_hh * h[:, None, :, :], axis=2))
    return jnp.sum(w_out * h[:, None, :, :], axis=2)


def _segments(n_copies: int, batch: int) -> int:
    """How many segments to cut a batch into so that copies x segments >= _MIN_ROWS.

    XLA's fused CPU kernel is slow when the leading (copy) axis is tiny, 30x at one copy,
    so a few copies are run as copies x segments rows of batch/segments inputs each.
    """
    want = max(1, -(-_MIN_ROWS // n_copies))
    return max(r for r in range(1, want + 1) if batch % r == 0)


def _uses_default_score(task: Task) -> bool:
    return type(task).score is Task.score


def _copy_scores(spec: ModelSpec, params, x: jax.Array) -> jax.Array:
    """Scores ``(K, B)`` of K stacked weight sets on one shared batch ``x`` ``(B, n)``."""
    task = spec.task_obj
    n_copies = next(iter(params.values())).shape[0]
    batch = x.shape[0]
    r = _segments(n_copies, batch)
    if spec.arch == "rnn" and _uses_default_score(task) and n_copies * r > 1:
        if r == 1:  # (n, 1, B): broadcast over the copies inside the fused kernel
            xt, rows = x.T[:, None, :], params
        else:  # row k*r + j is copy k on segment j of the batch
            xt = jnp.broadcast_to(x.T.reshape(spec.n, 1, r, batch // r), (spec.n, n_copies, r, batch // r))
            xt = xt.reshape(spec.n, n_copies * r, batch // r)
            rows = {k: jnp.repeat(v, r, axis=0) for k, v in params.items()}
        logits = _rnn_logits_lanes(rows, xt)  # (K * r, n_out, B / r)
        logits = logits.reshape(n_copies, r, logits.shape[1], batch // r)
        target = task.target(x).reshape(1, r, batch // r)
        if task.output_kind == "positions":
            scores = (jnp.argmax(logits, axis=2) == target).astype(jnp.float32)
        else:
            scores = jnp.square(logits[:, :, 0, :] - target).astype(jnp.float32)
        return scores.reshape(n_copies, batch)
    return jax.vmap(lambda p: task.score(forward(Model(spec, p), x), x))(params)


def _batch_moments(spec: ModelSpec, params, key_data: jax.Array, indices: jax.Array, batch: int):
    """Per-batch score sums and sums of squares, ``(len(indices), K)`` each.

    Batch ``i`` draws its inputs from ``fold_in(key, i)``, whatever device runs it.
    """
    task = spec.task_obj
    key = jax.random.wrap_key_data(key_data)

    def one_batch(carry, i):
        x = task.sample(jax.random.fold_in(key, i), batch, spec.n)
        s = _copy_scores(spec, params, x)
        return carry, (jnp.sum(s, axis=1), jnp.sum(s * s, axis=1))

    _, (s, s2) = jax.lax.scan(one_batch, None, indices)
    return s, s2


@functools.lru_cache(maxsize=None)
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.array(devices), (_AXIS,))


def _global(x, mesh: Mesh, spec: PartitionSpec) -> jax.Array:
    """A host value as a global array over ``mesh`` (valid input on one host or many)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda index: x[index])


@functools.lru_cache(maxsize=None)
def _sharded_moments(spec: ModelSpec, batch: int, devices: tuple[jax.Device, ...]):
    """The jitted, batch-sharded :func:`_batch_moments` for one spec, batch and device set."""
    mesh = _mesh(devices)
    rep = PartitionSpec()

    def local(params, key_data, indices):
        s, s2 = _batch_moments(spec, params, key_data, indices, batch)
        # Every device (and so every host) gets every batch's sums, in batch order.
        return (jax.lax.all_gather(s, _AXIS, tiled=True), jax.lax.all_gather(s2, _AXIS, tiled=True))

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, PartitionSpec(_AXIS)),
                           out_specs=(rep, rep), check_vma=False)
    return jax.jit(mapped)


def _host(x: jax.Array) -> np.ndarray:
    """A replicated (possibly multi-host) array as float64 numpy, read from a local shard."""
    return np.asarray(x.addressable_shards[0].data, np.float64)


@functools.partial(jax.jit, static_argnames=("spec",))
def _exhaustive_means(spec: ModelSpec, params, x: jax.Array):
    task = spec.task_obj
    return jax.vmap(lambda p: jnp.mean(task.score(forward(Model(spec, p), x), x)))(params)


def expected_scores(
    spec: ModelSpec,
    params,
    *,
    samples: int,
    seed: int,
    batch: int = DEFAULT_BATCH,
) -> list[Evaluation]:
    """Expected score of each of K stacked weight sets (leading axis K) of one spec.

    Args:
        spec: the shared model spec.
        params: weights dict whose arrays carry a leading copy axis of size K.
        samples: inputs per copy (rounded up to whole batches) when sampling.
        seed: seed of the input stream; every copy sees the same inputs, and the result
            is the same for a seed on any number of devices or hosts.
        batch: inputs per scanned batch (the unit of the input stream); many batches run
            per jitted call, sharded over ``jax.devices()``.

    Returns:
        One :class:`Evaluation` per copy.
    """
    n_copies = np.shape(next(iter(params.values())))[0]
    task = spec.task_obj
    if task.is_exhaustive(spec.n):
        params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
        x = jnp.asarray(task.all_inputs(spec.n))
        means = np.asarray(_exhaustive_means(spec, params, x), np.float64)
        return [Evaluation(float(m), 0.0, int(x.shape[0]), "exhaustive") for m in means]
    if samples < 2:
        raise AlgzuError(f"need at least 2 samples to estimate a standard error, got {samples}")
    if batch < 1:
        raise AlgzuError(f"batch must be positive, got {batch}")
    batch = min(batch, samples)
    n_batches = math.ceil(samples / batch)
    devices = tuple(jax.devices())
    n_dev = len(devices)
    # Equal calls of `steps` batches per device; the last call's padding batches (fewer
    # than one per device and call) are computed and dropped.
    n_calls = math.ceil(n_batches / (n_dev * MAX_STEPS_PER_CALL))
    steps = math.ceil(n_batches / (n_dev * n_calls))
    per_call = steps * n_dev
    run = _sharded_moments(spec, batch, devices)
    mesh, rep = _mesh(devices), PartitionSpec()
    params = {k: _global(np.asarray(v, np.float32), mesh, rep) for k, v in params.items()}
    key_data = _global(jax.random.key_data(jax.random.key(seed)), mesh, rep)
    sums = np.empty((n_batches, n_copies))
    sums_sq = np.empty((n_batches, n_copies))
    for start in range(0, n_batches, per_call):
        indices = _global(np.arange(start, start + per_call, dtype=np.int32), mesh, PartitionSpec(_AXIS))
        s, s2 = run(params, key_data, indices)
        valid = min(per_call, n_batches - start)
        sums[start : start + valid] = _host(s)[:valid]
        sums_sq[start : start + valid] = _host(s2)[:valid]
    # One float64 sum over all batches: the same order whatever the grouping into calls.
    total, total_sq = sums.sum(axis=0), sums_sq.sum(axis=0)
    count = n_batches * batch
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0) * count / (count - 1)
    stderr = np.sqrt(var / count)
    return [Evaluation(float(m), float(e), count, "sampled") for m, e in zip(mean, stderr)]


def evaluate(model: Model, *, samples: int = 1 << 22, seed: int = 0, batch: int = EVALUATE_BATCH) -> Evaluation:
    """Expected score (accuracy, or MSE for scalar tasks) of one model."""
    stacked = {k: jnp.asarray(v)[None] for k, v in model.params.items()}
    return expected_scores(model.spec, stacked, samples=samples, seed=seed, batch=batch)[0]
