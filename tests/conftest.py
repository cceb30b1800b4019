"""Shared fixtures. JAX's implicit rank promotion raises in tests.

Dtype promotion stays JAX's standard: under ``jax_numpy_dtype_promotion="strict"`` the
shipped ``sliced_cones`` fails to trace (under ``enable_x64`` ``jnp.sum`` of int32 gives
int64, compared with int32), and casting there would change its metered FLOPs (64-bit work
costs x2), which no refactor may do.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture(scope="session")
def official():
    """ARC's three official checkpoints, loaded through the zoo."""
    from algzu.zoo import OFFICIAL, load_model

    return {i: load_model(i) for i in OFFICIAL}
