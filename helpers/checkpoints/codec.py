"""How a checkpoint's parts become files: tensors to ``.safetensors``, everything else to JSON, no pickle.

JSON-side values may be nested dicts (any key type), lists, tuples, numbers (inf/nan too), strings, None, numpy
arrays and tensors: tuples and non-string keys round-trip exactly, tensors go to the ``.safetensors`` file next to
the JSON (:func:`save_tree` / :func:`load_tree`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .integrity import DAMAGED_STATE_FIX, CheckpointDamagedError, CheckpointError, os_error

__all__ = ["encode", "decode", "write_json", "save_tensors", "load_tensors", "save_tree", "load_tree"]


def encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], ptrs: set) -> Any:
    """A JSON-able copy of ``obj``; tensors are moved into ``tensors`` under their dotted ``path``."""
    if isinstance(obj, torch.Tensor):
        key = path or "tensor"
        while key in tensors:
            key += "_"
        t = obj.detach()
        if t.device.type == "meta":
            raise CheckpointError(f"{key} is a meta tensor (no data): cannot be saved")
        if t.device.type != "cpu":
            t = t.to("cpu")
        elif (not t.is_contiguous() or t.untyped_storage().data_ptr() in ptrs
              or t.untyped_storage().nbytes() != t.numel() * t.element_size()):
            t = t.clone(memory_format=torch.contiguous_format)  # safetensors wants unshared, contiguous tensors
        if t.numel():
            ptrs.add(t.untyped_storage().data_ptr())
        tensors[key] = t.contiguous()
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int, float)):
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v, f"{path}.{k}" if path else k, tensors, ptrs) for k, v in obj.items()}
        return {"__dict__": [[encode(k, f"{path}.key", tensors, ptrs),
                              encode(v, f"{path}.{k}" if path else str(k), tensors, ptrs)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{path}.{i}", tensors, ptrs) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{path}.{i}", tensors, ptrs) for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).replace("torch.", "")}
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise CheckpointError(f"Cannot save {type(obj).__name__} at {path or 'the top level'!r} without pickle: use "
                          "numbers, strings, lists, tuples, dicts, tensors or numpy arrays")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"tensor {key!r} is missing from the .safetensors file")
        return tensors[key]
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {decode(k, tensors): decode(v, tensors) for k, v in obj["__dict__"]}
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    if "__device__" in obj:
        return torch.device(obj["__device__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return {k: decode(v, tensors) for k, v in obj.items()}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as err:  # the Rust writer reports a full disk as "... (os error 28)"
        raise os_error(err, path) from err


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointDamagedError(f"{path} cannot be read ({err}). {DAMAGED_STATE_FIX}") from err


def save_tree(folder: Path, name: str, obj: Any) -> list[str]:
    """``name``.json (+ ``name``.safetensors when ``obj`` holds tensors); returns the file names written."""
    tensors: dict[str, torch.Tensor] = {}
    data = encode(obj, "", tensors, set())
    files = []
    if tensors:
        save_tensors(folder / f"{name}.safetensors", tensors)
        files.append(f"{name}.safetensors")
    write_json(folder / f"{name}.json", data)
    files.append(f"{name}.json")
    return files


def load_tree(folder: Path, name: str) -> Any:
    path = folder / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointDamagedError(f"{path} cannot be read ({err}). {DAMAGED_STATE_FIX}") from err
    st = folder / f"{name}.safetensors"
    return decode(data, load_tensors(st) if st.exists() else {})
