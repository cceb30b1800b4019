"""The fast ground-truth path computes exactly what the plain definition does, on any number
of devices. (Speed itself is measured by ``bench/``, never by a timed test.)"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.errors import AlgzuError
from algzu.evaluate import DEFAULT_BATCH, _copy_scores, _rnn_logits_lanes, expected_scores
from algzu.model import Model, ModelSpec, forward, init_params


def _noisy_copies(spec: ModelSpec, n_copies: int, seed: int = 0, std: float = 0.05) -> dict[str, np.ndarray]:
    base = init_params(spec, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return {k: (np.asarray(v)[None] + std * rng.standard_normal((n_copies, *v.shape))).astype(np.float32)
            for k, v in base.items()}


def _reference_scores(spec: ModelSpec, stacked, x) -> np.ndarray:
    """Scores by the plain definition: the task's score of the model's forward, copy by copy."""
    task = spec.task_obj
    n_copies = next(iter(stacked.values())).shape[0]
    return np.stack([np.asarray(task.score(forward(Model(spec, {k: v[c] for k, v in stacked.items()}), x), x))
                     for c in range(n_copies)])


@pytest.mark.parametrize("n_copies", [1, 3, 16, 20])
def test_lanes_rnn_scores_equal_the_plain_forward(official, n_copies):
    model = official["algzoo/example_2nd_argmax"]
    stacked = {k: np.repeat(np.asarray(v)[None], n_copies, 0) for k, v in model.params.items()}
    stacked = {k: v * (1 + 0.01 * np.arange(n_copies, dtype=np.float32).reshape((-1,) + (1,) * (v.ndim - 1)))
               for k, v in stacked.items()}
    x = jax.random.normal(jax.random.key(3), (DEFAULT_BATCH, model.spec.n), jnp.float32)
    fast = np.asarray(jax.jit(lambda p, x: _copy_scores(model.spec, p, x.T))(stacked, x))
    assert fast.shape == (n_copies, DEFAULT_BATCH)
    np.testing.assert_array_equal(fast, _reference_scores(model.spec, stacked, x))


def test_lanes_rnn_logits_match_rnn_forward_to_float32_rounding(official):
    model = official["algzoo/example_2nd_argmax"]
    x = jax.random.normal(jax.random.key(4), (256, model.spec.n), jnp.float32)
    rows = {k: jnp.asarray(v)[None] for k, v in model.params.items()}
    lanes = np.asarray(_rnn_logits_lanes(rows, x.T[:, None, :]))[0].T
    plain = np.asarray(forward(model, x))
    # Only the summation order differs: float32 rounding relative to the logit scale.
    np.testing.assert_allclose(lanes, plain, rtol=0, atol=1e-5 * np.abs(plain).max())


def test_scalar_task_lanes_scores_match_the_plain_definition():
    spec = ModelSpec("rnn", "median", d=4, n=5)
    stacked = _noisy_copies(spec, 2)
    x = jax.random.normal(jax.random.key(5), (DEFAULT_BATCH, spec.n), jnp.float32)
    fast = np.asarray(_copy_scores(spec, {k: jnp.asarray(v) for k, v in stacked.items()}, x.T))
    np.testing.assert_allclose(fast, _reference_scores(spec, stacked, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch,task,d,n", [("rnn", "2nd_argmax", 4, 6), ("mlp", "argmax", 4, 5)])
def test_expected_scores_is_the_mean_over_the_documented_input_stream(arch, task, d, n):
    # Batch i of seed s is task.sample(fold_in(key(s), i), batch, n); 5 batches, the last
    # one padding out 2100 samples to whole batches.
    spec = ModelSpec(arch, task, d=d, n=n)
    stacked = _noisy_copies(spec, 3, seed=1)
    batch, seed = 512, 7
    evs = expected_scores(spec, stacked, samples=2100, seed=seed, batch=batch)
    key = jax.random.key(seed)
    scores = np.concatenate([
        _reference_scores(spec, stacked, spec.task_obj.sample(jax.random.fold_in(key, i), batch, n))
        for i in range(5)], axis=1).astype(np.float64)
    assert [e.samples for e in evs] == [5 * batch] * 3
    np.testing.assert_allclose([e.value for e in evs], scores.mean(axis=1), rtol=0, atol=1e-12)
    se = scores.std(axis=1, ddof=1) / np.sqrt(scores.shape[1])
    np.testing.assert_allclose([e.stderr for e in evs], se, rtol=1e-9)


@pytest.mark.parametrize("arch,task,d,n,n_copies", [("rnn", "2nd_argmax", 4, 6, 3), ("rnn", "argmedian", 4, 5, 17),
                                                     ("mlp", "argmax", 4, 5, 2)])
def test_with_a_stream_per_copy_each_copy_is_the_mean_over_its_own_stream(arch, task, d, n, n_copies):
    # Copy j's batch i is task.sample(fold_in(fold_in(key(s), streams[j]), i), batch, n); 3
    # copies run as copies x segments rows, 17 as one row each, the MLP through vmap.
    spec = ModelSpec(arch, task, d=d, n=n)
    stacked = _noisy_copies(spec, n_copies, seed=4)
    batch, seed = 512, 9
    streams = [7, 123456789, 7] + list(range(40, 40 + n_copies - 3))
    streams = streams[:n_copies]
    evs = expected_scores(spec, stacked, samples=3 * batch, seed=seed, batch=batch, streams=streams)
    for j, stream in enumerate(streams):
        key = jax.random.fold_in(jax.random.key(seed), stream)
        one = {k: v[j : j + 1] for k, v in stacked.items()}
        inputs = [spec.task_obj.sample(jax.random.fold_in(key, i), batch, n) for i in range(3)]
        scores = np.concatenate([_reference_scores(spec, one, x) for x in inputs], axis=1).astype(np.float64)
        assert evs[j].value == pytest.approx(scores.mean(), abs=1e-12)
    with pytest.raises(AlgzuError, match="one per copy"):
        expected_scores(spec, stacked, samples=batch, seed=seed, streams=streams[:-1])


def test_result_does_not_depend_on_how_batches_are_grouped_into_calls(monkeypatch):
    import importlib

    evaluate_module = importlib.import_module("algzu.evaluate")
    spec = ModelSpec("rnn", "2nd_argmax", d=4, n=6)
    stacked = _noisy_copies(spec, 2, seed=2)
    one_call = expected_scores(spec, stacked, samples=7 * 256, seed=3, batch=256)
    monkeypatch.setattr(evaluate_module, "MAX_STEPS_PER_CALL", 2)  # 4 calls, the last padded
    many_calls = expected_scores(spec, stacked, samples=7 * 256, seed=3, batch=256)
    assert one_call == many_calls


_SHARDED_SCRIPT = textwrap.dedent("""
    import importlib, json, sys
    import jax
    import numpy as np
    from algzu.model import ModelSpec, init_params
    from algzu.zoo import load_model
    evaluate_module = importlib.import_module("algzu.evaluate")
    evaluate_module.MAX_STEPS_PER_CALL = int(sys.argv[1])
    model = load_model("algzoo/example_2nd_argmax")
    rng = np.random.default_rng(0)
    stacked = {k: (np.asarray(v)[None] * (1 + 0.01 * rng.standard_normal((3, *np.shape(v))))).astype(np.float32)
               for k, v in model.params.items()}
    # 7 batches of 512: on 2 devices one padding batch is computed and dropped.
    evs = evaluate_module.expected_scores(model.spec, stacked, samples=7 * 512 - 100, seed=11)
    # The harness's ground truth: each copy on an input stream of its own.
    own = evaluate_module.expected_scores(model.spec, stacked, samples=7 * 512 - 100, seed=11, streams=[5, 0, 9])
    # evaluate(): one copy in the lanes layout, 5 batches of 4096 (on 2 devices: one padding).
    ev = evaluate_module.evaluate(model, samples=5 * evaluate_module.EVALUATE_BATCH - 7, seed=2)
    # The sampling baseline's program (one device by contract): its estimate and cost must not move.
    from algzu import meter, planning
    n_mc = 3 * planning.CHUNK + 100
    mc = jax.jit(lambda m, k: planning.sample_mean(m, n_mc, k))(model, jax.random.key(5))
    flops = meter.count_flops(lambda m, k: planning.sample_mean(m, n_mc, k), model, jax.random.key(5))
    print(json.dumps({"devices": len(jax.devices()), "mc": float(mc), "mc_flops": flops,
                      "evs": [[e.value, e.stderr, e.samples] for e in evs], "eval": [ev.value, ev.stderr, ev.samples],
                      "own": [[e.value, e.stderr, e.samples] for e in own]}))
""")


def _run_on_devices(n_devices: int, max_steps: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT, str(max_steps)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ground_truth_sharded_over_two_devices_and_sampling_are_identical_to_one_device():
    one = _run_on_devices(1, max_steps=256)
    two = _run_on_devices(2, max_steps=256)
    two_many_calls = _run_on_devices(2, max_steps=1)
    assert (one["devices"], two["devices"]) == (1, 2)
    assert one["evs"] == two["evs"] == two_many_calls["evs"]  # bitwise, not approximately
    assert one["own"] == two["own"] == two_many_calls["own"] != one["evs"]
    assert one["eval"] == two["eval"] == two_many_calls["eval"]
    assert all(samples == 7 * 512 for _, _, samples in one["evs"])
    assert one["mc"] == two["mc"] and one["mc_flops"] == two["mc_flops"]


def test_inputs_drawn_in_the_lanes_layout_are_jax_random_normal_bit_for_bit():
    import importlib

    evaluate_module = importlib.import_module("algzu.evaluate")
    assert evaluate_module._fast_normals_exact()  # so expected_scores takes the fast path here
    key = jax.random.fold_in(jax.random.key(7), 3)
    for batch, n in [(512, 10), (4096, 10), (97, 3), (1, 2)]:
        want = np.asarray(jax.jit(lambda k: jax.random.normal(k, (batch, n), jnp.float32))(key)).T
        got = np.asarray(jax.jit(lambda k: evaluate_module._normal_lanes(k, batch, n))(key))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_targets_mapped_over_lanes_equal_each_tasks_target():
    from algzu.task import get_task, task_names

    for name in task_names():
        task = get_task(name)
        n = 5  # odd, as argmedian needs
        x = task.sample(jax.random.key(11), 2048, n)
        want = np.asarray(task.target(x))
        got = np.asarray(jax.jit(jax.vmap(task.target, in_axes=1))(x.T))
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want, err_msg=name)
