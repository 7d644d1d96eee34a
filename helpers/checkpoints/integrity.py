"""Is a checkpoint intact, and is there room to write one: digests, verification, disk-space and disk errors.

:mod:`helpers.checkpoints` writes the marker ``complete.json`` last, with the size and sha256 of every file
(:func:`record_files`); :func:`verify_checkpoint` checks them before a resume or a load, so that a damaged file is
named instead of loaded. A save checks the free space first (:func:`check_space`) and turns a disk error part-way
through into :class:`CheckpointWriteError` (:func:`disk_errors`), whose message says which state the run can resume
from.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError

__all__ = [
    "CheckpointError", "CheckpointDamagedError", "CheckpointWriteError", "InsufficientSpaceError", "CheckpointStatus",
    "MARKER_NAME", "UNET_WEIGHTS", "HASH_NAME", "is_complete", "file_digest", "record_files", "verify_checkpoint",
    "check_unet_checkpoint", "check_space", "disk_errors",
]

MARKER_NAME = "complete.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
HASH_NAME = "sha256"  # hashlib; SHA-NI makes it the fastest stdlib hash here (benchmarks/checkpoint_hashing.py)
TMP_PREFIX = ".tmp-"  # the temporary sibling folder of a save in progress


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete, malformed, or does not fit the objects it is loaded into."""


class _MessageOnly:
    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"{type(self).__name__}: {self}"]


class CheckpointDamagedError(_MessageOnly, CheckpointError):
    """A checkpoint file is missing, truncated, unreadable or differs from its recorded digest (message: which)."""


class CheckpointWriteError(_MessageOnly, OSError):
    """A save failed on the disk (full, over quota, I/O error): nothing partial is left in place; the message says
    which checkpoint the run can resume from. ``errno`` is the disk error's."""

    def __init__(self, message: str, code: int = errno.EIO) -> None:
        super().__init__(code, message)

    def __str__(self) -> str:
        return str(self.strerror)


class InsufficientSpaceError(CheckpointWriteError):
    """Raised before a save starts when the disk has less free space than the save needs (errno ENOSPC)."""



# --------------------------------------------------------------------------------------------------- integrity
def is_complete(path: str | os.PathLike, kind: str | None = None) -> bool:
    """A state folder is complete when it holds the marker ``complete.json``; a UNet folder when it holds the
    marker too or (written before UNet folders had one) config.json + diffusion_pytorch_model.safetensors.
    Complete is not intact: :func:`verify_checkpoint` checks the files against the marker's digests."""
    path = Path(path)
    kind = kind or path.name.split("_", 1)[0]
    if kind == "unet":
        return (path / MARKER_NAME).is_file() or (
            (path / "config.json").is_file() and (path / UNET_WEIGHTS).is_file())
    if kind == "state":
        return (path / MARKER_NAME).is_file()
    return False


DAMAGED_STATE_FIX = ("Resume with resume='latest' (it continues from the newest intact state) or pass an earlier "
                      "state_<step> folder (helpers.checkpoints.checkpoint_statuses(run_dir, 'state') lists them).")
DAMAGED_UNET_FIX = ("Pick another unet_<step> folder (helpers.checkpoints.checkpoint_statuses(run_dir) lists them "
                     "with their status), or copy this one again from a backup.")
_VERIFIED: dict[str, tuple[tuple, "CheckpointStatus"]] = {}


def file_digest(path: str | os.PathLike, algorithm: str = HASH_NAME) -> str:
    """The hex digest of a file (default ``HASH_NAME``, sha256), read in 4 MiB blocks (~1.1 GB/s with SHA-NI)."""
    h = hashlib.new(algorithm)
    buf = bytearray(1 << 22)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    """Every file of a checkpoint folder (recursively) but its marker, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MARKER_NAME)


def _safetensors_problem(path: Path) -> str | None:
    """What is wrong with a .safetensors file's header or length (None: consistent); reads only the header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path} is truncated ({size} bytes: not even a safetensors header)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path} is truncated or its header is damaged (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        return f"{path} has an unreadable safetensors header ({type(err).__name__}: {err})"
    if 8 + n + end != size:
        return f"{path} is truncated: {size} bytes, its header describes {8 + n + end}"
    return None


def record_files(folder: Path) -> dict:
    """Size and digest of every file of ``folder`` (what the marker records), after checking each .safetensors
    file's length against its header (a short write the writer did not report becomes an OSError EIO here)."""
    digests = {}
    for path in _files(folder):
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else None
        if problem:
            raise OSError(errno.EIO, f"writing {path.name} failed silently: {problem}")
        digests[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, HASH_NAME: file_digest(path)}
    return digests


@dataclass(frozen=True)
class CheckpointStatus:
    """The verdict of :func:`verify_checkpoint`: ``ok``; ``problem`` (damaged: which file, what is wrong);
    ``note`` (ok but only partly checked: written before checkpoints recorded digests)."""

    path: Path
    ok: bool
    problem: str = ""
    note: str = ""

    @property
    def message(self) -> str:
        return self.problem or self.note or f"{self.path.name}: intact"


def _stat_key(folder: Path) -> tuple:
    return tuple((p.as_posix(), st.st_size, st.st_mtime_ns, st.st_ino)
                 for p in sorted(folder.rglob("*")) if p.is_file() and (st := p.stat()))


def remember(folder: Path, status: CheckpointStatus) -> CheckpointStatus:
    """Keep ``status`` as the verdict on ``folder`` while none of its files changes (a save remembers its own)."""
    _VERIFIED[str(folder.resolve())] = (_stat_key(folder), status)
    return status


def forget(folder: Path | None = None) -> None:
    """Drop the remembered verdict on ``folder`` (None: on every folder)."""
    if folder is None:
        _VERIFIED.clear()
    else:
        _VERIFIED.pop(str(Path(folder).resolve()), None)


def verify_checkpoint(path: str | os.PathLike, kind: str | None = None) -> CheckpointStatus:
    """Check a ``state_<step>`` or ``unet_<step>`` folder before use: every file the marker lists exists, has its
    size and its sha256 digest (a 3.9 GB state: ~3.5 s at 1.1 GB/s). Folders written before digests were recorded
    get ``ok`` with a ``note`` after a check of their files' presence, JSON and safetensors headers and lengths.
    Verdicts are remembered per process while no file's size, mtime or inode changes (a save remembers its own)."""
    path = Path(path)
    kind = kind or path.name.split("_", 1)[0]
    if not path.is_dir():
        return CheckpointStatus(path, False, f"{path} is missing or not a folder")
    hit = _VERIFIED.get(str(path.resolve()))
    if hit is not None and hit[0] == _stat_key(path):
        return hit[1]
    marker = path / MARKER_NAME
    if marker.is_file():
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            return remember(path, CheckpointStatus(path, False, f"{marker} cannot be read ({err})"))
        if isinstance(info.get("digests"), dict):
            return remember(path, _check_digests(path, info["digests"], info.get("hash", HASH_NAME)))
        names = list(info.get("files") or [])
    elif kind == "state":
        return CheckpointStatus(path, False, f"{path} has no {MARKER_NAME}: its save did not finish")
    else:
        names = ["config.json"] + [w for w in (UNET_WEIGHTS, "diffusion_pytorch_model.bin") if (path / w).is_file()]
    return remember(path, _check_legacy(path, names or ["config.json", UNET_WEIGHTS]))


def _check_digests(path: Path, digests: dict, hash_name: str) -> CheckpointStatus:
    for name, want in digests.items():
        file = path / name
        try:
            size = file.stat().st_size
            if size != want["bytes"]:
                what = "truncated" if size < want["bytes"] else "longer than written"
                return CheckpointStatus(path, False, f"{file} is {what}: {size} bytes, {want['bytes']} were written")
            if file_digest(file) != want[hash_name]:
                return CheckpointStatus(path, False, f"{file} differs from the {hash_name} digest recorded in "
                                                     f"{MARKER_NAME}: its bytes changed after it was written")
        except FileNotFoundError:
            return CheckpointStatus(path, False, f"{file} is missing")
        except OSError as err:
            return CheckpointStatus(path, False, f"{file} cannot be read ({err})")
    return CheckpointStatus(path, True)


def _check_legacy(path: Path, names: list[str]) -> CheckpointStatus:
    for name in names:
        file = path / name
        if not file.is_file():
            return CheckpointStatus(path, False, f"{file} is missing")
        problem = _safetensors_problem(file) if file.suffix == ".safetensors" else None
        if file.suffix == ".json":
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                problem = f"{file} cannot be read as JSON ({err})"
        if problem:
            return CheckpointStatus(path, False, problem)
    return CheckpointStatus(path, True, note=f"note: {path} was written before checkpoints recorded digests: its "
                                             "files' presence, headers and lengths were checked, not their contents.")


def raise_if_damaged(status: CheckpointStatus, fix: str) -> CheckpointStatus:
    if not status.ok:
        raise CheckpointDamagedError(f"Damaged checkpoint: {status.problem}. {fix}")
    if status.note:
        print(status.note)
    return status


def check_unet_checkpoint(folder: str | os.PathLike) -> CheckpointStatus:
    """Verify a UNet folder before loading it for generation or export; raises :class:`CheckpointDamagedError`
    naming the file (prints the one-line note of a folder written before digests)."""
    return raise_if_damaged(verify_checkpoint(folder, "unet"), DAMAGED_UNET_FIX)


# --------------------------------------------------------------------------------------------------- disk space
def tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def needed_bytes(tensor_bytes: int) -> int:
    """Bytes a save of ``tensor_bytes`` of tensors writes: + 1 % and 4 MiB for headers and JSON files."""
    return int(tensor_bytes * 1.01) + (4 << 20)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"



_ADVICE = ("Free space on that disk, keep fewer training states (keep_states, default 2; helpers.checkpoints.prune"
           "(run_dir, keep_states=1) removes older ones now), or put the run on a disk with room (run_dir / "
           "outputs_dir).")


def check_space(final: Path, needed: int, hint: str) -> None:
    """Raise :class:`InsufficientSpaceError` before writing ``final`` when its disk has less than ``needed`` free."""
    probe = final.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise InsufficientSpaceError(
            f"Not enough disk space to save {final.name}: it needs about {_gb(needed)}, {probe} has {_gb(free)} "
            f"free. Nothing was written. {_ADVICE} {hint}", errno.ENOSPC)


_DISK_ERRNOS = {errno.ENOSPC, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}


@contextmanager
def disk_errors(final: Path, hint: str) -> Iterator[None]:
    """Turn a disk error (ENOSPC, EDQUOT, EIO) inside the block into a :class:`CheckpointWriteError`; wrap it
    around the atomic folder of the save, so that the temporary folder is gone when the message is written."""
    try:
        yield
    except CheckpointWriteError:
        raise
    except (OSError, SafetensorError) as err:
        os_err = err if isinstance(err, OSError) else os_error(err, final)
        if not isinstance(os_err, OSError) or os_err.errno not in _DISK_ERRNOS:
            raise
        left = [p.name for p in final.parent.glob(f"{TMP_PREFIX}{final.name}-*")] if final.parent.is_dir() else []
        what = (f"A temporary folder is left ({', '.join(left)}): clean_incomplete removes it when the run starts."
                if left else f"Nothing partial was left: {final} was not created.")
        reason = "the disk is full" if os_err.errno == errno.ENOSPC else os.strerror(os_err.errno or errno.EIO)
        raise CheckpointWriteError(
            f"Saving {final} failed: {reason} ({os_err}). {what} {_ADVICE} {hint}",
            os_err.errno or errno.EIO) from err



def os_error(err: Exception, path: Path) -> Exception:
    """An OSError with the errno a safetensors error carries in its text, else ``err`` itself."""
    m = re.search(r"(?:os error |code: )(\d+)", str(err))
    return OSError(int(m.group(1)), f"{err}", str(path)) if m else err
