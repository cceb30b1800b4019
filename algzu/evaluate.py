"""Expected score of a model by Monte Carlo sampling, or exactly by enumeration.

This is the ground-truth primitive of the harness. :func:`expected_scores` evaluates K
weight sets of one spec at once, by default on *common random numbers*: every copy sees the
same input batch, which amortises input generation and the task's target over the copies
and lowers the variance of their differences. With ``streams`` each copy draws inputs of
its own, so the copies' errors are independent; the ground truth of a suite's noisy copies
is drawn that way (:mod:`algzu.ground_truth` says why). Discrete tasks with at most
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
* **Inputs drawn where the kernel reads them.** A batch is drawn straight into the lanes
  layout ``(n, B)`` by an unrolled threefry (:func:`_normal_lanes`), bit for bit the
  values of ``task.sample`` (``jax.random.normal``), and the target is ``task.target``
  mapped over the columns. The scan carries the next batch's inputs, so they are
  materialised once rather than fused into every reduction that reads them. With one
  copy, input generation and the target cost as much as the model itself: this is what
  puts ``evaluate`` (one model) near the kernel's rate.
* **Per-batch sums, summed on the host in float64.** Each batch's score sum is exact in
  float32 for 0/1 scores; batches are keyed by ``fold_in(key, batch_index)``, so the result
  does not depend on how batches are grouped into calls or spread over devices.

Inputs are drawn by the task's own :meth:`algzu.task.Task.sample` (i.i.d. N(0, 1) for
Gaussian tasks), so the distribution is exactly the task's: batch ``i`` of seed ``s`` is
``task.sample(fold_in(key(s), i), batch, n)``, whichever way it is computed.

Multi-device and multi-host
---------------------------
Batches are sharded over every device in ``jax.devices()`` with ``jax.shard_map`` on a 1-D
mesh (axis ``"batch"``): device j runs batches ``j*steps ... (j+1)*steps - 1`` of each call
and the per-batch sums are all-gathered, so every process holds the whole result. Because
batch i always sees the inputs of ``fold_in(key, i)``, the answer is the same on 1 device,
on 2 (``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts, which
also puts both cores of a small CPU machine to work), or on many processes and hosts
(tested with two processes in ``tests/test_distributed.py``).

On several processes, join JAX's distributed runtime in every process *before* anything
else touches JAX (:func:`algzu.distributed.initialize`, or ``jax.distributed.initialize``),
then call :func:`expected_scores` with the same arguments in every process (SPMD); each
process gets the full list of evaluations::

    from algzu import distributed
    distributed.initialize(auto=True)     # coordinator/process ids from the cluster env
    evs = expected_scores(spec, params, samples=1 << 26, seed=0)   # same call everywhere

``jax.devices()`` then lists the devices of all processes and the mesh spans them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

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


def _uses_default_sample(task: Task) -> bool:
    return type(task).sample is Task.sample


# Threefry-2x32's rotation constants (Salmon et al., "Parallel random numbers: as easy as
# 1, 2, 3", SC 2011), as JAX's implementation uses them.
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds, unrolled: the hash behind ``jax.random``'s default key.

    JAX lowers the same hash on CPU as a rolled 5-step loop whose every step is a pass over
    memory; unrolled, XLA fuses all 20 rounds into one kernel (2.8x the rate of
    ``jax.random.normal`` for a (10, 4096) batch, ``bench/ground_truth.py``).
    """
    ks = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for step in range(5):
        for r in _THREEFRY_ROTATIONS[step % 2]:
            x0 = x0 + x1
            x1 = (x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))
            x1 = x0 ^ x1
        x0 = x0 + ks[(step + 1) % 3]
        x1 = x1 + ks[(step + 2) % 3] + np.uint32(step + 1)
    return x0, x1


def _normal_lanes(key: jax.Array, batch: int, n: int) -> jax.Array:
    """``jax.random.normal(key, (batch, n), float32).T``, bit for bit, computed in place.

    Partitionable threefry (JAX's default since 0.5) draws element ``(b, t)`` from the hash
    of its row-major position ``b * n + t``; computing that position for the transposed
    layout yields the transposed array with no data movement. The uniform-to-normal map is
    ``jax.random.normal``'s: 23 random mantissa bits, a uniform on ``(-1, 1)``,
    ``sqrt(2) * erf_inv``. :func:`_fast_normals_exact` checks the equality once per process.
    """
    k = jax.random.key_data(key)
    position = (jax.lax.broadcasted_iota(jnp.uint32, (n, batch), 1) * np.uint32(n)
                + jax.lax.broadcasted_iota(jnp.uint32, (n, batch), 0))
    b0, b1 = _threefry2x32(k[0], k[1], jnp.zeros_like(position), position)
    mantissa = ((b0 ^ b1) >> np.uint32(9)) | np.uint32(0x3F800000)
    unit = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - np.float32(1)
    lo, hi = np.nextafter(np.float32(-1), np.float32(0)), np.float32(1)
    u = jnp.maximum(lo, unit * (hi - lo) + lo)
    return np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)


@functools.lru_cache(maxsize=None)
def _fast_normals_exact() -> bool:
    """Whether :func:`_normal_lanes` reproduces ``jax.random.normal`` bit for bit here.

    False with a non-default PRNG (``jax_default_prng_impl``), with
    ``jax_threefry_partitionable`` off, or if a JAX release changes its normal sampler:
    inputs are then drawn by ``jax.random.normal`` itself, slower but the same stream.
    """
    try:
        key = jax.random.fold_in(jax.random.key(12345), 6789)
        want = jax.jit(lambda k: jax.random.normal(k, (515, 7), jnp.float32).T)(key)
        got = jax.jit(lambda k: _normal_lanes(k, 515, 7))(key)
        want, got = np.asarray(want), np.asarray(got)
    except Exception:  # noqa: BLE001 - any failure (another key layout, say) means: not exact
        return False
    return want.shape == got.shape and want.dtype == got.dtype and np.array_equal(want.view(np.uint32),
                                                                                 got.view(np.uint32))


def _lanes_inputs(task: Task, key: jax.Array, batch: int, n: int, fast_normals: bool) -> jax.Array:
    """``task.sample(key, batch, n).T``: one batch of the input stream, inputs on the minor axis."""
    if fast_normals and task.input_kind == "gaussian" and _uses_default_sample(task) and batch * n < 2**32:
        return _normal_lanes(key, batch, n)
    return task.sample(key, batch, n).T


def _copy_scores(spec: ModelSpec, params, xt: jax.Array) -> jax.Array:
    """Scores ``(K, B)`` of K stacked weight sets on one shared batch ``xt`` ``(n, B)``, or
    each copy on its own batch, ``xt`` ``(n, K, B)``.

    The batch comes in the lanes layout (input ``b`` is the column ``xt[:, b]``), as the
    fused RNN kernel reads it; the target is ``task.target`` mapped over the columns, which
    is the task's own function on every input.
    """
    task = spec.task_obj
    n_copies = next(iter(params.values())).shape[0]
    batch = xt.shape[-1]
    own = xt.ndim == 3  # each copy on its own inputs
    r = _segments(n_copies, batch)
    if spec.arch == "rnn" and _uses_default_score(task) and n_copies * r > 1:
        if r == 1:  # (n, 1, B): broadcast over the copies inside the fused kernel; or (n, K, B)
            rows_x, rows = (xt if own else xt[:, None, :]), params
        else:  # row k*r + j is copy k on segment j of the batch
            rows_x = jnp.broadcast_to(xt.reshape(spec.n, n_copies if own else 1, r, batch // r),
                                      (spec.n, n_copies, r, batch // r))
            rows_x = rows_x.reshape(spec.n, n_copies * r, batch // r)
            rows = {k: jnp.repeat(v, r, axis=0) for k, v in params.items()}
        logits = _rnn_logits_lanes(rows, rows_x)  # (K * r, n_out, B / r)
        logits = logits.reshape(n_copies, r, logits.shape[1], batch // r)
        columns = xt.reshape(spec.n, -1)
        target = jax.vmap(task.target, in_axes=1)(columns).reshape(-1, r, batch // r)
        if task.output_kind == "positions":
            scores = (jnp.argmax(logits, axis=2) == target).astype(jnp.float32)
        else:
            scores = jnp.square(logits[:, :, 0, :] - target).astype(jnp.float32)
        return scores.reshape(n_copies, batch)
    if own:  # copy j's inputs are the rows of xt[:, j, :].T
        score = lambda p, x: task.score(forward(Model(spec, p), x), x)  # noqa: E731
        return jax.vmap(score, in_axes=(0, 1))(params, jnp.swapaxes(xt, 0, 2))
    x = xt.T
    return jax.vmap(lambda p: task.score(forward(Model(spec, p), x), x))(params)


def _batch_moments(spec: ModelSpec, params, key_data: jax.Array, indices: jax.Array, batch: int,
                   fast_normals: bool = True, streams: jax.Array | None = None):
    """Per-batch score sums and sums of squares, ``(len(indices), K)`` each.

    Batch ``i`` draws its inputs from ``fold_in(key, i)``, whatever device runs it; with
    ``streams`` (one id per copy), copy ``j``'s from ``fold_in(fold_in(key, streams[j]), i)``.
    The scan carries the next batch's inputs: drawn in one step and scored in the next, they
    are materialised between the two, rather than fused into (and recomputed by) every
    reduction that reads them, which cost up to 10x at one copy.
    """
    task = spec.task_obj
    key = jax.random.wrap_key_data(key_data)

    if streams is None:
        def inputs(i):
            return _lanes_inputs(task, jax.random.fold_in(key, i), batch, spec.n, fast_normals)
    else:
        copy_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, streams)

        def inputs(i):  # (n, K, B)
            draw = lambda k: _lanes_inputs(task, jax.random.fold_in(k, i), batch, spec.n, fast_normals)  # noqa: E731
            return jnp.moveaxis(jax.vmap(draw)(copy_keys), 0, 1)

    def one_batch(xt, i_next):
        s = _copy_scores(spec, params, xt)
        return inputs(i_next), (jnp.sum(s, axis=1), jnp.sum(s * s, axis=1))

    # The last step draws one batch more than it scores (the first one again): 1/len(indices)
    # of the input work, for one program per step.
    _, (s, s2) = jax.lax.scan(one_batch, inputs(indices[0]), jnp.roll(indices, -1))
    return s, s2


@functools.lru_cache(maxsize=None)
def _mesh(devices: tuple[jax.Device, ...]) -> Mesh:
    return Mesh(np.array(devices), (_AXIS,))


def _global(x, mesh: Mesh, spec: PartitionSpec) -> jax.Array:
    """A host value as a global array over ``mesh`` (valid input on one host or many)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda index: x[index])


@functools.lru_cache(maxsize=None)
def _sharded_moments(spec: ModelSpec, batch: int, devices: tuple[jax.Device, ...], own_streams: bool = False):
    """The jitted, batch-sharded :func:`_batch_moments` for one spec, batch and device set
    (``own_streams``: it takes one input stream id per copy)."""
    mesh = _mesh(devices)
    rep = PartitionSpec()
    fast_normals = _fast_normals_exact()

    def local(params, key_data, indices, streams):
        s, s2 = _batch_moments(spec, params, key_data, indices, batch, fast_normals,
                               streams if own_streams else None)
        # Every device (and so every host) gets every batch's sums, in batch order.
        return (jax.lax.all_gather(s, _AXIS, tiled=True), jax.lax.all_gather(s2, _AXIS, tiled=True))

    mapped = jax.shard_map(local, mesh=mesh, in_specs=(rep, rep, PartitionSpec(_AXIS), rep),
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
    streams: Sequence[int] | None = None,
) -> list[Evaluation]:
    """Expected score of each of K stacked weight sets (leading axis K) of one spec.

    Args:
        spec: the shared model spec.
        params: weights dict whose arrays carry a leading copy axis of size K.
        samples: inputs per copy (rounded up to whole batches) when sampling.
        seed: seed of the input stream; the result is the same for a seed on any number of
            devices or hosts.
        batch: inputs per scanned batch (the unit of the input stream); many batches run
            per jitted call, sharded over ``jax.devices()``.
        streams: ``None``: every copy sees the same inputs (common random numbers, which
            correlate the copies' errors). Otherwise one id in ``[0, 2^31)`` per copy: copy
            ``j`` draws its own inputs, batch ``i`` from ``fold_in(fold_in(key(seed),
            streams[j]), i)``, so copies with distinct ids have independent errors.

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
    run = _sharded_moments(spec, batch, devices, streams is not None)
    mesh, rep = _mesh(devices), PartitionSpec()
    params = {k: _global(np.asarray(v, np.float32), mesh, rep) for k, v in params.items()}
    key_data = _global(jax.random.key_data(jax.random.key(seed)), mesh, rep)
    stream_ids = _global(np.zeros(n_copies, np.uint32) if streams is None else _stream_ids(streams, n_copies),
                         mesh, rep)
    sums = np.empty((n_batches, n_copies))
    sums_sq = np.empty((n_batches, n_copies))
    for start in range(0, n_batches, per_call):
        indices = _global(np.arange(start, start + per_call, dtype=np.int32), mesh, PartitionSpec(_AXIS))
        s, s2 = run(params, key_data, indices, stream_ids)
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


def _stream_ids(streams: Sequence[int], n_copies: int) -> np.ndarray:
    ids = np.asarray(list(streams))
    if ids.shape != (n_copies,) or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any() or (ids >= 2**31).any():
        raise AlgzuError(f"streams must be {n_copies} integers in [0, 2^31), one per copy")
    return ids.astype(np.uint32)


def evaluate(model: Model, *, samples: int = 1 << 22, seed: int = 0, batch: int = EVALUATE_BATCH) -> Evaluation:
    """Expected score (accuracy, or MSE for scalar tasks) of one model."""
    stacked = {k: jnp.asarray(v)[None] for k, v in model.params.items()}
    return expected_scores(model.spec, stacked, samples=samples, seed=seed, batch=batch)[0]
