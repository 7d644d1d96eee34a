"""Saving, loading, listing and pruning a run's checkpoints (the layout: :mod:`helpers.checkpoints`)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from helpers.paths import atomic_folder
from helpers.schedule import save_scheduler_config

from . import integrity
from .codec import encode, load_tensors, load_tree, save_tensors, save_tree, write_json
from .integrity import (DAMAGED_STATE_FIX, DAMAGED_UNET_FIX, HASH_NAME, MARKER_NAME, TMP_PREFIX, CheckpointDamagedError,
                        CheckpointError, CheckpointStatus, check_space, check_unet_checkpoint, disk_errors,
                        is_complete, needed_bytes, raise_if_damaged, record_files, remember, tensor_bytes,
                        verify_checkpoint)

__all__ = [
    "save_unet", "save_state", "load_state", "list_checkpoints", "latest_state", "latest_unet", "require_checkpoint",
    "NoCheckpointError", "prune", "clean_incomplete", "read_meta", "ema_weights", "checkpoint_statuses",
    "latest_intact_state", "resume_state", "set_aside", "CKPT_DIR", "META_NAME",
]

CKPT_DIR = "ckpt"
META_NAME = "workbook.json"
FORMAT = "helpers.checkpoints/2"  # /2: the marker holds "digests" (and UNet folders have a marker)
_KINDS = ("unet", "state")


# --------------------------------------------------------------------------------------------------- marker
def _write_marker(folder: Path, info: dict) -> None:
    """Write the marker ``complete.json``, last: ``info`` + size and digest of every file."""
    write_json(folder / MARKER_NAME, {**info, "hash": HASH_NAME, "digests": record_files(folder)})


def _resume_hint(run_dir: str | os.PathLike, hint: str | None) -> str:
    if hint:
        return hint
    state = latest_state(run_dir)
    return (f"The run can resume from {state} (resume='latest')." if state is not None
            else "No training state was saved yet: a new run starts from step 0.")


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
              meta: dict | None = None, ema=None, overwrite: bool = False, resume_hint: str | None = None) -> Path:
    """Write ``run_dir/ckpt/unet_<step>/`` atomically and return it.

    Holds ``unet.save_pretrained(..., safe_serialization=True)`` (config.json + diffusion_pytorch_model.safetensors:
    ``UNet2DConditionModel.from_pretrained(folder)`` loads it), ``scheduler_config.json`` when ``scheduler_config``
    is given (diffusers format, via :func:`helpers.schedule.save_scheduler_config`) and ``workbook.json`` =
    ``meta`` + ``{"step": step}`` (the training loop writes: ema, profile, text_encoder, vae, vae_subfolder, resolution,
    run_name). ``ema``: an EMAModel whose weights are written instead of the live ones (``meta["ema"]`` becomes
    True; the live weights are restored exactly) and, last, ``complete.json`` with every file's size and sha256.
    Raises FileExistsError if the folder exists, unless ``overwrite=True``; :class:`InsufficientSpaceError` before
    writing when the disk lacks room, :class:`CheckpointWriteError` on a disk error while writing (nothing partial
    left; ``resume_hint`` replaces the default "the run can resume from <latest state>").
    """
    step = int(step)
    unet = _unwrap(unet)
    final = _ckpt_dir(run_dir) / f"unet_{step}"
    info = {**(meta or {}), "step": step}
    if ema is not None:
        info["ema"] = True
    hint = _resume_hint(run_dir, resume_hint)
    check_space(final, needed_bytes(tensor_bytes(dict(unet.state_dict()))), hint)
    with disk_errors(final, hint), _atomic_folder(final, overwrite) as tmp:
        with ema_weights(unet, ema):
            unet.save_pretrained(tmp, safe_serialization=True)
        if scheduler_config is not None:
            save_scheduler_config(dict(scheduler_config), tmp)
        write_json(tmp / META_NAME, info)
        _write_marker(tmp, {"format": FORMAT, "kind": "unet", "step": step,
                            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    remember(final, CheckpointStatus(final, True))
    return final


def read_meta(unet_dir: str | os.PathLike) -> dict:
    """``workbook.json`` of a UNet checkpoint ({} for a foreign folder without one)."""
    path = Path(unet_dir) / META_NAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        warnings.warn(f"{path} is not valid JSON; ignoring it", stacklevel=2)
        return {}
    return meta if isinstance(meta, dict) else {}


# --------------------------------------------------------------------------------------------------- state
def _rng_state(generators: dict[str, torch.Generator] | None) -> dict:
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
    saved = state.get("generators") or {}
    for name, gen in (generators or {}).items():
        if str(name) in saved:
            gen.set_state(saved[str(name)])
        else:
            warnings.warn(f"The checkpoint holds no state for generator {name!r}; left as it is.", stacklevel=3)


def save_state(run_dir: str | os.PathLike, step: int, *, model: torch.nn.Module, optimizer=None, lr_scheduler=None,
               ema=None, rng: bool | None = True, extra: dict | None = None,
               generators: dict[str, torch.Generator] | None = None, overwrite: bool = False,
               resume_hint: str | None = None) -> Path:
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
    The marker ``complete.json``, written last, records every file's size and sha256. Raises FileExistsError if the
    folder exists, unless ``overwrite=True``; disk space and disk errors as :func:`save_unet`.
    """
    step = int(step)
    model = _unwrap(model)
    final = _ckpt_dir(run_dir) / f"state_{step}"
    parts = [model.state_dict()] + [o.state_dict() for o in (optimizer, ema) if o is not None]
    hint = _resume_hint(run_dir, resume_hint)
    check_space(final, needed_bytes(tensor_bytes(parts)), hint)
    del parts
    with disk_errors(final, hint), _atomic_folder(final, overwrite) as tmp:
        files = []
        tensors: dict[str, torch.Tensor] = {}
        ptrs: set = set()
        for key, value in model.state_dict().items():
            encode(value, key, tensors, ptrs)
        save_tensors(tmp / "model.safetensors", tensors)
        files.append("model.safetensors")
        if optimizer is not None:
            files += save_tree(tmp, "optimizer", optimizer.state_dict())
        if lr_scheduler is not None:
            files += save_tree(tmp, "lr_scheduler", lr_scheduler.state_dict())
        if ema is not None:
            files += save_tree(tmp, "ema", ema.state_dict())
        if rng or generators:
            state = _rng_state(generators) if rng else {"generators": {str(k): g.get_state()
                                                                        for k, g in generators.items()}}
            files += save_tree(tmp, "rng", state)
        files += save_tree(tmp, "extra", {**(extra or {})})
        _write_marker(tmp, {
            "format": FORMAT, "kind": "state", "step": step, "files": files, "torch": torch.__version__,
            "optimizer": type(optimizer).__name__ if optimizer is not None else None,
            "lr_scheduler": type(lr_scheduler).__name__ if lr_scheduler is not None else None,
            "ema": ema is not None, "rng": bool(rng), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return remember(final, CheckpointStatus(final, True)).path


def load_state(path: str | os.PathLike, *, model: torch.nn.Module, optimizer=None, lr_scheduler=None, ema=None,
               restore_rng: bool = True, generators: dict[str, torch.Generator] | None = None,
               verify: bool = True) -> dict:
    """Restore a ``state_<step>`` folder into existing objects and return its ``extra`` dict.

    Build the model, the optimizer (over the same parameters, in the same order), the LR scheduler and the EMA
    exactly as for a fresh run, then call this: the weights, AdamW moments and step counters, scheduler counters,
    EMA shadow weights and (``restore_rng``) the global RNG states and the named ``generators`` come back
    bit-for-bit, so training continues exactly as if it had never stopped. Objects passed as None are skipped;
    an object passed whose state the checkpoint lacks raises :class:`CheckpointError`. ``verify``: check the files
    against their digests first (:func:`verify_checkpoint`; :class:`CheckpointDamagedError` names a damaged file).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a checkpoint folder")
    if not (path / MARKER_NAME).is_file():
        raise CheckpointError(f"{path} is incomplete (no {MARKER_NAME}): its save was interrupted. Resume from "
                              "an earlier state (helpers.checkpoints.latest_state picks only complete ones).")
    if verify:
        raise_if_damaged(verify_checkpoint(path, "state"), DAMAGED_STATE_FIX)
    model = _unwrap(model)
    state_dict = load_tensors(path / "model.safetensors")
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
        return load_tree(path, name)

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
            state = load_tree(path, "rng")
            if restore_rng and "torch_cpu" in state:
                _restore_rng(state, generators)
            else:
                _restore_generators(state, generators)
        elif generators:
            raise CheckpointError(f"{path} holds no RNG/generator states")
    return load_tree(path, "extra") if (path / "extra.json").is_file() else {}


# --------------------------------------------------------------------------------------------------- listing
def list_checkpoints(run_dir: str | os.PathLike, kind: str = "unet", *,
                     verify: bool = False) -> list[tuple[int, Path]]:
    """Complete ``unet_<step>`` (or ``state_<step>``) folders of a run as (step, path), sorted by step.

    Temporary folders of a save in progress or interrupted (``.tmp-...``) and incomplete folders are ignored;
    ``verify=True`` leaves out damaged ones too (:func:`checkpoint_statuses` says why).
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
    return sorted(s for s in found if not verify or verify_checkpoint(s[1], kind).ok)


def checkpoint_statuses(run_dir: str | os.PathLike, kind: str = "unet") -> list[tuple[int, Path, CheckpointStatus]]:
    """Every complete checkpoint of a kind with its :func:`verify_checkpoint` verdict, sorted by step (for the
    picker: show the damaged ones as damaged, never select them)."""
    return [(step, path, verify_checkpoint(path, kind)) for step, path in list_checkpoints(run_dir, kind)]


def latest_state(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``state_<step>`` folder, or None (not verified: see :func:`latest_intact_state`)."""
    found = list_checkpoints(run_dir, "state")
    return found[-1][1] if found else None


def latest_unet(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``unet_<step>`` folder, or None (not verified)."""
    found = list_checkpoints(run_dir, "unet")
    return found[-1][1] if found else None


def latest_intact_state(run_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest state folder that passes :func:`verify_checkpoint` (None: none does) and the newer damaged ones
    skipped on the way, newest first, as (folder, what is wrong)."""
    skipped = []
    for _, path in reversed(list_checkpoints(run_dir, "state")):
        status = verify_checkpoint(path, "state")
        if status.ok:
            return path, skipped
        skipped.append((path, status.problem))
    return None, skipped


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint to ``damaged-<name>`` beside it (no listing picks it; delete it to free space)."""
    path = Path(path)
    target = path.with_name(f"damaged-{path.name}")
    if target.exists():
        target = path.with_name(f"damaged-{path.name}-{uuid.uuid4().hex[:6]}")
    os.replace(path, target)
    integrity.forget(path)
    return target


def resume_state(run_dir: str | os.PathLike, *, move_damaged: bool = True,
                 log: Callable[[str], None] = print) -> Path | None:
    """The state ``resume='latest'`` continues from: the newest intact one (None: the run has no state).

    Damaged newer states are named with what is wrong, and (``move_damaged``, main process only) renamed to
    ``damaged-state_<step>`` so that later checks see no state after the resumed one; ``log`` says which state
    the run continues from and how many steps it trains again. Raises :class:`CheckpointDamagedError` when the
    run has states but none is intact.
    """
    path, skipped = latest_intact_state(run_dir)
    if not skipped:
        return path
    newest = int(skipped[0][0].name.split("_", 1)[1])
    lines = [f"Damaged training state: {why}." for _, why in skipped]
    if path is None:
        raise CheckpointDamagedError(
            " ".join(lines) + f" No intact training state is left in {_ckpt_dir(run_dir)}: restore the state "
            "folders from a copy, or start again (delete the run folder or pass another run_name; its unet_<step> "
            "folders stay usable for generation).")
    moved = [set_aside(p) for p, _ in skipped] if move_damaged else []
    step = int(path.name.split("_", 1)[1])
    lines.append(f"Resuming from the newest intact state {path} instead (step {step}): steps {step + 1}..{newest} "
                 f"({newest - step} steps) are trained again.")
    if moved:
        lines.append(f"The damaged folders were renamed to {', '.join(m.name for m in moved)}; delete them to free "
                     "the space.")
    log("\n".join(lines))
    return path


class NoCheckpointError(FileNotFoundError):
    """The run has no UNet checkpoint yet. In a notebook it shows only its message (no traceback) and stops the
    run of the following cells, as any error does."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [str(self)]


def require_checkpoint(run_dir: str | os.PathLike, checkpoint: str | os.PathLike = "latest") -> Path:
    """The UNet checkpoint to use, verified (:func:`check_unet_checkpoint`): ``"latest"`` = the newest intact
    ``ckpt/unet_<step>/`` of ``run_dir`` (damaged newer ones are named and skipped), or the folder given (as it is,
    or relative to ``run_dir``: ``"ckpt/unet_2000"``; :class:`CheckpointDamagedError` if it is damaged). Raises
    :class:`NoCheckpointError` ("run notebook 04 first") when the run has none, or when the folder given is in
    neither place."""
    if str(checkpoint) != "latest":
        for folder in (Path(checkpoint), Path(run_dir) / checkpoint):
            if folder.is_dir():
                unet = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
                if is_complete(unet, "unet"):  # foreign folders: helpers.generation.sampling explains them
                    check_unet_checkpoint(unet)
                return folder
        raise NoCheckpointError(f"No checkpoint folder {checkpoint} (neither as it is nor in {run_dir}): pick one of "
                                f"{[p.name for _, p in list_checkpoints(run_dir, 'unet')] or 'none yet'}, e.g. "
                                "ckpt/unet_<step>, or 'latest'.")
    found = checkpoint_statuses(run_dir, "unet")
    if not found:
        raise NoCheckpointError(
            f"No UNet checkpoint in {_ckpt_dir(run_dir)} yet: run notebook 04 (training) first with the same "
            "profile, run_name and outputs_dir, or set `checkpoint` to a unet_<step> folder. Stopping here.")
    damaged = [st.problem for _, _, st in found if not st.ok]
    intact = [(path, st) for _, path, st in found if st.ok]
    if not intact:
        raise CheckpointDamagedError(f"Every UNet checkpoint of {run_dir} is damaged: {'; '.join(damaged)}. Copy "
                                     "them again from a backup, or train again (notebook 04).")
    path, status = intact[-1]
    if found[-1][1] != path:
        print(f"Skipping damaged UNet checkpoints ({'; '.join(d for d in damaged)}): using {path}.")
    return raise_if_damaged(status, DAMAGED_UNET_FIX).path


def prune(run_dir: str | os.PathLike, keep_states: int | None = 2, keep_unets: int | None = None) -> list[Path]:
    """Delete old checkpoints; returns the removed folders. The training loop calls it after the new state is
    complete (after :func:`save_state` returned), never before.

    Keeps the newest ``keep_states`` state folders (None: all) and the newest ``keep_unets`` UNet folders (None:
    all, the default). The newest intact state (what a resume needs) always stays: when the kept ones are all
    damaged, the newest intact older one is kept too.
    """
    for name, n in (("keep_states", keep_states), ("keep_unets", keep_unets)):
        if n is not None and int(n) < 1:
            raise ValueError(f"{name} must be None or >= 1 (the newest checkpoint is never removed)")
    removed: list[Path] = []
    states = list_checkpoints(run_dir, "state")
    if keep_states is not None and len(states) > int(keep_states):
        old = [p for _, p in states[:-int(keep_states)]]
        if not any(verify_checkpoint(p, "state").ok for _, p in states[-int(keep_states):]):
            intact = next((p for p in reversed(old) if verify_checkpoint(p, "state").ok), None)
            old = [p for p in old if p != intact]
        removed += old
    if keep_unets is not None:
        removed += [p for _, p in list_checkpoints(run_dir, "unet")[:-int(keep_unets)]]
    for path in removed:
        _discard(path)
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
