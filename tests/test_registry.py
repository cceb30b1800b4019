"""One registry for tasks and estimators: read-only views, one error type, frozen dataclasses."""

import dataclasses

import jax.numpy as jnp
import pytest

from algzu.challenge import CHALLENGES
from algzu.errors import AlgzuError
from algzu.estimator import ESTIMATORS, Estimator, get_estimator, register_estimator
from algzu.registry import Registry
from algzu.suites import SUITES
from algzu.task import TASKS, register_task


class _Plain(Estimator):
    name = "registry_test_plain"
    mechanistic = True

    def estimate(self, model, budget_flops, key):
        return jnp.float32(0.5)


def test_unknown_estimator_is_an_algzu_error_naming_the_valid_ones():
    with pytest.raises(AlgzuError, match="unknown estimator 'nope'; valid estimators: .*sampling"):
        get_estimator("nope")
    assert "nope" not in ESTIMATORS and ESTIMATORS.get("nope") is None
    assert "sampling" in ESTIMATORS and list(ESTIMATORS) == sorted(ESTIMATORS)


def test_registering_a_non_task_is_an_algzu_error():
    with pytest.raises(AlgzuError, match="expects a Task subclass"):
        register_task(int)


@pytest.mark.parametrize("decorate", [
    lambda cls: cls,  # not a dataclass
    dataclasses.dataclass,  # a dataclass, but mutable
])
def test_an_estimator_that_is_not_a_frozen_dataclass_is_refused(decorate):
    cls = decorate(type("Loose", (_Plain,), {"__module__": __name__}))
    with ESTIMATORS.restoring(), pytest.raises(AlgzuError, match="frozen dataclass"):
        register_estimator(cls)


def test_a_frozen_dataclass_registers_and_is_undone_after_the_block():
    cls = dataclasses.dataclass(frozen=True)(type("Frozen", (_Plain,), {"__module__": __name__}))
    with ESTIMATORS.restoring():
        register_estimator(cls)
        assert get_estimator("registry_test_plain").estimate(None, 1, None) == 0.5
    assert "registry_test_plain" not in ESTIMATORS


def test_a_name_taken_by_another_estimator_class_is_refused():
    cls = dataclasses.dataclass(frozen=True)(type("Impostor", (_Plain,), {"__module__": __name__, "name": "sampling"}))
    with ESTIMATORS.restoring(), pytest.raises(AlgzuError, match="duplicate estimator name 'sampling'"):
        register_estimator(cls)
    assert ESTIMATORS["sampling"].__name__ == "Sampling"


def test_registries_and_presets_are_read_only():
    for mapping in (TASKS, ESTIMATORS, SUITES, CHALLENGES):
        with pytest.raises(TypeError):
            mapping["x"] = None  # type: ignore[index]
    assert not hasattr(TASKS, "__setitem__") and not hasattr(TASKS, "__delitem__")


def test_discovery_runs_once_on_the_first_read():
    calls = []
    reg = Registry("widget", lambda: (calls.append(1), reg.add("a", 1, int)))
    assert calls == []
    assert reg["a"] == 1 and reg.names() == ["a"] and len(reg) == 1
    assert calls == [1]
    with pytest.raises(AlgzuError, match="unknown widget 'b'; valid widgets: a"):
        reg["b"]
