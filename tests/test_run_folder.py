"""helpers.training.run_folder: one trainer per run folder (a real second process), the resume policy, metrics.jsonl.

Under DDP only the main process takes the lock: tests/test_train_ddp.py trains two processes in one run folder
(were the lock taken by every rank, the second would refuse).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import checkpoints
from helpers.training import run_folder
from helpers.training.run_folder import RunFolderError, RunLock
from helpers.training import train
from test_train import config, make_cache

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------- the lock
def test_a_second_lock_refuses_at_once_naming_the_holder_and_the_way_out(tmp_path):
    run = tmp_path / "run"
    with RunLock(run) as first:
        assert first.held and run_folder.lock_holder(run)["pid"] == os.getpid()
        with pytest.raises(RunFolderError) as err:
            RunLock(run).acquire()
        message = str(err.value)
        for part in (str(run), f"pid {os.getpid()}", socket.gethostname(), "since", "Wait for it", "run_name"):
            assert part in message, (part, message)
    assert run_folder.lock_holder(run) is None  # released: the holder's note is gone
    with pytest.raises(RuntimeError, match="boom"), RunLock(run):
        raise RuntimeError("boom")
    RunLock(run).acquire().release()  # an exception in the block released it too


WORKER = r'''
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from helpers.training import train
from test_train import config, make_cache

tmp, ready = Path(sys.argv[2]), Path(sys.argv[3])

def hold_after_the_first_save(event):
    if event.kind == "save" and event.step == 1:
        ready.write_text(str(os.getpid()))
        while True:  # a slow trainer: it holds the run folder until it is killed
            time.sleep(0.05)

train(config(tmp, "shared", max_steps=3, save_freq=1), make_cache(), callback=hold_after_the_first_save)
'''


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 240.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"the first trainer never reached its first save (rc {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.1)


@pytest.mark.timeout(300)  # a second trainer that waited for the lock instead of refusing would hang here
def test_a_second_trainer_refuses_while_another_process_trains_and_resumes_once_it_died(tmp_path):
    script, ready = tmp_path / "worker.py", tmp_path / "ready"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script), str(REPO / "tests"), str(tmp_path), str(ready)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, proc)
        pid = int(ready.read_text())
        run = tmp_path / "shared"
        # the first trainer holds the folder (and waits forever): a waiting second trainer would hang this test
        with pytest.raises(RunFolderError, match=rf"{run}.*pid {pid} on {socket.gethostname()}.*another run_name"):
            train(config(tmp_path, "shared", max_steps=3, save_freq=1, resume="latest"), make_cache())
        assert run_folder.read_metrics(run)[-1]["step"] == 1  # the refusal wrote nothing
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: the OS releases the lock
        proc.communicate()
    resumed = train(config(tmp_path, "shared", max_steps=3, save_freq=1, resume="latest"), make_cache())
    assert resumed.start_step == 1 and resumed.step == 3 and resumed.finished
    assert [r["step"] for r in run_folder.read_metrics(run)] == [1, 2, 3]


# --------------------------------------------------------------------------------------------------- resume policy
def fake_checkpoint(run: Path, kind: str, step: int) -> Path:
    """A state written by helpers.checkpoints.save_state (a one-weight model: resume='latest' verifies it), or a
    UNet folder that list_checkpoints counts as complete (its files are empty)."""
    if kind == "state":
        return checkpoints.save_state(run, step, model=torch.nn.Linear(1, 1), rng=None)
    folder = run / "ckpt" / f"{kind}_{step}"
    folder.mkdir(parents=True)
    for name in ["config.json", "diffusion_pytorch_model.safetensors"]:
        (folder / name).write_text("{}")
    return folder


def write_metrics(run: Path, steps) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for step in steps:
        run_folder.append_metrics(run, {"step": step, "loss": 1.0 / step})


def test_resolve_resume_refuses_to_mix_runs_and_finds_the_latest_state(tmp_path):
    run = tmp_path / "run"
    assert run_folder.resolve_resume(None, run) is None  # an empty (or missing) folder: a fresh run
    write_metrics(run, [1, 2])
    with pytest.raises(RunFolderError, match="metrics of an earlier run"):
        run_folder.resolve_resume(None, run)
    fake_checkpoint(run, "state", 2)
    state_4 = fake_checkpoint(run, "state", 4)
    with pytest.raises(RunFolderError, match=r"checkpoints at steps \[2, 4\].*resume='latest'"):
        run_folder.resolve_resume(None, run)
    assert run_folder.resolve_resume("latest", run) == state_4
    assert run_folder.resolve_resume("LATEST", tmp_path / "empty") is None
    with pytest.raises(FileNotFoundError, match="no such state folder"):
        run_folder.resolve_resume(str(tmp_path / "nowhere"), run)


def test_a_resume_never_overwrites_later_states_nor_branches_into_a_used_folder(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    state_2 = fake_checkpoint(run, "state", 2)
    fake_checkpoint(run, "state", 4)
    with pytest.raises(RunFolderError, match=r"states after step 2 \(\[4\]\).*would overwrite"):
        run_folder.check_resume_target(run, state_2, 2)
    run_folder.check_resume_target(run, run / "ckpt" / "state_4", 4)  # the latest: fine
    run_folder.check_resume_target(other, state_2, 2)  # branching into an empty folder: fine
    fake_checkpoint(other, "state", 1)
    with pytest.raises(RunFolderError, match="belongs to another run folder"):
        run_folder.check_resume_target(other, state_2, 2)


def test_continuing_drops_what_was_written_after_the_state(tmp_path):
    run = tmp_path / "run"
    unet_2 = fake_checkpoint(run, "unet", 2)
    unet_4 = fake_checkpoint(run, "unet", 4)  # written just before a crash, without its state
    write_metrics(run, [1, 2, 3, 4])
    with open(run / run_folder.METRICS_NAME, "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')  # a line cut by the crash
    assert [r["step"] for r in run_folder.read_metrics(run)] == [1, 2, 3, 4]
    assert run_folder.drop_after(run, 2, verbose=False) == unet_2
    assert not unet_4.exists() and unet_2.exists()
    assert [r["step"] for r in run_folder.read_metrics(run)] == [1, 2]
    run_folder.start_fresh(run, verbose=False)
    assert not unet_2.exists() and run_folder.read_metrics(run) == []


def test_a_different_config_is_refused_by_name(tmp_path):
    cfg = config(tmp_path)
    saved = cfg.to_dict()
    run_folder.check_same_config(cfg, {**saved, "max_steps": 99, "eval_freq": 7, "sample_scheduler": "euler"}, "s")
    with pytest.raises(RunFolderError, match=r"lr: checkpoint 0\.01, now 0\.001.*start another run_name"):
        run_folder.check_same_config(cfg, {**saved, "lr": 0.01}, "s")


def test_sample_grids_are_listed_by_step(tmp_path):
    samples = tmp_path / "run" / "samples"
    samples.mkdir(parents=True)
    for name in ("step_10.png", "step_2.png", "step_x.png", "other.png"):
        (samples / name).write_bytes(b"")
    assert [s for s, _ in run_folder.sample_grids(tmp_path / "run")] == [2, 10]
