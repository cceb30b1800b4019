"""The machine-readable CLI: zoo list, eval, train and score, driven as other tools would."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from algzu import checkpoint
from algzu.cli import app
from algzu.zoo import OFFICIAL_DIR

runner = CliRunner()


def _json(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_zoo_list_has_stable_ids_and_the_whole_shipped_zoo():
    rows = {r["id"]: r for r in _json(["zoo", "list", "--json"])}
    assert {"algzoo/example_2nd_argmax", "algzoo/2nd_argmax-d2-n2", "algzoo/longest_cycle-d2-n3"} <= set(rows)
    assert rows["algzoo/example_2nd_argmax"]["n_params"] == 432
    for d in (2, 3, 4, 8, 16):
        for n in (2, 3, 4, 5, 10):
            assert f"2nd_argmax-d{d}-n{n}" in rows
    for extra in ("argmedian-d4-n3", "argmedian-d8-n5", "median-d2-n2", "median-d4-n3", "longest_cycle-d2-n3",
                  "longest_cycle-d4-n4", "2nd_argmax-mlp-d32-n3", "2nd_argmax-mlp-d32-n5"):
        assert extra in rows
    assert rows["2nd_argmax-d16-n10"]["accuracy"] >= 0.92
    assert set(rows["2nd_argmax-d4-n3"]) >= {"id", "task", "arch", "d", "n", "n_params", "accuracy"}


def test_eval_json_on_a_zoo_id_and_on_a_pth_path():
    out = _json(["eval", "algzoo/2nd_argmax-d2-n2", "--samples", "65536", "--json"])
    assert set(out) >= {"model", "task", "accuracy", "stderr", "samples", "method"}
    assert out["method"] == "sampled" and out["samples"] == 65536 and out["accuracy"] > 0.999
    out = _json(["eval", str(OFFICIAL_DIR / "algzoo_transformer_small.pth"), "--json"])
    assert (out["task"], out["accuracy"], out["method"], out["samples"]) == ("longest_cycle", 1.0, "exhaustive", 27)


def test_train_writes_a_checkpoint_whose_sidecar_reproduces_it(tmp_path):
    result = runner.invoke(app, ["train", "2nd_argmax", "--hidden", "2", "--seq-len", "2", "--seqs", "4096",
                                 "--seed", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "2nd_argmax-d2-n2.safetensors"
    model = checkpoint.load(path)
    sidecar = checkpoint.read_sidecar(path)
    assert model.spec.d == 2 and sidecar["training"]["seqs"] == 4096
    assert "--seed 3" in sidecar["training"]["command"]


def test_score_json_piped_is_pure_json_and_undefined_is_null(tmp_path):
    # A real process with stdout piped, as `algzu score ... --json > out.json` runs: the
    # progress bar must go to stderr. Budget 100 is below one sample's cost (182 FLOPs),
    # so the efficiency against plain sampling is undefined (null); the headline is not.
    cmd = [sys.executable, "-m", "algzu.cli", "score", "sampling", "--model", "2nd_argmax-d4-n3", "--noise-std",
           "0.05", "--copies", "2", "--budgets", "100", "--gt-samples", "4096", "--cache", str(tmp_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert "sampling on 2nd_argmax-d4-n3" in done.stderr  # the progress bar, on stderr
    assert row["samples"] == 0 and row["efficiency"] is None and row["efficiency_lo"] is None
    assert row["sampling_mse"] is None
    assert isinstance(row["prior_efficiency"], float) and isinstance(row["fvu"], float)


def test_json_tells_infinite_from_undefined():
    from algzu.reports.suite import dumps_json

    text = dumps_json({"efficiency": float("inf"), "lo": float("-inf"), "undefined": float("nan"), "x": 0.5})
    assert json.loads(text) == {"efficiency": "inf", "lo": "-inf", "undefined": None, "x": 0.5}
    assert "NaN" not in text and "Infinity" not in text
