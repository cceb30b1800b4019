"""What charging data movement would cost the shipped estimators (the open hole's fix).

The meter charges ``gather``, ``dynamic_slice`` and ``dynamic_update_slice`` 0, which lets
arithmetic hide in table lookups (``tests/redteam/attack_lookup_arithmetic.py``, README "Open
hole"). The fix is to charge a read per element moved, as flopscope charges ``take``. This
script meters every shipped JAX program at every suite budget (the programs
``tests/test_hlo_meter.py`` pins) twice, with today's meter and with those three ops charged
one FLOP per element of their result (``dynamic_update_slice``: of its update), and prints
both counts, their ratio, and whether the program would no longer fit its budget. Run from
the repository root (a few minutes on 2 cores)::

    python bench/lookup_charge.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import algzu.hlo_meter as H
from algzu.estimator import get_estimator
from algzu.zoo import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_hlo_meter import MODEL_IDS, _abstract, _program, budgets  # noqa: E402

MOVES = ("stablehlo.gather", "stablehlo.dynamic_slice", "stablehlo.dynamic_update_slice")
ESTIMATORS = ("sampling", "stratified", "exact_cones", "sliced_cones", "top3_cones", "moments")


def _moved(meter, op, known) -> int:
    del meter, known
    return H._size(op.operands[1] if op.name == "stablehlo.dynamic_update_slice" else op.results[0])


def both_counts(exported) -> tuple[int, int]:
    """Today's count, and the count with the data movement in :data:`MOVES` charged."""
    today = H.exported_flops(exported)
    free = H._FREE
    H._FREE = free - set(MOVES)
    H._HANDLERS.update(dict.fromkeys(MOVES, _moved))
    try:
        return today, H.exported_flops(exported)
    finally:
        H._FREE = free
        for name in MOVES:
            H._HANDLERS.pop(name, None)


def main() -> None:
    print("| model | estimator | budget | FLOPs today | FLOPs with reads charged | ratio | |")
    print("|---|---|---|---|---|---|---|")
    for model_id in MODEL_IDS:
        spec = load_model(model_id).spec
        for name in ESTIMATORS:
            if not get_estimator(name).supports(spec):
                continue
            for budget in budgets(model_id):
                exported = H.export_program(_program(name, spec, budget), *_abstract(spec))
                today, charged = both_counts(exported)
                if today < 50:  # the chance-rate constant
                    continue
                over = "over budget" if charged > budget >= today else ""
                print(f"| `{model_id}` | `{name}` | {budget:.0e} | {today:,} | {charged:,} | "
                      f"{charged / today:.3f} | {over} |", flush=True)


if __name__ == "__main__":
    main()
