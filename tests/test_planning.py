"""The estimator author's toolkit (algzu.planning) and the task facts it leans on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu import meter, planning
from algzu.model import Model, ModelSpec, init_params
from algzu.task import get_task, task_names


def test_largest_count_within_finds_the_last_count_that_fits():
    def cost(n):  # a fixed overhead plus a linear part, as a metered sampling program has
        return 100 + 7 * n

    assert planning.largest_count_within(cost, 7.0, 1000) == 128  # 100 + 7*128 = 996, 129 costs 1003
    assert planning.largest_count_within(cost, 7.0, 996) == 128
    assert planning.largest_count_within(cost, 7.0, 106) == 0
    assert planning.largest_count_within(cost, 7.0, 107) == 1


def test_finest_within_stops_at_the_first_step_over_budget():
    costs = {"a": 10, "b": 20, "c": 50, "d": 30}
    assert planning.finest_within("abcd", costs.__getitem__, 25) == "b"
    assert planning.finest_within("abcd", costs.__getitem__, 60) == "d"
    # "d" would fit 30, but the ladder stops at "c": cheapest first, no step skipped.
    assert planning.finest_within("abcd", costs.__getitem__, 40) == "b"
    assert planning.finest_within("abcd", costs.__getitem__, 9) is None


@pytest.mark.parametrize("n_items, chunk", [(10, 4), (12, 4), (3, 4)])
def test_chunked_sum_adds_every_item_once_with_a_short_last_chunk(n_items, chunk):
    seen = []

    def chunk_sum(i, size):
        seen.append((type(i) is int, size))
        start = i * chunk
        return jnp.sum(jnp.arange(size, dtype=jnp.float32) + jnp.asarray(start, jnp.float32))

    total = planning.chunked_sum(chunk_sum, n_items, chunk)
    assert float(total) == sum(range(n_items))
    rest = n_items % min(chunk, n_items)
    assert ((True, rest) in seen) == bool(rest)  # the last chunk gets a Python int


def test_shape_only_arguments_meter_as_concrete_ones():
    spec = ModelSpec("rnn", "2nd_argmax", 4, 3)
    concrete = Model(spec, init_params(spec, jax.random.key(0)))
    fn = lambda m, k: planning.sample_mean(m, 5000, k)  # noqa: E731
    abstract = planning.metered_flops(fn, planning.abstract_model(spec), planning.abstract_key())
    assert abstract == meter.count_flops(fn, concrete, jax.random.key(0)) == planning.sampling_flops(spec, 5000)


def test_chance_rate_is_one_over_the_outputs_for_accuracy_tasks():
    for name in task_names():
        task = get_task(name)
        n = 3
        expected = 1.0 / n if task.metric == "accuracy" else 1.0
        assert task.chance_rate(n) == expected, name
    spec = ModelSpec("rnn", "2nd_argmax", 4, 3)
    assert float(planning.chance_estimate(spec)) == np.float32(1 / 3)


@pytest.mark.parametrize("name", ["argmax", "2nd_argmax", "argmedian"])
def test_target_rank_is_the_rank_of_the_target_input(name):
    task = get_task(name)
    for n in (3, 5):
        x = task.sample(jax.random.key(n), 256, n)
        target = np.asarray(task.target(x))
        rank = np.argsort(-np.asarray(x), axis=1).argsort(axis=1)  # 0 = largest
        assert (rank[np.arange(len(x)), target] == task.target_rank(n)).all()


def test_tasks_without_an_order_target_have_no_rank():
    assert get_task("median").target_rank(3) is None
    assert get_task("longest_cycle").target_rank(3) is None
