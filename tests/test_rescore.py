"""``algzu rescore``: a results folder's summary, verdicts and tables recomputed from its cells."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from algzu.rescore import rescore

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDERS = sorted(p.name for p in RESULTS.iterdir() if (p / "cells.csv").exists())
# What says when and where a folder was written (the page shows provenance).
NOT_COMPARED = {"provenance.json", "index.html"}


def _challenge_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("out")  # the folder it was written to
    return data


@pytest.mark.parametrize("name", FOLDERS)
def test_committed_results_are_their_cells_scored_by_this_checkout(name, tmp_path, monkeypatch):
    """Every committed folder is what this checkout's statistics make of its ``cells.csv``:
    a change to the scoring or the verdicts cannot land without its results regenerated
    (``algzu rescore``), and the secret of a closed-book folder is not needed to check it.
    The plots are not compared (fonts and rasterizing are the host's), so not drawn: they
    are 3/4 of a rescore's time."""
    import algzu.reports.suite

    monkeypatch.setattr(algzu.reports.suite, "plot_model", lambda *args, **kwargs: b"")
    folder = tmp_path / name
    shutil.copytree(RESULTS / name, folder)
    rescore(folder)
    for path in sorted((RESULTS / name).iterdir()):
        if path.name in NOT_COMPARED or path.suffix == ".png":
            continue
        if path.name == "challenge.json":
            assert _challenge_json(folder / path.name) == _challenge_json(path)
        else:
            assert (folder / path.name).read_bytes() == path.read_bytes(), path.name
    before, after = (json.loads((f / "provenance.json").read_text()) for f in (RESULTS / name, folder))
    assert after["rescored"]["date"] >= after["date"]
    for key in ("git_hash", "date", "versions", "host", "config", "seeds", "verdicts"):
        assert after[key] == before[key], key


def test_a_rescored_run_is_what_the_run_wrote(tmp_path):
    """A run summarizes its cells as ``cells.csv`` holds them (10 significant digits), so
    rescoring a folder just written changes nothing but provenance's ``rescored``. Failed
    cells too: a failed cell has no estimate, and the column of floats and None was written
    at full precision and read back at 10 digits, so before 04efc28 a board with any failure
    could not be rescored ("would not be written back unchanged")."""
    import algzu.estimator as registry
    from algzu.estimator import include
    from algzu.reports.suite import write_results
    from algzu.run import run_suite
    from algzu.suites import ModelCase, Suite

    suite = Suite("tiny-rescore", (ModelCase("2nd_argmax-d4-n3", 0.05),), n_copies=8, budgets=(10**4,),
                  gt_samples=1 << 12, seed=3)
    with registry.ESTIMATORS.restoring():
        include(Path(__file__).with_name("faulty_estimators.py"))
        result = run_suite(suite, cache_dir=tmp_path / "cache", estimators=["sampling", "faulty_over_budget"])
    assert set(result.cells["error"].fillna("")) == {"", "over_budget"}
    folder = tmp_path / "tiny"
    written = write_results(folder, suite, result)
    rescore(folder)
    for path, data in written.items():
        if path.name not in NOT_COMPARED:
            assert path.read_bytes() == (data.encode() if isinstance(data, str) else data), path.name
    assert "rescored" in json.loads((folder / "provenance.json").read_text())


def test_cells_that_would_not_come_back_unchanged_are_refused_and_nothing_is_written(tmp_path):
    folder = tmp_path / "m43"
    shutil.copytree(RESULTS / "challenge-m43", folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    lines = (folder / "cells.csv").read_text().splitlines(keepends=True)
    # An estimate with more digits than a run writes: rescoring would round it.
    header = lines[0].rstrip("\n").split(",")
    row = lines[1].rstrip("\n").split(",")
    row[header.index("estimate")] = "0.12345678901234"
    (folder / "cells.csv").write_text("".join([lines[0], ",".join(row) + "\n", *lines[2:]]))
    with pytest.raises(Exception, match="would not be written back unchanged"):
        rescore(folder)
    (folder / "cells.csv").write_bytes(before["cells.csv"])
    (folder / "timings.csv").write_text("".join((RESULTS / "challenge-m43" / "timings.csv").read_text()
                                                .splitlines(keepends=True)[:-1]))
    with pytest.raises(Exception, match="not those of cells.csv"):
        rescore(folder)
    (folder / "timings.csv").write_bytes(before["timings.csv"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_rescore_command_bad_folders_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from algzu.cli import main

    (tmp_path / "empty").mkdir()
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "provenance.json").write_text("{")
    (tmp_path / "nocells").mkdir()
    shutil.copy(RESULTS / "challenge-m43" / "provenance.json", tmp_path / "nocells")
    for case, word in [("absent", "cannot read provenance"), ("empty", "cannot read provenance"),
                       ("torn", "not JSON"), ("nocells", "cannot read cells")]:
        monkeypatch.setattr(sys, "argv", ["algzu", "rescore", str(tmp_path / case)])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and word in err[0], err
    assert sorted(p.name for p in (tmp_path / "nocells").iterdir()) == ["provenance.json"]
