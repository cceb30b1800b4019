"""Provenance: the git hash says whether the code differed from the commit, not the outputs."""

import subprocess

from algzu.provenance import git_hash


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)


def test_writing_results_does_not_mark_the_code_dirty(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "cells.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "start")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_hash(tmp_path) == head
    (tmp_path / "results" / "cells.csv").write_text("b\n")  # a run rewrote its outputs
    assert git_hash(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")  # the code changed
    assert git_hash(tmp_path) == head + "-dirty"


def test_outside_a_checkout_the_hash_is_unknown(tmp_path):
    assert git_hash(tmp_path) == "unknown"


def test_provenance_records_the_cpu_type():
    # Tables are byte-identical only on one machine type: provenance says which.
    from algzu.provenance import cpu

    found = cpu()
    assert set(found) == {"model", "isa"} and isinstance(found["model"], str)
    assert set(found["isa"]) <= {"sse4_2", "avx", "avx2", "fma", "avx512f"}
