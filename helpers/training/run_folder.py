"""The run folder ``outputs/<run_name>/`` of a training run: who may write it, what a resume continues from, and
its ``metrics.jsonl`` and sample grids.

- **One trainer per run folder.** While :func:`helpers.training.train` holds a run folder it holds ``<run>/.lock``
  (an OS file lock: released on exit, on an exception and when the process dies) and describes itself in
  ``<run>/.lock.json`` (pid, host, start time). A second trainer refuses at once with a :class:`RunFolderError`
  naming the holder.
- **Resume policy.** ``resume=None`` refuses a folder that already holds a run; ``"latest"`` continues from the
  newest complete ``ckpt/state_<step>/`` (or starts afresh when there is none); a state folder continues from it.
  A resume never overwrites later states, never branches into a folder that holds another run's states, and
  drops what was written after the state it continues from (UNet checkpoints without a state, metrics lines).
- ``metrics.jsonl``: one JSON object per logged step (:func:`read_metrics`); ``samples/step_<step>.png``: the
  sample grids (:func:`sample_grids`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate.utils import broadcast_object_list
from filelock import FileLock, Timeout

from helpers import checkpoints
from helpers.paths import atomic_write

from .config import RESUME_MAY_CHANGE, TrainConfig

__all__ = ["RunFolderError", "RunLock", "holding", "lock_holder", "resolve_resume", "check_same_config",
           "check_resume_target", "drop_after", "start_fresh", "MetricsWindow", "append_metrics", "read_metrics",
           "sample_grids", "METRICS_NAME", "LOCK_NAME", "HOLDER_NAME"]

METRICS_NAME = "metrics.jsonl"
LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"


class RunFolderError(RuntimeError):
    """The run folder holds another run (or a different config, or another trainer) and the loop refuses to mix."""


# --------------------------------------------------------------------------------------------------- the lock
def lock_holder(run_dir: str | os.PathLike) -> dict | None:
    """What ``<run>/.lock.json`` says about the trainer holding the run folder (pid, host, since), or None."""
    try:
        return json.loads((Path(run_dir) / HOLDER_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class RunLock:
    """The lock of one run folder: ``with RunLock(run_dir): ...`` (or :meth:`acquire` / :meth:`release`).

    :meth:`acquire` never waits: when another process (or another ``RunLock`` in this one) holds the folder it
    raises :class:`RunFolderError` naming the folder, the holder and what to do.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_NAME), timeout=0)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderError(_busy_message(self.run_dir, lock_holder(self.run_dir))) from None
        try:
            atomic_write(self.run_dir / HOLDER_NAME, json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S%z")}))
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        if self.held:
            (self.run_dir / HOLDER_NAME).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def holding(run_dir: str | os.PathLike, accelerator=None) -> Iterator[None]:
    """Hold the lock of ``run_dir`` for the block. Under DDP (``accelerator``: an ``accelerate.Accelerator``) only
    the main process takes it, and when it is taken every process raises the same :class:`RunFolderError`."""
    lock = RunLock(run_dir)
    refusal = None
    if accelerator is None or accelerator.is_main_process:
        try:
            lock.acquire()
        except RunFolderError as err:
            refusal = str(err)
    if accelerator is not None and accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal is not None:
        raise RunFolderError(refusal)
    try:
        yield
    finally:
        lock.release()


def _busy_message(run_dir: Path, holder: dict | None) -> str:
    if holder:
        who = f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}"
        stop = f"stop it (interrupt its notebook kernel, or `kill {holder.get('pid')}` on {holder.get('host')})"
    else:
        who, stop = "a process that has not described itself yet", "stop it"
    return (f"{run_dir} is being trained by another process ({who}); two trainers in one run folder would mix "
            f"their checkpoints and metrics. Wait for it to finish, {stop}, or pass another run_name.")


# --------------------------------------------------------------------------------------------------- resume policy
def resolve_resume(resume: str | os.PathLike | None, run_dir: str | os.PathLike, *,
                   move_damaged: bool = True) -> Path | None:
    """The state folder a run continues from (None: a fresh run) for ``resume`` = None, "latest" or a folder.

    ``resume=None`` refuses (RunFolderError) when ``run_dir`` already holds checkpoints or metrics. "latest" is
    the newest *intact* state (:func:`helpers.checkpoints.resume_state`: damaged newer ones are named and, with
    ``move_damaged`` (the main process), renamed aside). A folder given is verified when it is loaded.
    """
    run_dir = Path(run_dir)
    if resume is None:
        states = checkpoints.list_checkpoints(run_dir, kind="state")
        unets = checkpoints.list_checkpoints(run_dir, kind="unet")
        if states or unets:
            raise RunFolderError(
                f"{run_dir} already holds a training run (checkpoints at steps "
                f"{sorted({s for s, _ in states + unets})}). Pass resume='latest' to continue it, or another "
                f"run_name to start a new run; delete the folder to start over.")
        if (run_dir / METRICS_NAME).exists():
            raise RunFolderError(
                f"{run_dir} holds the metrics of an earlier run that saved no checkpoint. Pass resume='latest' "
                "(which starts afresh when there is no checkpoint) or another run_name.")
        return None
    if str(resume).lower() == "latest":
        return checkpoints.resume_state(run_dir, move_damaged=move_damaged)
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={str(resume)!r}: no such state folder. Pass resume='latest' or a "
                                f"folder like {run_dir / checkpoints.CKPT_DIR / 'state_500'}.")
    return path


def check_same_config(config: TrainConfig, saved: dict, resume_path: str | os.PathLike) -> None:
    """Refuse (RunFolderError) to continue the state ``resume_path``, saved with config ``saved``, with a ``config``
    that differs in a field that changes what the weights become."""
    diffs = config.differences(saved)
    if diffs:
        lines = "; ".join(f"{k}: checkpoint {b!r}, now {a!r}" for k, (a, b) in sorted(diffs.items()))
        raise RunFolderError(
            f"Cannot resume {resume_path} with a different config ({lines}). Resume with the same settings "
            f"(only {', '.join(sorted(RESUME_MAY_CHANGE - {'resume'}))} may change) or start another run_name.")


def check_resume_target(run_dir: str | os.PathLike, resume_path: Path, step: int) -> None:
    """Refuse (RunFolderError) a resume from ``resume_path`` (at ``step``) that would overwrite later states of
    ``run_dir`` or branch another run's state into a folder that already holds states."""
    run_dir = Path(run_dir)
    here = [s for s, _ in checkpoints.list_checkpoints(run_dir, kind="state")]
    if Path(resume_path).resolve().parent.parent != run_dir.resolve():
        if here:
            raise RunFolderError(
                f"resume={str(resume_path)!r} belongs to another run folder, and {run_dir} already holds "
                f"checkpoints ({here}): pass a new run_name to branch off {resume_path}.")
    elif any(s > step for s in here):
        raise RunFolderError(
            f"{run_dir} holds states after step {step} ({[s for s in here if s > step]}): resuming from "
            f"{resume_path} would overwrite them. Resume from 'latest', delete the later checkpoints, or pass "
            "another run_name.")


def drop_after(run_dir: str | os.PathLike, step: int, *, verbose: bool = True) -> Path | None:
    """Before continuing at ``step``: remove UNet checkpoints after it (written just before a crash, without their
    state: they will be written again) and the metrics lines after it. Returns the UNet checkpoint of ``step``."""
    run_dir = Path(run_dir)
    current = None
    for s, path in checkpoints.list_checkpoints(run_dir, kind="unet"):
        if s == step:
            current = path
        elif s > step:
            if verbose:
                print(f"Removing {path}: it was written after the last complete training state (step {step}).")
            shutil.rmtree(path, ignore_errors=True)
    _truncate_metrics(run_dir / METRICS_NAME, step)
    return current


def start_fresh(run_dir: str | os.PathLike, *, verbose: bool = True) -> None:
    """A fresh run in ``run_dir`` (resume='latest' with no complete state): drop old metrics and UNet checkpoints
    without a training state (they cannot be resumed from)."""
    run_dir = Path(run_dir)
    (run_dir / METRICS_NAME).unlink(missing_ok=True)
    for _, path in checkpoints.list_checkpoints(run_dir, kind="unet"):
        if verbose:
            print(f"Removing {path}: a UNet checkpoint without a training state cannot be resumed from.")
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- metrics, samples
def append_metrics(run_dir: str | os.PathLike, record: dict) -> None:
    """Append one record (a JSON line) to ``<run_dir>/metrics.jsonl``."""
    with open(Path(run_dir) / METRICS_NAME, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


class MetricsWindow:
    """The losses since the last ``metrics.jsonl`` line (``losses``) and the clock of the training session."""

    def __init__(self, global_batch: int, elapsed_before: float) -> None:
        self.global_batch, self.elapsed_before = global_batch, elapsed_before
        self.t_session = self.t_window = time.perf_counter()
        self.losses: list[float] = []

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_session

    def record(self, step: int, lr: float, grad_norm: float, epoch: int) -> dict:
        """The metrics line of ``step`` (mean loss and samples/s since the last one); starts a new window."""
        now = time.perf_counter()
        rec = {"step": step, "loss": sum(self.losses) / len(self.losses), "lr": lr, "grad_norm": grad_norm,
               "samples_per_s": len(self.losses) * self.global_batch / max(now - self.t_window, 1e-9),
               "elapsed": self.elapsed_before + now - self.t_session, "epoch": epoch}
        self.t_window, self.losses = now, []
        return rec


def _records(lines: Iterable[str]) -> Iterable[tuple[str, dict]]:
    for line in lines:
        try:
            yield line, json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the metrics lines of steps <= ``last_step`` (steps after the resumed checkpoint are redone)."""
    if not path.exists():
        return
    keep = [line for line, rec in _records(path.read_text(encoding="utf-8").splitlines())
            if rec.get("step", 0) <= last_step]
    atomic_write(path, "".join(line + "\n" for line in keep))


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``<run_dir>/metrics.jsonl`` (one per logged step)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    return [rec for _, rec in _records(path.read_text(encoding="utf-8").splitlines())]


def sample_grids(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the sample grids ``samples/step_<step>.png`` of a run, by step."""
    out = []
    for p in (Path(run_dir) / "samples").glob("step_*.png"):
        try:
            out.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)
