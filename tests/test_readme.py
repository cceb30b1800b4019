"""The README's example estimator is a complete file that registers and runs in the harness."""

import re
from pathlib import Path

import jax
import numpy as np

from algzu.estimator import get_estimator, include
from algzu.sandbox.runner import run_block
from algzu.zoo import load_model

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_estimator_registers_and_runs(tmp_path):
    block = re.search(r'```python\n("""``chance``.*?)```', README.read_text(), re.S)
    assert block, "the README lost its example estimator"
    path = tmp_path / "chance.py"
    path.write_text(block.group(1))
    assert include(path) == ["chance"]
    est = get_estimator("chance")
    assert est.mechanistic
    model = load_model("algzoo/2nd_argmax-d2-n2")
    stacked = {k: np.asarray(v)[None] for k, v in model.params.items()}
    [cell] = run_block(est, model.spec, stacked, 10**3, [jax.random.key(0)], [0])
    assert cell.error == "" and cell.estimate == 0.5 and cell.flops <= 10**3


def test_readme_names_the_test_command_that_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README.read_text() and "python -m pytest -q" in ci
