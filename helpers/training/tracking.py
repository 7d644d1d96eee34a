"""Training you can watch in TensorBoard: ``TrainConfig.report_to="tensorboard"`` (accelerate's tracker).

The loop logs loss, learning rate and gradient norm at every ``log_every`` step and each sample grid to
``<run>/logs/<run_name>/`` through ``accelerate``'s ``TensorBoardTracker`` (as every diffusers training script does
with ``--report_to tensorboard``); ``metrics.jsonl`` stays the record the chapters read. A resumed run writes a new
event file in the same folder, opened with ``purge_step`` = the resumed step + 1, so TensorBoard drops what the
earlier session logged after that state and the curves continue as one. Open it offline with::

    %load_ext tensorboard
    %tensorboard --logdir runs/<run_name>/logs

or ``tensorboard --logdir runs`` in a terminal (all runs side by side).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["REPORT_TO", "LOGS_DIR", "CURVES", "logs_dir", "require_tracker", "accelerator_kwargs", "start_tracking",
           "log_scalars", "log_grid", "finish"]

REPORT_TO = (None, "tensorboard")  # what TrainConfig.report_to accepts
LOGS_DIR = "logs"  # under the run folder
CURVES = ("loss", "lr", "grad_norm", "samples_per_s")  # the metrics.jsonl fields logged as scalars


def logs_dir(run_dir: str | Path) -> Path:
    """The folder TensorBoard reads for a run: ``<run>/logs``."""
    return Path(run_dir) / LOGS_DIR


def require_tracker(report_to: str | None) -> None:
    """Fail at once (not after an hour of training) when the tracker's package is missing."""
    if report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ModuleNotFoundError(
            "report_to='tensorboard' needs the tensorboard package, which is not installed in this environment: "
            "run `make install` (it is in requirements.txt) or `pip install tensorboard`, or set report_to=None "
            "(metrics.jsonl and the live plot still record the run).")


def accelerator_kwargs(report_to: str | None, run_dir: str | Path) -> dict:
    """What ``Accelerator(...)`` needs to log to ``report_to`` under the run folder ({} for no tracker)."""
    if report_to is None:
        return {}
    require_tracker(report_to)
    return {"log_with": report_to, "project_dir": str(logs_dir(run_dir))}


def start_tracking(accelerator, config, start_step: int) -> None:
    """Open the tracker (main process only, as accelerate does): ``<run>/logs/<run_name>/``; a resume purges the
    events an earlier session logged after ``start_step``."""
    if config.report_to is None:
        return
    accelerator.init_trackers(config.run_name, init_kwargs={"tensorboard": {"purge_step": int(start_step) + 1}})


def log_scalars(accelerator, config, record: dict, step: int) -> None:
    """The curves of one ``metrics.jsonl`` record: loss, lr, grad_norm (None between checks) and samples/s."""
    if config.report_to is None:
        return
    values = {f"train/{k}": float(record[k]) for k in CURVES if record.get(k) is not None}
    accelerator.log(values, step=step)


def log_grid(accelerator, config, grid, step: int) -> None:
    """One sample grid (a PIL image) as the image ``samples`` at ``step``."""
    if config.report_to is None or not accelerator.is_main_process:
        return
    image = np.asarray(grid.convert("RGB"))[None]
    accelerator.get_tracker("tensorboard").log_images({"samples": image}, step=step, dataformats="NHWC")


def finish(accelerator) -> None:
    """Flush and close the trackers. (Not ``accelerator.end_training()``: that also destroys the process group,
    which the run folder's lock still uses under DDP and a second ``train`` call in the same process needs.)"""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()
