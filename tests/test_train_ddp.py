"""helpers.training under DDP: ``accelerate launch --multi_gpu --num_processes 2`` on CPU (gloo).

Two processes train the tiny UNet on a real (tiny) latent cache, stop, resume and train on; every process writes a
digest of its final weights. The ranks must agree, the checkpoint must load, and the result must equal a
single-process run with the same global batch (batch 2 x 2 processes x 2 accumulation = batch 2 x 4 accumulation):
each rank trains on its shard of the same global batch.

On CPU, accelerate's ``--cpu`` flag starts ONE process; ``--multi_gpu`` is the flag that makes it spawn
``--num_processes`` workers (torch.distributed.run), which then use gloo when there is no GPU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import checkpoints
from helpers.training import TrainConfig, train

REPO = Path(__file__).resolve().parent.parent

WORKER = r'''
import hashlib, json, os, sys
import torch
from helpers.training import TrainConfig
from helpers.training.cli import run

config = TrainConfig.load(sys.argv[1])
out = sys.argv[2]
first = run(TrainConfig.from_dict({**config.to_dict(), "max_steps": 2}))          # stop after 2 steps ...
second = run(TrainConfig.from_dict({**config.to_dict(), "resume": "latest"}))     # ... resume to max_steps
digest = hashlib.sha256()
for name, tensor in sorted(second.unet.state_dict().items()):
    digest.update(name.encode())
    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
rank = int(os.environ.get("RANK", "0"))
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")), "sha256": digest.hexdigest(),
               "first_step": first.step, "step": second.step, "start_step": second.start_step,
               "losses": second.losses}, f)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_cache(root: Path, text_encoder_dir: Path, vae_dir: Path):
    """8 generated sprites at 32 px encoded with the tiny BERT + tiny VAE of conftest (16x16x4 latents)."""
    from helpers.frozen.cache import build_cache
    from helpers.data import load_train_set
    from helpers.demo.dataset import make_demo_dataset
    from helpers.frozen import FrozenModels, load_text_encoder, load_vae
    from helpers.profiles import Profile

    data = make_demo_dataset(root / "data", n_species=2, n_frames=1, size=32)
    profile = Profile(name="demo", smoke=True, reason="test", data_dir=data, outputs_dir=root / "outputs",
                      resolution=32, text_encoder=str(text_encoder_dir), vae=str(vae_dir), vae_subfolder=None,
                      unet_preset="tiny", device="cpu")
    frozen = FrozenModels(load_text_encoder(text_encoder_dir), load_vae(vae_dir), profile)
    return build_cache(load_train_set(data, verbose=False, progress=False), frozen, profile), profile


@pytest.mark.timeout(300)
def test_two_process_ddp_agrees_resumes_and_matches_one_process(tmp_path, tiny_bert_dir, tiny_vae_dir):
    cache_dir, profile = _tiny_cache(tmp_path, tiny_bert_dir, tiny_vae_dir)
    cfg = TrainConfig.for_profile(profile, run_name="ddp", max_steps=4, batch_size=2, grad_accum=2, save_freq=2,
                                  eval_freq=0, sample_prompts=[], mixed_precision="no", cache_dir=str(cache_dir),
                                  device="cpu", lr=1e-3, warmup_steps=1)
    path = cfg.save(tmp_path / "config.json")
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(tmp_path / "worker.py"), str(path), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]  # both ranks hold the same weights
    assert [(r["first_step"], r["start_step"], r["step"]) for r in ranks] == [(2, 2, 4)] * 2
    assert ranks[0]["losses"] == ranks[1]["losses"]  # the loss is all-reduced: one number for all

    run = Path(cfg.run_dir)
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [2, 4]
    from diffusers import UNet2DConditionModel

    UNet2DConditionModel.from_pretrained(run / "ckpt" / "unet_4")  # the checkpoint loads
    assert json.loads((run / "ckpt" / "state_4" / "extra.json").read_text())["world_size"] == 2

    # one process, same global batch (2 x 4 accumulation), same two phases: the same weights
    torch.set_num_threads(1)
    single = TrainConfig.from_dict({**cfg.to_dict(), "run_dir": str(tmp_path / "single"), "grad_accum": 4})
    from helpers.frozen.cache import load_cache

    cache = load_cache(cache_dir)
    train(TrainConfig.from_dict({**single.to_dict(), "max_steps": 2}), cache=cache)
    one = train(TrainConfig.from_dict({**single.to_dict(), "resume": "latest"}), cache=cache)
    ddp_w, one_w = load_file(str(run / "ckpt" / "state_4" / "model.safetensors")), load_file(
        str(one.state / "model.safetensors"))
    for k in ddp_w:
        torch.testing.assert_close(ddp_w[k], one_w[k], atol=2e-5, rtol=0)
    for a, b in zip(ranks[0]["losses"], one.losses):
        assert a == pytest.approx(b, rel=1e-5)
