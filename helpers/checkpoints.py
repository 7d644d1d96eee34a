"""Checkpoints of a training run: atomic, never overwritten silently, no pickle anywhere.

Layout (``run_dir`` = ``outputs/<run_name>``)::

    run_dir/ckpt/unet_<step>/    config.json + diffusion_pytorch_model.safetensors
                                 (UNet2DConditionModel.save_pretrained: from_pretrained loads the folder),
                                 scheduler_config.json (the run's noise schedule), workbook.json (meta + step)
    run_dir/ckpt/state_<step>/   everything for an exact resume:
        model.safetensors                   the trained model's state_dict
        optimizer.safetensors + .json       optimizer state tensors ("state.<param_idx>.<name>") + the rest
                                            (param_groups, python-number state) as JSON
        lr_scheduler.json                   lr_scheduler.state_dict()
        ema.safetensors + ema.json          diffusers EMAModel: shadow params + decay/optimization_step/...
        rng.safetensors + rng.json          torch CPU (and CUDA/MPS) RNG states, extra torch.Generators;
                                            python ``random`` and numpy states
        extra.json (+ extra.safetensors)    what the training loop needs (step, data position, config...)
        complete.json                       the marker, written last: a state without it is never used

Every save writes into a temporary sibling folder ``ckpt/.tmp-<name>-...`` and renames it into place when
complete, so an interrupted save (crash, Ctrl-C, full disk) never leaves a folder that :func:`list_checkpoints` or
:func:`latest_state` would pick; :func:`clean_incomplete` removes such leftovers. JSON-side values may be nested
dicts (any key type), lists, tuples, numbers (inf/nan too), strings, None, numpy arrays and tensors: tuples and
non-string keys round-trip exactly, tensors go to the ``.safetensors`` file next to the JSON.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from .paths import atomic_folder
from .schedule import save_scheduler_config

__all__ = [
    "save_unet", "save_state", "load_state", "list_checkpoints", "latest_state", "latest_unet", "require_checkpoint",
    "NoCheckpointError", "prune",
    "clean_incomplete", "read_meta", "ema_weights", "is_complete", "CheckpointError", "MARKER_NAME",
]

CKPT_DIR = "ckpt"
MARKER_NAME = "complete.json"
META_NAME = "workbook.json"
TMP_PREFIX = ".tmp-"
FORMAT = "helpers.checkpoints/1"
_KINDS = ("unet", "state")


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete, malformed, or does not fit the objects it is loaded into."""


# --------------------------------------------------------------------------------------------------- codec
def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor], ptrs: set) -> Any:
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
            return {k: _encode(v, f"{path}.{k}" if path else k, tensors, ptrs) for k, v in obj.items()}
        return {"__dict__": [[_encode(k, f"{path}.key", tensors, ptrs),
                              _encode(v, f"{path}.{k}" if path else str(k), tensors, ptrs)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{path}.{i}", tensors, ptrs) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}.{i}", tensors, ptrs) for i, v in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return {"__dtype__": str(obj).replace("torch.", "")}
    if isinstance(obj, torch.device):
        return {"__device__": str(obj)}
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
        if isinstance(obj, np.generic):
            return obj.item()
    except ImportError:  # pragma: no cover
        pass
    raise CheckpointError(f"Cannot save {type(obj).__name__} at {path or 'the top level'!r} without pickle: use "
                          "numbers, strings, lists, tuples, dicts, tensors or numpy arrays")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"tensor {key!r} is missing from the .safetensors file")
        return tensors[key]
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__dict__"]}
    if "__dtype__" in obj:
        return getattr(torch, obj["__dtype__"])
    if "__device__" in obj:
        return torch.device(obj["__device__"])
    if "__ndarray__" in obj:
        import numpy as np

        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _save_tree(folder: Path, name: str, obj: Any) -> list[str]:
    """``name``.json (+ ``name``.safetensors when ``obj`` holds tensors); returns the file names written."""
    tensors: dict[str, torch.Tensor] = {}
    data = _encode(obj, "", tensors, set())
    files = []
    if tensors:
        _save_tensors(folder / f"{name}.safetensors", tensors)
        files.append(f"{name}.safetensors")
    _write_json(folder / f"{name}.json", data)
    files.append(f"{name}.json")
    return files


def _load_tree(folder: Path, name: str) -> Any:
    path = folder / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"Cannot read {path} ({err}): the checkpoint is damaged; resume from an earlier "
                              "one (helpers.checkpoints.list_checkpoints lists them).") from err
    st = folder / f"{name}.safetensors"
    return _decode(data, _load_tensors(st) if st.exists() else {})


# --------------------------------------------------------------------------------------------------- folders
def _ckpt_dir(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    if run_dir.name == CKPT_DIR and not (run_dir / CKPT_DIR).exists():
        return run_dir  # the ckpt folder itself was given
    return run_dir / CKPT_DIR


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _discard(path: Path) -> None:
    """Rename ``path`` to a temporary name first, so a crash while deleting never leaves a half folder in place."""
    if not path.exists():
        return
    trash = path.with_name(f"{TMP_PREFIX}deleting-{path.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except OSError:
        trash = path
    _remove_tree(trash)


@contextmanager
def _atomic_folder(final: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to ``final`` (refusing to replace one silently)."""
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; checkpoints are never overwritten silently "
                              "(pass overwrite=True to replace it, or use another step / run_name).")
    # a crash that skips the clean-up leaves a .tmp- folder: list_checkpoints ignores it, clean_incomplete removes it
    with atomic_folder(final, replace=overwrite, tmp_prefix=f"{TMP_PREFIX}{final.name}-") as tmp:
        yield tmp


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module inside DistributedDataParallel/DataParallel/torch.compile wrappers (same state_dict keys)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def is_complete(path: str | os.PathLike, kind: str | None = None) -> bool:
    """A UNet folder is complete when it holds config.json + diffusion_pytorch_model.safetensors; a state folder
    when it holds the marker ``complete.json``."""
    path = Path(path)
    kind = kind or path.name.split("_", 1)[0]
    if kind == "unet":
        return (path / "config.json").is_file() and (path / "diffusion_pytorch_model.safetensors").is_file()
    if kind == "state":
        return (path / MARKER_NAME).is_file()
    return False


# --------------------------------------------------------------------------------------------------- UNet
@contextmanager
def ema_weights(model: torch.nn.Module, ema) -> Iterator[torch.nn.Module]:
    """Temporarily put the EMA (``diffusers.training_utils.EMAModel``) weights into ``model``; the trained weights
    come back exactly on exit. ``ema=None`` leaves the model as it is."""
    if ema is None:
        yield model
        return
    params = list(model.parameters())
    ema.store(params)
    ema.copy_to(params)
    try:
        yield model
    finally:
        ema.restore(params)


def save_unet(run_dir: str | os.PathLike, step: int, unet, *, scheduler_config: dict | None = None,
              meta: dict | None = None, ema=None, overwrite: bool = False) -> Path:
    """Write ``run_dir/ckpt/unet_<step>/`` atomically and return it.

    Holds ``unet.save_pretrained(..., safe_serialization=True)`` (config.json + diffusion_pytorch_model.safetensors:
    ``UNet2DConditionModel.from_pretrained(folder)`` loads it), ``scheduler_config.json`` when ``scheduler_config``
    is given (diffusers format, via :func:`helpers.schedule.save_scheduler_config`) and ``workbook.json`` =
    ``meta`` + ``{"step": step}`` (the training loop writes: ema, profile, text_encoder, vae, vae_subfolder, resolution,
    run_name). ``ema``: an EMAModel whose weights are written instead of the live ones (``meta["ema"]`` becomes
    True; the live weights are restored exactly). Raises FileExistsError if the folder exists, unless
    ``overwrite=True``.
    """
    step = int(step)
    unet = _unwrap(unet)
    final = _ckpt_dir(run_dir) / f"unet_{step}"
    info = {**(meta or {}), "step": step}
    if ema is not None:
        info["ema"] = True
    with _atomic_folder(final, overwrite) as tmp:
        with ema_weights(unet, ema):
            unet.save_pretrained(tmp, safe_serialization=True)
        if scheduler_config is not None:
            save_scheduler_config(dict(scheduler_config), tmp)
        _write_json(tmp / META_NAME, info)
    return final


def read_meta(unet_dir: str | os.PathLike) -> dict:
    """``workbook.json`` of a UNet checkpoint ({} for a foreign folder without one)."""
    path = Path(unet_dir) / META_NAME
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------- state
def _rng_state(generators: dict[str, torch.Generator] | None) -> dict:
    import numpy as np

    state: dict[str, Any] = {"torch_cpu": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        state["torch_mps"] = torch.mps.get_rng_state()
    if generators:
        state["generators"] = {str(k): g.get_state() for k, g in generators.items()}
    return state


def _restore_rng(state: dict, generators: dict[str, torch.Generator] | None) -> None:
    import warnings

    import numpy as np

    torch.set_rng_state(state["torch_cpu"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    cuda = state.get("torch_cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(f"The checkpoint holds the RNG states of {len(cuda)} CUDA device(s), this machine has "
                          f"{torch.cuda.device_count()}: CUDA RNG states not restored.", stacklevel=3)
    if state.get("torch_mps") is not None and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["torch_mps"])
    _restore_generators(state, generators)


def _restore_generators(state: dict, generators: dict[str, torch.Generator] | None) -> None:
    import warnings

    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if str(name) in saved:
            gen.set_state(saved[str(name)])
        else:
            warnings.warn(f"The checkpoint holds no state for generator {name!r}; left as it is.", stacklevel=3)


def save_state(run_dir: str | os.PathLike, step: int, *, model: torch.nn.Module, optimizer=None, lr_scheduler=None,
               ema=None, rng: bool | None = True, extra: dict | None = None,
               generators: dict[str, torch.Generator] | None = None, overwrite: bool = False) -> Path:
    """Write ``run_dir/ckpt/state_<step>/`` (everything for an exact resume, see the module docstring); atomic.

    - ``model``: its ``state_dict()`` (wrappers such as DDP or torch.compile are unwrapped).
    - ``optimizer``: any torch optimizer (AdamW plain/foreach/fused): tensors incl. the ``step`` tensors in
      ``optimizer.safetensors``, param_groups and number-valued state in ``optimizer.json``.
    - ``lr_scheduler``: ``state_dict()`` as JSON (``LambdaLR`` from diffusers.optimization: the lambdas are code,
      rebuilt by the caller; only counters and base LRs are state).
    - ``ema``: a ``diffusers.training_utils.EMAModel``.
    - ``rng``: True saves torch CPU/CUDA/MPS, python ``random`` and numpy global RNG states; None/False saves none.
    - ``generators``: extra ``torch.Generator`` objects by name (e.g. the data/noise generator of the loop).
    - ``extra``: anything else (step, epoch, data position, config...), returned by :func:`load_state`.

    Under ``accelerate``/DDP call it on the main process only (the RNG states saved are that process's).
    Raises FileExistsError if the folder exists, unless ``overwrite=True``.
    """
    step = int(step)
    model = _unwrap(model)
    final = _ckpt_dir(run_dir) / f"state_{step}"
    with _atomic_folder(final, overwrite) as tmp:
        files = []
        tensors: dict[str, torch.Tensor] = {}
        ptrs: set = set()
        for key, value in model.state_dict().items():
            _encode(value, key, tensors, ptrs)
        _save_tensors(tmp / "model.safetensors", tensors)
        files.append("model.safetensors")
        if optimizer is not None:
            files += _save_tree(tmp, "optimizer", optimizer.state_dict())
        if lr_scheduler is not None:
            files += _save_tree(tmp, "lr_scheduler", lr_scheduler.state_dict())
        if ema is not None:
            files += _save_tree(tmp, "ema", ema.state_dict())
        if rng or generators:
            state = _rng_state(generators) if rng else {"generators": {str(k): g.get_state()
                                                                        for k, g in generators.items()}}
            files += _save_tree(tmp, "rng", state)
        files += _save_tree(tmp, "extra", {**(extra or {})})
        _write_json(tmp / MARKER_NAME, {
            "format": FORMAT, "step": step, "files": files, "torch": torch.__version__,
            "optimizer": type(optimizer).__name__ if optimizer is not None else None,
            "lr_scheduler": type(lr_scheduler).__name__ if lr_scheduler is not None else None,
            "ema": ema is not None, "rng": bool(rng), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return final


def load_state(path: str | os.PathLike, *, model: torch.nn.Module, optimizer=None, lr_scheduler=None, ema=None,
               restore_rng: bool = True, generators: dict[str, torch.Generator] | None = None) -> dict:
    """Restore a ``state_<step>`` folder into existing objects and return its ``extra`` dict.

    Build the model, the optimizer (over the same parameters, in the same order), the LR scheduler and the EMA
    exactly as for a fresh run, then call this: the weights, AdamW moments and step counters, scheduler counters,
    EMA shadow weights and (``restore_rng``) the global RNG states and the named ``generators`` come back
    bit-for-bit, so training continues exactly as if it had never stopped. Objects passed as None are skipped;
    an object passed whose state the checkpoint lacks raises :class:`CheckpointError`.
    """
    import warnings

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a checkpoint folder")
    if not (path / MARKER_NAME).is_file():
        raise CheckpointError(f"{path} is incomplete (no {MARKER_NAME}): its save was interrupted. Resume from "
                              "an earlier state (helpers.checkpoints.latest_state picks only complete ones).")
    model = _unwrap(model)
    state_dict = _load_tensors(path / "model.safetensors")
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}/model.safetensors does not fit this model: {err}") from err

    def part(name: str, obj) -> Any:
        present = (path / f"{name}.json").is_file()
        if obj is None:
            if present and name != "rng":
                warnings.warn(f"{path} holds a {name} state that is not restored (none was passed).", stacklevel=3)
            return None
        if not present:
            raise CheckpointError(f"{path} holds no {name} state, but one was passed to load_state")
        return _load_tree(path, name)

    opt_state = part("optimizer", optimizer)
    if opt_state is not None:
        try:
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"The optimizer state in {path} does not fit this optimizer: {err}") from err
    sched_state = part("lr_scheduler", lr_scheduler)
    if sched_state is not None:
        lr_scheduler.load_state_dict(sched_state)
    ema_state = part("ema", ema)
    if ema_state is not None:
        shadow = ema_state.get("shadow_params")
        if shadow is not None:
            current = list(ema.shadow_params)
            if len(shadow) != len(current):
                raise CheckpointError(f"The EMA in {path} has {len(shadow)} tensors, this one {len(current)}")
            ema_state["shadow_params"] = [s.to(device=c.device, dtype=c.dtype) for s, c in zip(shadow, current)]
        ema.load_state_dict(ema_state)
    if restore_rng or generators:
        if (path / "rng.json").is_file():
            state = _load_tree(path, "rng")
            if restore_rng and "torch_cpu" in state:
                _restore_rng(state, generators)
            else:
                _restore_generators(state, generators)
        elif generators:
            raise CheckpointError(f"{path} holds no RNG/generator states")
    return _load_tree(path, "extra") if (path / "extra.json").is_file() else {}


# --------------------------------------------------------------------------------------------------- listing
def list_checkpoints(run_dir: str | os.PathLike, kind: str = "unet") -> list[tuple[int, Path]]:
    """Complete ``unet_<step>`` (or ``state_<step>``) folders of a run as (step, path), sorted by step.

    Temporary folders of a save in progress or interrupted (``.tmp-...``) and incomplete folders are ignored.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be 'unet' or 'state', not {kind!r}")
    folder = _ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^{kind}_(\d+)$")
    found = []
    for entry in folder.iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_dir() and is_complete(entry, kind):
            found.append((int(m.group(1)), entry))
    return sorted(found)


def latest_state(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``state_<step>`` folder, or None."""
    found = list_checkpoints(run_dir, "state")
    return found[-1][1] if found else None


def latest_unet(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``unet_<step>`` folder, or None."""
    found = list_checkpoints(run_dir, "unet")
    return found[-1][1] if found else None


class NoCheckpointError(FileNotFoundError):
    """The run has no UNet checkpoint yet. In a notebook it shows only its message (no traceback) and stops the
    run of the following cells, as any error does."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [str(self)]


def require_checkpoint(run_dir: str | os.PathLike, checkpoint: str | os.PathLike = "latest") -> Path:
    """The UNet checkpoint to use: ``"latest"`` = the newest complete ``ckpt/unet_<step>/`` of ``run_dir``, or the
    folder given (as it is, or relative to ``run_dir``: ``"ckpt/unet_2000"``). Raises :class:`NoCheckpointError`
    ("run notebook 04 first") when the run has none, or when the folder given is in neither place."""
    if str(checkpoint) != "latest":
        for folder in (Path(checkpoint), Path(run_dir) / checkpoint):
            if folder.is_dir():
                return folder
        raise NoCheckpointError(f"No checkpoint folder {checkpoint} (neither as it is nor in {run_dir}): pick one of "
                                f"{[p.name for _, p in list_checkpoints(run_dir, 'unet')] or 'none yet'}, e.g. "
                                "ckpt/unet_<step>, or 'latest'.")
    found = latest_unet(run_dir)
    if found is None:
        raise NoCheckpointError(
            f"No UNet checkpoint in {_ckpt_dir(run_dir)} yet: run notebook 04 (training) first with the same "
            "profile, run_name and outputs_dir, or set `checkpoint` to a unet_<step> folder. Stopping here.")
    return found


def prune(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` (>= 1) complete ``unet_`` and ``state_`` checkpoints (each kind
    counted on its own, so the newest of each always stays). Returns the removed folders."""
    keep_last = int(keep_last)
    if keep_last < 1:
        raise ValueError("keep_last must be >= 1 (the newest checkpoint is never removed)")
    removed = []
    for kind in _KINDS:
        for _, path in list_checkpoints(run_dir, kind)[:-keep_last]:
            _discard(path)
            removed.append(path)
    return removed


def clean_incomplete(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders an interrupted save or prune left in ``ckpt/``; returns them.

    Call it when a run starts (not while another process is saving into the same run).
    """
    folder = _ckpt_dir(run_dir)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(TMP_PREFIX):
            if entry.is_dir():
                _remove_tree(entry)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
