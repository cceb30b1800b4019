"""One conformance suite over every registered estimator: a new estimator is tested for free.

For every estimator and every small model kind it declares: the answer is a finite number
in range, the same key gives the same answer, the metered compute stays within budget,
the harness runs it without error at a budget it can afford, and a block's program is
compiled once, not again for each copy. And every file in
``estimators/`` imports only the public API an estimator author is given.
"""

import ast
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from algzu import hlo_meter
from algzu.estimator import estimator_names, get_estimator
from algzu.model import ModelSpec, init_params
from algzu.sandbox import program
from algzu.sandbox.runner import iter_program, run_block

BUDGET = 10**6
# Small models of every kind an estimator may declare.
KINDS = [
    ModelSpec("rnn", "2nd_argmax", 4, 3),
    ModelSpec("rnn", "2nd_argmax", 2, 2),
    ModelSpec("rnn", "argmax", 4, 3),
    ModelSpec("rnn", "argmedian", 4, 3),
    ModelSpec("rnn", "median", 2, 3),
    ModelSpec("rnn", "2nd_argmax", 8, 5),
    ModelSpec("rnn", "2nd_argmax", 16, 10),  # the M16,10 kind, the only one top3_cones declares
    ModelSpec("mlp", "2nd_argmax", 8, 3),
    ModelSpec("transformer", "longest_cycle", 2, 3, n_layers=1),
]


# Estimators that declare no model at all (``supports`` is always False), run here on the
# kind their method applies to, so they stay tested; each with the reason it declares none.
DECLARES_NONE = {
    "cumulants": (ModelSpec("mlp", "2nd_argmax", 8, 3), "worse than a constant on every MLP measured"),
}


def _cases():
    for name in estimator_names():
        est = get_estimator(name)
        specs = [s for s in KINDS if est.supports(s)]
        if not specs and name in DECLARES_NONE:
            specs = [DECLARES_NONE[name][0]]
        if not specs:  # a failing case, not a silent skip: add a model kind it supports to KINDS
            yield pytest.param(name, None, id=f"{name}-matches-no-conformance-model")
        for spec in specs:
            yield pytest.param(name, spec, id=f"{name}-{spec.arch}-{spec.task}-d{spec.d}-n{spec.n}")


def _stacked(spec: ModelSpec, copies: int = 2) -> dict[str, np.ndarray]:
    params = [init_params(spec, jax.random.key(k)) for k in range(copies)]
    return {n: np.stack([np.asarray(p[n]) for p in params]) for n in params[0]}


_COMPILES: list[str] = []  # XLA backend compiles since the last clear()


def _count_compile(event: str, _seconds: float, **_) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(event)


jax.monitoring.register_event_duration_secs_listener(_count_compile)


@pytest.mark.parametrize("name, spec", list(_cases()))
def test_estimator_conforms(name, spec):
    assert spec is not None, f"{name} supports none of the conformance models {KINDS}"
    est = get_estimator(name)
    stacked = _stacked(spec)
    # Copy 0 twice with the same key: same answer. Then copy 1.
    keys, copies = [jax.random.key(7), jax.random.key(7), jax.random.key(8)], [0, 0, 1]
    if est.backend == "jax":  # run_block's two halves, to count the compiles of the second
        blob = program.trace(est.estimate, spec, BUDGET)
        _COMPILES.clear()
        results = list(iter_program(blob, spec, stacked, BUDGET, [program.key_data(k) for k in keys], copies))
        assert len(_COMPILES) == 1, f"{name}: {len(_COMPILES)} compiles for one block; calls after the first recompile"
    else:
        results = run_block(est, spec, stacked, BUDGET, keys, copies)
    for r in results:
        assert r.error == "", f"{name} failed: {r.error} {r.message}"
        assert np.isfinite(r.estimate)
        if spec.task_obj.metric == "accuracy":
            assert 0.0 <= r.estimate <= 1.0
        else:
            assert r.estimate >= 0.0
        assert r.flops is not None and 0 <= r.flops <= BUDGET
    assert results[0].estimate == results[1].estimate, "same key must give the same answer"


def test_estimators_declaring_no_model_still_declare_none():
    for name in DECLARES_NONE:
        est = get_estimator(name)
        assert not any(est.supports(s) for s in KINDS), f"{name} now supports a kind: drop it from DECLARES_NONE"


def _without_locations(module_text: str) -> str:
    """StableHLO text without debug locations (they name the line that called the trace)."""
    return "\n".join(line for line in re.sub(r" loc\(#loc\d*\)", "", module_text).splitlines()
                     if not line.startswith("#loc"))


@pytest.mark.parametrize("name, spec", [c for c in _cases() if c.values[1] is not None])
def test_a_second_trace_gives_the_same_program(name, spec):
    """No state between calls: the harness traces once per block and compiles that program
    once for every copy, so tracing again at the same spec and budget must give the same
    program (and costs little: planning is cached)."""
    est = get_estimator(name)
    first, second = (hlo_meter.deserialize(program.trace(est.estimate, spec, BUDGET)).mlir_module() for _ in range(2))
    assert _without_locations(first) == _without_locations(second)


def test_every_estimator_file_says_what_it_implements():
    for path in sorted(ESTIMATORS_DIR.glob("*.py")):
        if path.name != "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and len(doc.split()) >= 5, f"{path.name} has no module docstring"


# What an estimator may import from algzu: the contract, the model, the task and the
# planning toolkit (the README's "Submit an estimator"); other estimators' files too.
ESTIMATOR_API = frozenset({"algzu.estimator", "algzu.model", "algzu.task", "algzu.planning"})
ESTIMATORS_DIR = Path(__file__).resolve().parent.parent / "estimators"


def _forbidden_imports(source: str) -> list[str]:
    """The algzu modules ``source`` imports that are neither public API nor an estimator."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from algzu import meter`` imports the module algzu.meter.
            modules = [f"{node.module}.{a.name}" for a in node.names] if node.module == "algzu" else [node.module]
        else:
            continue
        for module in modules:
            if module.split(".")[0] != "algzu" or module in ESTIMATOR_API:
                continue
            if module == "algzu.estimators" or module.startswith("algzu.estimators."):
                continue
            found.append(module)
    return found


def test_the_import_check_catches_harness_internals():
    source = "import algzu\nfrom algzu import meter, planning\nfrom algzu.baseline import x\nimport algzu.sandbox.runner as r\n"
    assert _forbidden_imports(source) == ["algzu", "algzu.meter", "algzu.baseline", "algzu.sandbox.runner"]
    assert _forbidden_imports("from algzu.estimators import moments\nfrom algzu.task import Task\n") == []


def test_shipped_estimators_import_only_the_public_api():
    files = sorted(ESTIMATORS_DIR.glob("*.py"))
    assert len(files) > 5
    bad = {f.name: found for f in files if (found := _forbidden_imports(f.read_text()))}
    assert not bad, f"estimators importing harness internals (allowed: {sorted(ESTIMATOR_API)}): {bad}"
