"""Read PyTorch zip state dicts (``torch.save``) without torch and without running code.

A ``.pth`` file is a zip archive holding ``<prefix>/data.pkl`` (a pickle of the state dict
whose tensors point at storages by persistent id) and ``<prefix>/data/<key>`` (the raw
little-endian bytes of each storage). The pickle is read by a restricted unpickler: the only
globals it may name are ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and
the typed storage classes, each mapped to a harmless local stand-in. Any other global
(``os.system``, ``builtins.eval``, ...) is refused before anything is called, so a hostile
checkpoint cannot execute code.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from algzu.errors import AlgzuError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, np.ndarray):
        raise pickle.UnpicklingError("tensor does not point at a storage")
    # A hostile size/stride/offset must not read outside the storage (as_strided does not check).
    if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))
            and len(size) == len(stride) and offset >= 0 and min((*size, *stride), default=0) >= 0):
        raise pickle.UnpicklingError(f"bad tensor layout: offset {offset!r}, size {size!r}, stride {stride!r}")
    numel = int(np.prod(size, dtype=object))
    if numel and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
        raise pickle.UnpicklingError(f"tensor of size {tuple(size)} runs past its storage of {storage.size}")
    if numel > max(storage.size, 1):
        raise pickle.UnpicklingError(f"tensor of size {tuple(size)} has more elements than its storage")
    itemsize = storage.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    ).copy()


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages: dict[str, bytes]) -> None:
        super().__init__(io.BytesIO(data))
        self._storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing global {module}.{name}: only tensors are allowed")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or str(key) not in self._storages:
            raise pickle.UnpicklingError(f"storage {key!r} is missing or untyped")
        raw = self._storages[str(key)]
        dtype = storage_type.dtype.newbyteorder("<")
        if len(raw) < numel * dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch zip state dict, as numpy arrays keyed by name.

    Raises:
        AlgzuError: the file is missing, not a zip state dict, truncated, or its pickle names
            anything but tensors, storages and ordered dicts.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise AlgzuError(f"{path}: not a PyTorch zip state dict (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = prefix + "byteorder"
            if byteorder in names and archive.read(byteorder).decode().strip() != "little":
                raise AlgzuError(f"{path}: only little-endian checkpoints are supported")
            storages = {
                n[len(prefix) + len("data/"):]: archive.read(n)
                for n in names
                if n.startswith(prefix + "data/")
            }
            state = _TensorOnlyUnpickler(archive.read(pickles[0]), storages).load()
    except FileNotFoundError:
        raise AlgzuError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AlgzuError(f"{path}: is a directory, not a checkpoint") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise AlgzuError(f"{path}: corrupt or truncated checkpoint ({e})") from None
    except pickle.UnpicklingError as e:
        raise AlgzuError(f"{path}: unsafe or corrupt pickle: {e}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, UnicodeDecodeError) as e:
        raise AlgzuError(f"{path}: corrupt checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in state.items()
    ):
        raise AlgzuError(f"{path}: not a state dict of named tensors")
    return dict(state)
