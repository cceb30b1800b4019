"""Shared fixtures. JAX runs strict in tests: rank promotion raises, dtype promotion is strict."""

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
