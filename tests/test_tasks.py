"""The task registry and each task's target on hand-checked inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algzu.errors import AlgzuError
from algzu.task import Task, get_task, register_task, task_names


def test_registry_lists_every_builtin_task():
    assert {"2nd_argmax", "argmax", "argmedian", "median", "argoutlier", "longest_cycle"} <= set(task_names())


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(AlgzuError, match="valid tasks: .*2nd_argmax"):
        get_task("3rd_argmax")


def test_duplicate_task_name_is_refused():
    class Clash(Task):
        name = "argmax"
        input_kind = "gaussian"
        output_kind = "positions"

        def target(self, x):
            return x[:, 0]

    with pytest.raises(AlgzuError, match="duplicate task name 'argmax'"):
        register_task(Clash)


X = jnp.array([[0.3, -1.0, 2.0, 0.9, -0.2], [5.0, 4.0, -3.0, 0.0, 1.0]], jnp.float32)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("2nd_argmax", [3, 1]),
        ("argmax", [2, 0]),
        ("argmedian", [0, 4]),
        ("argoutlier", [2, 2]),  # means 0.4 and 1.4; |2-0.4| = 1.6 beats |-1-0.4| = 1.4; |-3-1.4| = 4.4
    ],
)
def test_position_targets(name, expected):
    np.testing.assert_array_equal(get_task(name).target(X), expected)


def test_median_target_is_middle_value_and_mean_of_middle_two_for_even_n():
    np.testing.assert_allclose(get_task("median").target(X), [0.3, 1.0])
    np.testing.assert_allclose(get_task("median").target(jnp.array([[1.0, 3.0]])), [2.0])


@pytest.mark.parametrize("n", [1, 3, 5, 7, 11])
def test_argmedian_target_is_the_stable_argsorts_middle_ties_included(n):
    rng = np.random.default_rng(n)
    for x in (rng.standard_normal((4000, n)), rng.integers(-2, 3, (4000, n)).astype(float)):  # the second, ties
        x = jnp.asarray(x, jnp.float32)
        want = jnp.argsort(x, axis=-1, stable=True)[..., n // 2]
        np.testing.assert_array_equal(get_task("argmedian").target(x), want)


def test_argmedian_refuses_even_n():
    with pytest.raises(AlgzuError, match="odd"):
        get_task("argmedian").check_n(4)


@pytest.mark.parametrize(
    "f, longest",
    [
        ([0, 1, 2], 1),  # identity: three fixed points
        ([1, 2, 0], 3),  # one 3-cycle
        ([1, 0, 0], 2),  # 0<->1, 2 -> 0
        ([0, 0, 0], 1),
        ([1, 2, 3, 0], 4),
        ([1, 0, 3, 2], 2),
        ([2, 2, 1, 1], 2),  # 1<->2
    ],
)
def test_longest_cycle_target(f, longest):
    assert int(get_task("longest_cycle").target(jnp.array([f], jnp.int32))[0]) == longest - 1


def test_longest_cycle_enumerates_every_function():
    task = get_task("longest_cycle")
    x = task.all_inputs(3)
    assert x.shape == (27, 3)
    counts = np.bincount(np.asarray(task.target(jnp.asarray(x))), minlength=3)
    # Of the 27 maps on 3 points: 2 are 3-cycles; 3*3 - ... checked by brute force below.
    brute = np.zeros(3, int)
    for row in x:
        best = 0
        for i in range(3):
            seen, j = [], i
            while j not in seen:
                seen.append(j)
                j = row[j]
            best = max(best, len(seen) - seen.index(j))
        brute[best - 1] += 1
    np.testing.assert_array_equal(counts, brute)
    assert counts[2] == 2


def test_gaussian_inputs_are_standard_normal(key):
    x = get_task("2nd_argmax").sample(key, 1 << 16, 4)
    assert x.dtype == jnp.float32 and x.shape == (1 << 16, 4)
    # 4 standard errors: se(mean) = 1/sqrt(N), se(var) ~ sqrt(2/N).
    n = x.size
    assert abs(float(x.mean())) < 4 / np.sqrt(n)
    assert abs(float(x.var()) - 1) < 4 * np.sqrt(2 / n)


def test_2nd_argmax_target_is_argsort_second_from_last_ties_included():
    # The two-pass target must equal the definition, argsort(x)[:, -2] (stable), everywhere:
    # Gaussian rows and rows drawn from 3 values, where ties are the rule, not the exception.
    key_gauss, key_ties = jax.random.split(jax.random.key(8))
    for x in (jax.random.normal(key_gauss, (1 << 14, 10)),
              jax.random.randint(key_ties, (1 << 14, 5), 0, 3).astype(jnp.float32)):
        np.testing.assert_array_equal(get_task("2nd_argmax").target(x), jnp.argsort(x, axis=-1)[:, -2])
