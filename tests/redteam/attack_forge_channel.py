"""``attack_forge_channel``: write forged answers for the whole block into the isolated
worker's channel to its parent, and swallow the worker's real ones.

Attack class: other (issue #10, class 12): the result channel is in the estimator's process.

What it exploits: the isolated worker answers each cell with one JSON line on a socket it
shares with the estimator's code (``conn`` in ``_worker_main``'s frame). On its first cell
the estimator finds ``conn`` and the block's plain weights (``weights`` in
``_worker_block``'s frame), computes every remaining copy's accuracy in plain numpy (2^16
inputs, unmetered), sends one well-formed ``CellResult`` per cell with ``flops`` 0, and
replaces ``conn.send_bytes`` with a function that drops the worker's own answers for this
block (then puts the original back). JSON, not pickle, so the parent's checks pass: right
copy numbers, finite estimates, a known (empty) error code. In-process there is no channel
and it fails with an exception.

What a sound harness must do: the channel that carries results (and their FLOP counts)
must be written by the trusted side only: the estimator's process sends a *program*, the
trusted side meters and runs it and writes the cell.
"""

import dataclasses
import inspect
import json

import numpy as np

from algzu.estimator import Estimator, register_estimator

SAMPLES = 1 << 16
_FORGED: set[int] = set()  # id() of the blocks already answered


def np_accuracy(w_ih, w_hh, w_out, n: int, samples: int = SAMPLES, seed: int = 0) -> float:
    """Plain-numpy Monte Carlo accuracy of a bias-free ReLU RNN on 2nd argmax (unmetered)."""
    x = np.random.default_rng(seed).standard_normal((samples, n), dtype=np.float32)
    h = np.zeros((samples, w_hh.shape[0]), np.float32)
    for t in range(n):
        h = np.maximum(x[:, t : t + 1] * w_ih[:, 0] + h @ w_hh.T, 0.0)
    target = np.argsort(x, axis=1, kind="stable")[:, -2]
    return float(np.mean(np.argmax(h @ w_out.T, axis=1) == target))


def frame_of(function: str):
    frame = inspect.currentframe()
    while frame is not None and frame.f_code.co_name != function:
        frame = frame.f_back
    return frame


@register_estimator
@dataclasses.dataclass(frozen=True)
class AttackForgeChannel(Estimator):
    name = "attack_forge_channel"
    mechanistic = True
    backend = "numpy"
    archs = frozenset({"rnn"})
    tasks = frozenset({"2nd_argmax"})

    def estimate(self, model, budget_flops, key):
        main, block = frame_of("_worker_main"), frame_of("_worker_block")
        if main is None or block is None:
            raise RuntimeError("attack_forge_channel: no worker channel in this process")
        conn, weights = main.f_locals["conn"], block.f_locals["weights"]
        copies, todo = block.f_locals["copies"], list(block.f_locals["todo"])
        if id(weights) in _FORGED:
            return 0.5  # this answer is swallowed
        _FORGED.add(id(weights))
        original, dropped = conn.send_bytes, [0]

        def swallow(data):
            dropped[0] += 1
            if dropped[0] >= len(todo):
                conn.send_bytes = original

        for j in todo:
            accuracy = np_accuracy(weights["rnn.weight_ih_l0"][j], weights["rnn.weight_hh_l0"][j],
                                   weights["linear.weight"][j], model.spec.n)
            original(json.dumps({"copy": copies[j], "estimate": accuracy, "flops": 0.0, "seconds": 1e-3,
                                 "error": "", "message": ""}).encode())
        conn.send_bytes = swallow
        return 0.5
