"""Bad input gets one line: ``error: ...`` on stderr, exit code 2, no traceback, nothing written.

Corrupt or hostile checkpoints (a pickle that would run code is refused, never executed),
unknown names, bad numbers and unwritable folders, through the CLI's entry point in this
process and, for two cases, as a separate ``python -m algzu.cli`` process.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from algzu.zoo import OFFICIAL_DIR, load_model

MODEL = "algzoo/2nd_argmax-d2-n2"
PWNED = Path(f"/tmp/algzu-pwned-by-test-{os.getpid()}")  # what the hostile pickle would create


def _zip_pickle(payload: bytes, storage: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
        if storage:
            z.writestr("archive/data/0", storage)
    return buf.getvalue()


def _call_pickle(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 pickle that calls ``module.name(arg)`` when loaded by a plain unpickler."""
    text = arg.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"X" + len(text).to_bytes(4, "little") + text + b"\x85R."


def _tensor_pickle(size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """Protocol-2 pickle of {"linear.weight": tensor(size, stride)} over a 4-float storage."""
    def tup(t):
        return b"(" + b"".join(b"K" + bytes([v]) if v < 256 else b"J" + v.to_bytes(4, "little") for v in t) + b"t"

    return (b"\x80\x02ccollections\nOrderedDict\n)R"
            b"X\r\x00\x00\x00linear.weight"
            b"ctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
            b"K\x00" + tup(size) + tup(stride) + b"\x89ccollections\nOrderedDict\n)RtR"
            b"s.")


def _bad_inputs(root: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (CLI arguments, a word the message must contain). Files are made in root/in."""
    src = root / "in"
    src.mkdir()
    official = (OFFICIAL_DIR / "algzoo_rnn_small.pth").read_bytes()
    (src / "truncated.pth").write_bytes(official[: len(official) // 2])
    (src / "garbage.pth").write_bytes(b"not a zip at all")
    (src / "system.pth").write_bytes(_zip_pickle(_call_pickle("posix", "system", f"touch {PWNED}")))
    (src / "eval.pth").write_bytes(_zip_pickle(_call_pickle("builtins", "eval", "1+1")))
    zeros = np.zeros(4, np.float32).tobytes()
    (src / "overrun.pth").write_bytes(_zip_pickle(_tensor_pickle((1000, 1000), (1000, 1)), zeros))
    (src / "stride.pth").write_bytes(_zip_pickle(_tensor_pickle((2, 2), (2**30, 1)), zeros))
    from algzu import checkpoint

    good = checkpoint.save(load_model(MODEL), src / "good.safetensors")
    shapes = checkpoint.save(load_model(MODEL), src / "shapes.safetensors")
    (src / "shapes.json").write_text((src / "shapes.json").read_text().replace('"d": 2', '"d": 3'))
    (src / "cut.safetensors").write_bytes(good.read_bytes()[:-7])
    (src / "cut.json").write_bytes((src / "good.json").read_bytes())
    (src / "sidecar.safetensors").write_bytes(good.read_bytes())
    (src / "sidecar.json").write_text("{not json")
    (src / "a_file").write_text("")
    (src / "broken.py").write_text('raise RuntimeError("this estimator file is broken")\n')
    score = ["score", "sampling", "--model", MODEL, "--noise-std", "0.1", "--copies", "2", "--budgets", "1000",
             "--gt-samples", "64", "--cache", "cache"]

    def with_(flag, value):
        args = list(score)
        args[args.index(flag) + 1] = value
        return args

    return {
        "truncated_pth": (["eval", str(src / "truncated.pth")], "truncated"),
        "garbage_pth": (["eval", str(src / "garbage.pth")], "corrupt"),
        "pickle_os_system": (["eval", str(src / "system.pth")], "refusing global"),
        "pickle_builtins_eval": (["eval", str(src / "eval.pth")], "refusing global builtins.eval"),
        "tensor_past_storage": (["eval", str(src / "overrun.pth")], "past its storage"),
        "tensor_stride_past_storage": (["eval", str(src / "stride.pth")], "past its storage"),
        "wrong_shapes": (["eval", str(shapes)], "has shape"),
        "truncated_safetensors": (["eval", str(src / "cut.safetensors")], "corrupt safetensors"),
        "corrupt_sidecar": (["eval", str(src / "sidecar.safetensors")], "corrupt sidecar"),
        "missing_checkpoint": (["eval", str(src / "absent.pth")], "no such file"),
        "unknown_model": (["eval", "algzoo/no_such_model"], "unknown model"),
        "unknown_task": (["eval", MODEL, "--task", "no_such_task"], "unknown task"),
        "unknown_estimator": (["score", "no_such_estimator", *score[2:]], "unknown estimator"),
        "unknown_model_in_score": (with_("--model", "no_such_model"), "unknown model"),
        # A file the user named must load even when the estimator scored is another file's.
        "broken_include": ([*score, "--include", str(src / "broken.py")], "broken.py"),
        "zero_budget": (with_("--budgets", "0"), "budgets"),
        "negative_budget": (with_("--budgets", "-5"), "budgets"),
        "negative_noise_std": (with_("--noise-std", "-0.1"), "noise std"),
        "zero_copies": (with_("--copies", "0"), "copies"),
        "unknown_suite": (["leaderboard", "--suite", "no_such_suite", "--out", "out"], "unknown suite"),
        "unknown_estimator_in_leaderboard": (["leaderboard", "--suite", "smoke", "--out", "out", "--estimator",
                                              "no_such_estimator"], "unknown estimator"),
        "output_folder_is_a_file": (["leaderboard", "--suite", "smoke", "--out", str(src / "a_file")], "a_file"),
        "negative_timeout": (["leaderboard", "--suite", "smoke", "--out", "out", "--timeout", "-1"], "timeout"),
        # An empty secret (say, $ALGZU_SECRET set but blank) would key a "held-out" run on a
        # string anyone can guess.
        "empty_secret": (["leaderboard", "--suite", "smoke", "--out", "out", "--heldout", "--secret", ""], "secret"),
        "blank_secret": (["leaderboard", "--suite", "smoke", "--out", "out", "--secret", " \n"], "secret"),
        # Both would leave one unused, and the run not the one asked for.
        "seed_and_secret": ([*score, "--seed", "3", "--secret", "abc"], "--seed"),
        "seed_and_secret_in_leaderboard": (["leaderboard", "--suite", "smoke", "--out", "out", "--seed", "1",
                                            "--secret", "abc"], "--seed"),
        # Caught by the command-line parser before algzu runs: one line too, not usage and a panel.
        "budget_not_a_number": (with_("--budgets", "1e4x"), "--budgets"),
        "unknown_option": (["eval", MODEL, "--no-such-option"], "--no-such-option"),
        "missing_argument": (["score", "--model", MODEL], "Missing argument"),
        "unknown_command": (["no-such-command"], "no-such-command"),
    }


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    return root, _bad_inputs(root)


BAD_INPUTS = ["truncated_pth", "garbage_pth", "pickle_os_system", "pickle_builtins_eval", "tensor_past_storage",
              "tensor_stride_past_storage", "wrong_shapes", "truncated_safetensors", "corrupt_sidecar",
              "missing_checkpoint", "unknown_model", "unknown_task", "unknown_estimator", "unknown_model_in_score",
              "broken_include", "zero_budget", "negative_budget", "negative_noise_std", "zero_copies", "unknown_suite",
              "unknown_estimator_in_leaderboard", "output_folder_is_a_file", "negative_timeout", "empty_secret",
              "blank_secret", "seed_and_secret", "seed_and_secret_in_leaderboard", "budget_not_a_number",
              "unknown_option", "missing_argument", "unknown_command"]
# Run end to end as separate processes too (each imports JAX: a few seconds of CPU apiece).
IN_A_PROCESS = ["pickle_os_system", "unknown_estimator_in_leaderboard"]


def _check_one_line(returncode: int, stderr: str, word: str, cwd: Path) -> None:
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr[-2000:]
    assert word in lines[0], lines[0]
    assert list(cwd.iterdir()) == [], "nothing may be written"
    assert not PWNED.exists()


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_line_and_exit_code_2(bad_inputs, case, tmp_path, monkeypatch, capsys):
    """The CLI's entry point, in this process: exit code 2 and one line, whatever the bad input."""
    from algzu.cli import main

    root, cases = bad_inputs
    args, word = cases[case]
    monkeypatch.chdir(tmp_path)  # relative --out / --cache land here: it must stay empty
    monkeypatch.setattr(sys, "argv", ["algzu", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    _check_one_line(exit_.value.code, capsys.readouterr().err, word, tmp_path)


@pytest.fixture(scope="module")
def cli_processes(bad_inputs):
    """The IN_A_PROCESS cases run as ``python -m algzu.cli``, two at a time."""
    root, cases = bad_inputs

    def run(name):
        cwd = root / "cwd" / name
        cwd.mkdir(parents=True)
        done = subprocess.run([sys.executable, "-m", "algzu.cli", *cases[name][0]], cwd=cwd, capture_output=True,
                              text=True, timeout=300)
        return name, (done, cwd)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, IN_A_PROCESS))


@pytest.mark.parametrize("case", IN_A_PROCESS)
def test_bad_input_in_a_process_gives_one_line_and_exit_code_2(bad_inputs, cli_processes, case):
    done, cwd = cli_processes[case]
    _check_one_line(done.returncode, done.stderr, bad_inputs[1][case][1], cwd)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_unwritable_output_folder_gives_one_line(tmp_path):
    out = tmp_path / "read-only"
    out.mkdir(mode=0o500)
    done = subprocess.run([sys.executable, "-m", "algzu.cli", "leaderboard", "--suite", "smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    # mkstemp's private 0600 must not leak into results that others read.
    from algzu.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "table.csv", "a,b\n")
        with open(tmp_path / "plain.csv", "w") as f:
            f.write("a,b\n")
    finally:
        os.umask(old)
    assert (tmp_path / "table.csv").stat().st_mode & 0o777 == (tmp_path / "plain.csv").stat().st_mode & 0o777 == 0o644
