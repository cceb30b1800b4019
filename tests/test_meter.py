"""The FLOP meter: closed forms, loops and branches, refusals, and one cost model on two paths."""


import flopscope
import flopscope.numpy as fnp
import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
import pytest
from jax import lax

from algzu import meter
from algzu.errors import AlgzuError
from algzu.model import Model, ModelSpec, init_params, rnn_forward

B, D, N = 8, 16, 10  # batch, hidden size, sequence length (the challenge's d=16, n=10)
SPEC = ModelSpec("rnn", "2nd_argmax", D, N)


@pytest.fixture(autouse=True)
def strict_dtypes():
    """Strict dtype promotion (rank promotion already raises, see conftest)."""
    with jax.numpy_dtype_promotion("strict"):
        yield


@pytest.fixture(scope="module")
def params():
    return init_params(SPEC, jax.random.key(1))


def flopscope_count(fn, *args):
    """FLOPs flopscope charges for ``fn(*args)`` (a generous budget, so it always finishes)."""
    metered = meter.run_numpy(fn, args, 10**12)
    assert metered.error is None
    return metered.flops


def numpy_rnn_forward(params, x):
    """The RNN forward of :func:`algzu.model.rnn_forward`, written with flopscope.numpy."""
    w_ih = params["rnn.weight_ih_l0"][:, 0]
    w_hh, w_out = params["rnn.weight_hh_l0"], params["linear.weight"]
    h = fnp.maximum(x[:, 0:1] * w_ih, 0)
    for t in range(1, x.shape[1]):
        h = fnp.maximum(x[:, t : t + 1] * w_ih + h @ w_hh.T, 0)
    return h @ w_out.T


def test_rnn_forward_count_matches_closed_form(params):
    x = jnp.zeros((B, N), jnp.float32)
    n_out = SPEC.n_outputs
    # A (B, d) @ (d, d) matmul is B*d*(2d - 1): d multiplies and d - 1 adds per output
    # (flopscope's 2mkn - mn convention). Step 0 is x_0 * w_ih then relu (h_0 = 0, so no
    # matmul); steps 1..n-1 add the matmul and the add; the readout is (B, d) @ (d, n_out).
    step0 = B * D + B * D
    step = B * D + B * D * (2 * D - 1) + B * D + B * D  # mul, matmul, add, relu
    readout = B * n_out * (2 * D - 1)
    assert meter.count_flops(rnn_forward, params, x) == step0 + (N - 1) * step + readout


def test_rnn_forward_costs_the_same_in_flopscope(params):
    x = jnp.zeros((B, N), jnp.float32)
    model = meter.to_flopscope(Model(SPEC, params))
    x_np = fnp.asarray(np.zeros((B, N), np.float32))
    assert flopscope_count(numpy_rnn_forward, model.params, x_np) == meter.count_flops(rnn_forward, params, x)


# (name, jax function, flopscope function, argument shape): the same work on both paths.
SAME_WORK = [
    ("matmul", lambda a: a @ a.T, lambda a: a @ a.T, (6, 5)),
    ("batched dot", lambda a: jnp.einsum("bi,bi->b", a, a), lambda a: fnp.einsum("bi,bi->b", a, a), (6, 5)),
    ("add", lambda a: a + a, lambda a: a + a, (6, 5)),
    ("relu", lambda a: jnp.maximum(a, 0.0), lambda a: fnp.maximum(a, 0), (6, 5)),
    ("exp", jnp.exp, fnp.exp, (6, 5)),
    ("tanh", jnp.tanh, fnp.tanh, (6, 5)),
    ("sqrt", jnp.sqrt, fnp.sqrt, (6, 5)),
    ("power", lambda a: a**2, lambda a: a**2, (6, 5)),
    ("clip", lambda a: jnp.clip(a, -1.0, 1.0), lambda a: fnp.clip(a, -1.0, 1.0), (6, 5)),
    ("where", lambda a: jnp.where(a > 0, a, a), lambda a: fnp.where(a > 0, a, a), (6, 5)),
    ("sum", lambda a: jnp.sum(a, axis=1), lambda a: fnp.sum(a, axis=1), (6, 5)),
    ("mean", jnp.mean, fnp.mean, (6, 5)),
    ("max", lambda a: jnp.max(a, axis=0), lambda a: fnp.max(a, axis=0), (6, 5)),
    ("argmax", lambda a: jnp.argmax(a, axis=1), lambda a: fnp.argmax(a, axis=1), (6, 5)),
    ("cumsum", lambda a: jnp.cumsum(a, axis=1), lambda a: fnp.cumsum(a, axis=1), (6, 5)),
    ("sort", lambda a: jnp.sort(a, axis=1), lambda a: fnp.sort(a, axis=1), (6, 5)),
    ("argsort", lambda a: jnp.argsort(a, axis=1), lambda a: fnp.argsort(a, axis=1), (6, 5)),
]


@pytest.mark.parametrize("name, jax_fn, numpy_fn, shape", SAME_WORK, ids=[c[0] for c in SAME_WORK])
def test_jax_path_charges_what_flopscope_charges(name, jax_fn, numpy_fn, shape):
    a = np.eye(*shape, dtype=np.float32) + 1.0
    assert meter.count_flops(jax_fn, jnp.asarray(a)) == flopscope_count(numpy_fn, fnp.asarray(a))


def test_cholesky_costs_flopscopes_formula_plus_jaxs_triangular_mask():
    a = jnp.asarray(np.eye(5, dtype=np.float32) + 1.0)
    # lax zeroes the upper triangle with select_n; the mask it selects by (iota, add, ge)
    # depends on nothing of the input, so it is free.
    mask = 4 * 25
    count = meter.count_flops(lambda m: lax.linalg.cholesky(m, symmetrize_input=False), a)
    assert count == flopscope_count(fnp.linalg.cholesky, fnp.asarray(np.asarray(a))) + mask


def as_copy(fn, *args) -> int:
    """The jaxpr meter's count with every input, keys included, counted as the copy's: what a
    draw costs when its key depends on the weights."""
    return meter.jaxpr_flops(jax.make_jaxpr(fn)(*args))


def test_work_that_depends_on_no_weight_is_free(key):
    x = jnp.ones(5, jnp.float32)
    draw = lambda k: jnp.sort(jax.random.normal(k, (5,)))  # noqa: E731
    assert meter.count_flops(draw, key) == 0  # the key is independent of the copy
    assert meter.count_flops(lambda k: jnp.arange(5.0) * 2.0 + 1.0, key) == 0
    # A draw that meets the weights is charged from there on: the product, not the draw.
    assert meter.count_flops(lambda w, k: w * draw(k), x, key) == 5
    assert as_copy(lambda w, k: w * draw(k), x, key) == 5 + 5 * 16 + 4 * 5 * 3  # product, normal, sort
    # A key derived from the weights makes the draw theirs.
    bits = lambda w, k: jax.random.bits(jax.random.fold_in(k, w[0].astype(jnp.int32)), (5,))  # noqa: E731
    assert meter.count_flops(bits, x, key) == 2 + 5


def test_jax_random_samplers_cost_what_flopscope_samplers_cost(key):
    shape, rng = (4, 10), fnp.random.default_rng(0)
    # Generator.uniform has no dtype argument: its float64 draws bill at flopscope's 64-bit
    # rate of 2, so compare per float32 draw.
    lo, hi = -2.0, 3.0
    pairs = [
        (lambda k: jax.random.normal(k, shape), lambda: rng.standard_normal(shape, dtype=np.float32), 1),
        (lambda k: jax.random.uniform(k, shape, minval=lo, maxval=hi), lambda: rng.uniform(lo, hi, shape), 2),
        (lambda k: jax.random.randint(k, shape, 0, 10), lambda: rng.integers(0, 10, shape, dtype="int32"), 1),
    ]
    for jax_fn, numpy_fn, rate in pairs:
        assert as_copy(jax_fn, key) * rate == flopscope_count(numpy_fn)


def test_random_keys_cost_one_flop_per_generated_word(key):
    # a threefry key is two 32-bit words
    assert as_copy(lambda k: jax.random.split(k, 3), key) == 3 * 2
    assert as_copy(lambda k: jax.random.fold_in(k, 7), key) == 2
    assert as_copy(lambda k: jax.random.bits(k, (5,)), key) == 5


def test_sampler_lookalike_is_counted_as_traced(key):
    def _normal(k):  # noqa: PLW0621 - named like jax.random's private sampler on purpose
        return jnp.exp(jax.random.uniform(k, (4, 10)))

    # not the body jax.random traces, so no sampler price: uniform (3/sample) + exp (16)
    assert as_copy(jax.jit(_normal), key) == 40 * 3 + 40 * 16


def test_scan_charges_body_times_length():
    def body(carry, _):
        return jnp.sin(carry) * 2.0, None  # 16 + 1 per element

    x = jnp.ones(3, jnp.float32)
    assert meter.count_flops(lambda c: lax.scan(body, c, None, length=7)[0], x) == 7 * 3 * 17


def test_fori_loop_with_static_bounds_charges_every_trip():
    x = jnp.ones(3, jnp.float32)
    body = lambda i, c: c * 2.0  # noqa: E731
    # Python-int bounds lower to a scan: 5 trips of mul 3. The counter depends on no weight:
    # its add is free.
    assert meter.count_flops(lambda c: lax.fori_loop(0, 5, body, c), x) == 5 * 3
    # Array-constant bounds lower to a while loop: the counter's test is free too.
    count = meter.count_flops(lambda c: lax.fori_loop(jnp.int32(1), jnp.int32(6), body, c), x)
    assert count == 5 * 3
    # A counter the body mixes with the weights is charged from there on.
    mixed = lambda i, c: c * i.astype(jnp.float32)  # noqa: E731
    assert meter.count_flops(lambda c: lax.fori_loop(0, 5, mixed, c), x) == 5 * 3


def test_data_dependent_while_loop_is_rejected():
    x = jnp.ones(3, jnp.float32)
    with pytest.raises(AlgzuError, match="data-dependent while loop"):
        meter.count_flops(lambda c: lax.while_loop(lambda c: jnp.sum(c) < 10.0, lambda c: c * 2.0, c), x)
    with pytest.raises(AlgzuError, match="data-dependent while loop"):
        meter.count_flops(lambda c, n: lax.fori_loop(0, n, lambda i, c: c * 2.0, c), x, jnp.int32(5))


def test_cond_charges_the_most_expensive_branch():
    x = jnp.ones(5, jnp.float32)
    cheap, dear = (lambda c: c * 2.0), jnp.exp
    predicate = 4 + 1  # sum of 5 elements, one comparison
    for branches in ((cheap, dear), (dear, cheap)):
        count = meter.count_flops(lambda c, b=branches: lax.cond(jnp.sum(c) > 0, *b, c), x)
        assert count == predicate + 5 * 16
    switch = meter.count_flops(lambda c: lax.switch(jnp.int32(0), [cheap, dear, cheap], c), x)
    assert switch == 5 * 16  # the dearest branch; the index depends on no weight: its clamp is free
    # A branch the weights pick is charged whole, even its work on constants.
    table = lambda c: c * 0.0 + jnp.exp(jnp.arange(5.0))  # noqa: E731
    count = meter.count_flops(lambda c: lax.cond(jnp.sum(c) > 0, cheap, table, c), x)
    assert count == predicate + 5 + 5 * 16 + 5


def test_unknown_primitive_is_rejected_by_name():
    mystery = jax.extend.core.Primitive("mystery_op")
    mystery.def_abstract_eval(lambda a: a)
    with pytest.raises(AlgzuError, match="mystery_op"):
        meter.count_flops(mystery.bind, jnp.ones(3, jnp.float32))


def test_host_callback_is_rejected():
    x = jnp.ones(3, jnp.float32)
    with pytest.raises(AlgzuError, match="pure_callback"):
        meter.count_flops(lambda a: jax.pure_callback(np.sin, jax.ShapeDtypeStruct(a.shape, a.dtype), a), x)


def test_64_bit_work_costs_double():
    with jax.enable_x64(True):
        assert meter.count_flops(lambda a: a + a, jnp.ones(4, jnp.float64)) == 8
        assert meter.count_flops(lambda a: a + a, jnp.ones(4, jnp.float32)) == 4


COMMON_OPS = {
    "argsort": lambda x, k: jnp.argsort(x, axis=1),
    "softmax": lambda x, k: jax.nn.softmax(x),
    "log_softmax": lambda x, k: jax.nn.log_softmax(x),
    "logsumexp": lambda x, k: jax.nn.logsumexp(x, axis=1),
    "sigmoid": lambda x, k: jax.nn.sigmoid(x),
    "ndtr": lambda x, k: jsp.special.ndtr(x),
    "erf": lambda x, k: jsp.special.erf(x),
    "ndtri": lambda x, k: jsp.special.ndtri(jax.nn.sigmoid(x)),
    "norm.logpdf": lambda x, k: jsp.stats.norm.logpdf(x),
    "var": lambda x, k: jnp.var(x, axis=0),
    "median": lambda x, k: jnp.median(x, axis=1),
    "top_k": lambda x, k: lax.top_k(x, 3),
    "take_along_axis": lambda x, k: jnp.take_along_axis(x, jnp.argsort(x, axis=1), axis=1),
    "at_add": lambda x, k: x.at[0].add(1.0),
    "searchsorted": lambda x, k: jnp.searchsorted(jnp.sort(x[0]), x[1]),
    "normal": lambda x, k: jax.random.normal(k, x.shape),
    "uniform": lambda x, k: jax.random.uniform(k, x.shape),
    "randint": lambda x, k: jax.random.randint(k, x.shape, 0, 4),
    "split_fold_in": lambda x, k: jax.random.fold_in(jax.random.split(k)[0], 3),
    "permutation": lambda x, k: jax.random.permutation(k, 10),
    "bernoulli": lambda x, k: jax.random.bernoulli(k, 0.3, x.shape),
    "vmapped_normal": lambda x, k: jax.vmap(lambda kk: jax.random.normal(kk, (4,)))(jax.random.split(k, 3)),
    "grad": lambda x, k: jax.grad(lambda a: jnp.sum(jnp.tanh(a)))(x),
    "checkpoint": lambda x, k: jax.checkpoint(jnp.sin)(x),
    "solve": lambda x, k: jnp.linalg.solve(x[:4, :4] + 4 * jnp.eye(4), x[:4, 0]),
    "inv": lambda x, k: jnp.linalg.inv(x[:4, :4] + 4 * jnp.eye(4)),
    "slogdet": lambda x, k: jnp.linalg.slogdet(x[:4, :4] + 4 * jnp.eye(4)),
    "eigh": lambda x, k: jnp.linalg.eigh(x[:4, :4] @ x[:4, :4].T),
    "svd": lambda x, k: jnp.linalg.svd(x),
    "qr": lambda x, k: jnp.linalg.qr(x),
    "norm": lambda x, k: jnp.linalg.norm(x),
    "debug_print": lambda x, k: jax.debug.print("{}", x[0, 0]),
}


@pytest.mark.parametrize("op", sorted(COMMON_OPS))
def test_common_estimator_ops_are_metered(op, key):
    count = as_copy(COMMON_OPS[op], jnp.ones((4, 10), jnp.float32), key)
    assert isinstance(count, int)
    assert count >= (0 if op == "debug_print" else 1)


def test_flopscope_over_budget_is_reported_as_over_budget():
    def estimate(x):
        return fnp.mean(fnp.exp(x))  # 16 per exp, then 255 adds and a divide

    w = fnp.asarray(np.ones((16, 16), np.float32))
    refused = meter.run_numpy(estimate, (w,), 1000)
    assert (refused.error, refused.value) == ("over_budget", None)
    assert refused.flops > 1000
    ran = meter.run_numpy(estimate, (w,), 16 * 256 + 256)
    assert ran.error is None and ran.flops == 16 * 256 + 256 and isinstance(ran.value, float)


def test_to_flopscope_gives_read_only_copies_that_flopscope_counts(params):
    original = Model(SPEC, params).numpy()
    model = meter.to_flopscope(original)
    w = model.params["rnn.weight_hh_l0"]
    assert isinstance(w, flopscope.FlopscopeArray) and w.dtype == np.float32 and model.spec == SPEC
    base = np.asarray(w)
    assert not base.flags.writeable
    assert not np.shares_memory(base, original.params["rnn.weight_hh_l0"])
    assert flopscope_count(lambda: w @ w) == D * D * (2 * D - 1)


def test_sampling_baseline_costs_the_same_per_sample_on_both_paths(params, key):
    """Draw B inputs, run the RNN, score 2nd-argmax correctness: once in JAX, once in fnp."""
    task = SPEC.task_obj

    def jax_sampling(p, k):
        x = task.sample(k, B, N)
        return jnp.mean(task.score(rnn_forward(p, x), x))

    def last_argmax(x):
        return N - 1 - fnp.argmax(x[:, ::-1], axis=1)

    def numpy_sampling(p, rng):
        x = rng.standard_normal((B, N), dtype=np.float32)
        out = numpy_rnn_forward(p, x)
        # tasks/second_argmax.py's target: two argmax passes, the largest masked out.
        rest = fnp.where(fnp.arange(N) == last_argmax(x)[:, None], -np.inf, x)
        correct = fnp.argmax(out, axis=1) == last_argmax(rest)
        return fnp.mean(correct, dtype=np.float32)

    jax_flops = as_copy(jax_sampling, params, key)
    model = meter.to_flopscope(Model(SPEC, params))
    numpy_flops = flopscope_count(numpy_sampling, model.params, fnp.random.default_rng(0))
    # The only differences are in index bookkeeping: numpy's indices are int64, and flopscope
    # bills a 64-bit compare or subtract 2 FLOPs against JAX's 1 for int32, and arange its
    # length where the JAX meter counts iota free: 18 FLOPs in ~5,500 per sample.
    assert numpy_flops == jax_flops + 18 * B
    per_sample = jax_flops / B
    normals = 16 * N
    forward = 2 * D + (N - 1) * (3 * D + D * (2 * D - 1)) + N * (2 * D - 1)
    # Two last-argmaxes (argmax, n - 1 - i), the mask's compare and its select (4 each).
    target = 2 * ((N - 1) + 1) + N + 4 * N
    assert per_sample == normals + forward + target + (N - 1) + 1 + 1  # argmax, ==, mean
    # Charged, the inputs and their targets depend on the key alone: they are free (flopscope
    # cannot tell, and numpy estimators never count for a verdict).
    assert meter.count_flops(jax_sampling, params, key) == jax_flops - B * (normals + target)
