"""Closed-book suites: fresh base models drawn from a secret, or read from a private folder.

Cheap versions of what ``algzu leaderboard --heldout --secret-file F`` does: bases trained
with a tiny budget (the recipe is patched), the same secret gives the same base and
another secret another one, nothing written into the results names the secret, the seeds
or the bases' files, and every row and report says closed-book.
"""

import json
import shutil

import numpy as np
import pytest

import algzu.heldout as heldout
from algzu.errors import AlgzuError
from algzu.reports.suite import leaderboard_markdown
from algzu.run import run_suite
from algzu.suites import ModelCase, Suite
from algzu.zoo import ZOO_DIR, load_model

SUITE = Suite("tiny-open", (ModelCase("2nd_argmax-d2-n2", 0.5),), n_copies=2, budgets=(10**4,),
              gt_samples=2**12, seed=3, description="tiny")


@pytest.fixture
def tiny_recipe(monkeypatch):
    monkeypatch.setattr(heldout, "family_recipe", lambda spec: (1 << 13, 1))


def test_fresh_bases_are_fixed_by_the_secret_and_differ_between_secrets(tiny_recipe, tmp_path):
    spec = load_model("2nd_argmax-d2-n2").spec
    a = heldout.fresh_base(spec, "secret one", cache_dir=tmp_path)
    again = heldout.fresh_base(spec, "secret one", cache_dir=tmp_path)  # from the cache
    b = heldout.fresh_base(spec, "secret two", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    for name in a.params:
        assert np.array_equal(a.params[name], again.params[name])
    assert any(not np.array_equal(a.params[name], b.params[name]) for name in a.params)
    public = load_model("2nd_argmax-d2-n2")
    assert any(not np.array_equal(a.params[name], public.params[name]) for name in a.params)
    assert not any("secret" in p.name for p in tmp_path.iterdir())


def test_closed_book_twin_keeps_the_families_and_says_so(tiny_recipe, tmp_path):
    twin, bases = heldout.closed_book(SUITE, secret="s", cache_dir=tmp_path)
    assert twin.closed_book and not SUITE.closed_book
    assert [c.model for c in twin.cases] == ["heldout/2nd_argmax-d2-n2"]
    assert [c.noise_std for c in twin.cases] == [0.5]
    assert (twin.n_copies, twin.budgets, twin.seed) == (SUITE.n_copies, SUITE.budgets, SUITE.seed)
    result = run_suite(twin, cache_dir=tmp_path / "cache", estimators=["sampling"], bases=bases)
    assert result.cells["closed_book"].all()
    assert set(result.cells["model"]) == {"heldout/2nd_argmax-d2-n2"}
    assert "**Closed-book**" in leaderboard_markdown(twin, result)
    assert "**Open-book**" in leaderboard_markdown(SUITE, run_suite(SUITE, cache_dir=tmp_path / "cache",
                                                                    estimators=["sampling"]))


def test_private_zoo_dir_supplies_the_bases(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(ZOO_DIR / f"2nd_argmax-d2-n2{suffix}", tmp_path / f"2nd_argmax-d2-n2{suffix}")
    twin, bases = heldout.closed_book(SUITE, zoo_dir=tmp_path)
    model = bases["heldout/2nd_argmax-d2-n2"]
    assert model.spec == load_model("2nd_argmax-d2-n2").spec
    with pytest.raises(AlgzuError, match="no 2nd_argmax-d4-n3"):
        heldout.closed_book(Suite("x", (ModelCase("2nd_argmax-d4-n3", 0.05),), 2, (10**4,), 2**12), zoo_dir=tmp_path)
    with pytest.raises(AlgzuError, match="not both"):
        heldout.closed_book(SUITE, secret="s", zoo_dir=tmp_path)


def test_heldout_run_writes_no_secret_seed_or_base_path(tiny_recipe, tmp_path, monkeypatch):
    import sys

    from algzu.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text("a secret nobody has\n")
    monkeypatch.setenv("ALGZU_HELDOUT_CACHE", str(tmp_path / "bases"))
    monkeypatch.setattr(sys, "argv", ["algzu", "leaderboard", "--suite", "smoke", "--out", str(tmp_path / "out"),
                                      "--heldout", "--secret-file", str(secret), "--estimator", "sampling",
                                      "--unsealed", "--no-isolate"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    folder = tmp_path / "out" / "smoke-closed-book"
    text = "".join(p.read_text() for p in folder.iterdir() if p.suffix in (".csv", ".md", ".json"))
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["config"]["closed_book"] is True and provenance["seeds"]["suite"] == "secret"
    assert "a secret nobody has" not in text and str(tmp_path / "bases") not in text
    for base in (tmp_path / "bases").glob("*.safetensors"):
        assert base.stem not in text
