"""Official AlgZoo checkpoints load without torch; hostile or broken files are refused."""

import io
import pickle
import zipfile

import numpy as np
import pytest

from algzu import checkpoint
from algzu.errors import AlgzuError
from algzu.evaluate import evaluate
from algzu.pth import load_state_dict
from algzu.zoo import OFFICIAL_DIR, load_model


def test_official_checkpoints_load_without_torch():
    import sys

    sd = load_state_dict(OFFICIAL_DIR / "algzoo_rnn_blog.pth")
    assert {k: v.shape for k, v in sd.items()} == {
        "rnn.weight_ih_l0": (16, 1), "rnn.weight_hh_l0": (16, 16), "linear.weight": (10, 16)}
    assert "torch" not in sys.modules


def test_challenge_model_scores_95_31_percent(official):
    # ARC: 95.31%. 2^22 samples give a standard error of ~1.0e-4; the acceptance band is
    # +-0.05 points (5 standard errors).
    e = evaluate(official["algzoo/example_2nd_argmax"], samples=1 << 22, seed=0)
    assert e.method == "sampled" and e.samples == 1 << 22
    assert abs(e.value - 0.9531) <= 0.0005, e


def test_small_zoo_model_scores_99_993_percent(official):
    # ARC: 99.993%; se at 2^22 samples ~ 4e-6, band +-0.003 points.
    e = evaluate(official["algzoo/2nd_argmax-d2-n2"], samples=1 << 22, seed=0)
    assert abs(e.value - 0.99993) <= 0.00003, e


def test_longest_cycle_transformer_is_exhaustively_perfect(official):
    e = evaluate(official["algzoo/longest_cycle-d2-n3"])
    assert (e.method, e.samples, e.value, e.stderr) == ("exhaustive", 27, 1.0, 0.0)


def _state_dict_zip(pickled: bytes, storages: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        for k, v in (storages or {}).items():
            z.writestr(f"archive/data/{k}", v)
    return buf.getvalue()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/algzu-pwned",))


def test_pickle_naming_any_other_global_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(_state_dict_zip(pickle.dumps({"w": _Exploit()}, protocol=2)))
    with pytest.raises(AlgzuError, match="refusing global (posix|os).system"):
        load_state_dict(path)
    assert not (tmp_path / "pwned").exists()
    import os

    assert not os.path.exists("/tmp/algzu-pwned")


def test_builtins_eval_is_refused(tmp_path):
    path = tmp_path / "eval.pth"
    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."
    path.write_bytes(_state_dict_zip(payload))
    with pytest.raises(AlgzuError, match="refusing global builtins.eval"):
        load_state_dict(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    data = (OFFICIAL_DIR / "algzoo_rnn_blog.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AlgzuError, match="corrupt or truncated"):
        load_state_dict(path)


def test_garbage_and_missing_files_are_refused(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a zip at all")
    with pytest.raises(AlgzuError, match="corrupt"):
        checkpoint.load(tmp_path / "junk.pth")
    with pytest.raises(AlgzuError, match="no such file"):
        checkpoint.load(tmp_path / "absent.pth")
    with pytest.raises(AlgzuError, match="unknown checkpoint type"):
        checkpoint.load(tmp_path / "model.bin")


def test_wrong_shapes_in_sidecar_are_refused(tmp_path, official):
    model = official["algzoo/2nd_argmax-d2-n2"]
    path = checkpoint.save(model, tmp_path / "m.safetensors", {"note": "test"})
    sidecar = path.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"d": 2', '"d": 3'))
    with pytest.raises(AlgzuError, match="has shape"):
        checkpoint.load(path)


def test_safetensors_round_trip_is_exact(tmp_path, official):
    model = official["algzoo/example_2nd_argmax"]
    path = checkpoint.save(model, tmp_path / "m.safetensors", {"evaluation": {"value": 0.95}})
    back = checkpoint.load(path)
    assert back.spec == model.spec
    for k in model.params:
        np.testing.assert_array_equal(back.params[k], model.params[k])
    assert checkpoint.read_sidecar(path)["evaluation"]["value"] == 0.95


def test_unknown_zoo_id_lists_valid_ids():
    with pytest.raises(AlgzuError, match="zoo ids: .*algzoo/example_2nd_argmax"):
        load_model("2nd_argmax-d99-n99")
