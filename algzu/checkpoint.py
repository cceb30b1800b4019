"""Load and save models: algzu's safetensors + JSON sidecar format, and AlgZoo ``.pth`` files.

Our format is two files side by side: ``NAME.safetensors`` holds the weights under
AlgZoo's tensor names, ``NAME.json`` (the sidecar) says what they are and how they were
made: the spec, the training run (task, seed, sequences, recipe), the measured accuracy
with its standard error, package versions, git hash and date. PyTorch ``.pth`` state dicts
are read by :mod:`algzu.pth` without torch; their spec is inferred from the tensor shapes
(2nd argmax for RNNs and MLPs, longest cycle for transformers) unless a sidecar
``NAME.json`` or an explicit ``task`` says otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from algzu.errors import AlgzuError
from algzu.io import atomic_write_bytes, atomic_write_text
from algzu.model import Model, ModelSpec
from algzu.pth import load_state_dict

FORMAT = "algzu-checkpoint/1"


def save(model: Model, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors``) and its ``.json`` sidecar; returns the weights path.

    ``metadata`` (training run, accuracy, provenance) is stored in the sidecar beside the spec.
    """
    from safetensors.numpy import save as st_save

    path = Path(path).with_suffix(".safetensors")
    tensors = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in model.params.items()}
    sidecar = {"format": FORMAT, "spec": model.spec.to_dict(), "n_params": model.n_params}
    sidecar.update(metadata or {})
    atomic_write_bytes(path, st_save(tensors))
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return path


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of a checkpoint (``NAME.json`` beside ``NAME.safetensors``)."""
    sidecar = Path(path).with_suffix(".json")
    try:
        data = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise AlgzuError(f"{path}: missing sidecar {sidecar.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AlgzuError(f"{sidecar}: corrupt sidecar ({e})") from None
    if not isinstance(data, dict) or "spec" not in data:
        raise AlgzuError(f"{sidecar}: not an algzu sidecar (no spec)")
    return data


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    try:
        return dict(st_load(path.read_bytes()))
    except FileNotFoundError:
        raise AlgzuError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AlgzuError(f"{path}: is a directory, not a checkpoint") from None
    except (SafetensorError, ValueError, OSError) as e:
        raise AlgzuError(f"{path}: corrupt safetensors file ({e})") from None


def infer_spec(params: dict[str, np.ndarray], task: str | None = None) -> ModelSpec:
    """Guess the spec of an AlgZoo state dict from its tensor names and shapes."""
    if "rnn.weight_hh_l0" in params and "linear.weight" in params:
        d, n_out = params["rnn.weight_hh_l0"].shape[0], params["linear.weight"].shape[0]
        return ModelSpec("rnn", task or "2nd_argmax", d, n_out)
    if "embed.weight" in params and "pos_embed.weight" in params:
        layers = len([k for k in params if re.fullmatch(r"attns\.\d+\.in_proj_weight", k)])
        n, d = params["pos_embed.weight"].shape
        return ModelSpec("transformer", task or "longest_cycle", d, n, n_layers=max(layers, 1))
    if "mlp.0.weight" in params:
        d, n = params["mlp.0.weight"].shape
        return ModelSpec("mlp", task or "2nd_argmax", d, n)
    raise AlgzuError(f"unrecognised state dict (tensors: {', '.join(sorted(params)) or 'none'})")


def load(path: str | Path, task: str | None = None) -> Model:
    """Load a model from ``.safetensors`` (with sidecar) or an AlgZoo ``.pth`` file.

    Raises:
        AlgzuError: missing, corrupt or unsafe file, or weights that do not fit the spec.
    """
    path = Path(path)
    if path.suffix == ".pth":
        params = load_state_dict(path)
        sidecar = path.with_suffix(".json")
        spec = ModelSpec.from_dict(read_sidecar(path)["spec"]) if sidecar.exists() else infer_spec(params, task)
    elif path.suffix == ".safetensors":
        spec = ModelSpec.from_dict(read_sidecar(path)["spec"])
        params = _load_safetensors(path)
    else:
        raise AlgzuError(f"{path}: unknown checkpoint type (expected .pth or .safetensors)")
    if task is not None and spec.task != task:
        spec = ModelSpec.from_dict({**spec.to_dict(), "task": task})
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    for name, value in params.items():
        if not np.all(np.isfinite(value)):
            raise AlgzuError(f"{path}: weight {name} has non-finite values")
    return Model(spec, params)
