"""The CUDA path of training and sampling: ``pytest -m cuda`` on a machine with an NVIDIA GPU (skipped elsewhere).

Every speed lever on (the latent cache in GPU memory, no host synchronisation per step, channels_last,
``torch.compile``, bf16 autocast, fused AdamW, flash attention), the tiny UNet on a small random cache:
the loop trains, saves loadable checkpoints and resumes; the GPU cache draws the same kind of batches as the CPU
one; a step synchronises nothing with the host; a NaN stops the run at the next check; bf16 sampling agrees with
fp32; every attention layer runs on flash attention. ``benchmarks/gpu_check.sh`` runs these first.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from test_train import PoisonedCache, config, make_cache

from helpers import checkpoints
from helpers.training.run_folder import RunFolderError, read_metrics
from helpers.training import NonFiniteLossError, TrainEvent, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m cuda)")]

ALL_LEVERS = dict(device="cuda", mixed_precision="bf16", cache_on_device=True, channels_last=True,
                  check_every_step=False)


@pytest.fixture(scope="module")
def cache():
    return make_cache(n=64)


def cuda_config(tmp_path: Path, name: str, **overrides):
    return config(tmp_path, name, **{**ALL_LEVERS, **overrides})


def test_train_with_every_lever_saves_and_resumes(tmp_path, cache):
    from diffusers import UNet2DConditionModel

    events: list[TrainEvent] = []
    kwargs = dict(max_steps=4, save_freq=2, log_every=2, batch_size=8, grad_accum=2, compile=True)
    first = train(cuda_config(tmp_path, "levers", **kwargs), cache, callback=events.append)
    assert first.finished and len(first.losses) == 4 and all(math.isfinite(x) for x in first.losses)
    assert first.compile_s is not None and first.compile_s > 0
    start = events[0].metrics
    assert start["speed_levers"] == {"cache_on_device": True, "channels_last": True, "compile": True,
                                     "check_every_step": False} and start["mixed_precision"] == "bf16"
    assert [r["step"] for r in read_metrics(first.run_dir)] == [2, 4]
    unet = UNet2DConditionModel.from_pretrained(first.checkpoint)  # EMA weights, loadable anywhere
    assert all(torch.isfinite(p).all() for p in unet.parameters())
    resumed = train(cuda_config(tmp_path, "levers", resume="latest", **{**kwargs, "max_steps": 6}), cache)
    assert resumed.start_step == 4 and resumed.step == 6 and len(resumed.losses) == 2
    assert all(math.isfinite(x) for x in resumed.losses)
    assert [s for s, _ in checkpoints.list_checkpoints(resumed.run_dir, "state")] == [2, 4, 6]
    # auto on CUDA: the same levers without asking (compile stays off unless asked)
    auto_events: list[TrainEvent] = []
    auto = train(config(tmp_path, "auto", device="cuda", max_steps=2, save_freq=2, log_every=2), cache,
                 callback=auto_events.append)
    assert auto.finished and auto_events[0].kind == "start"
    assert auto_events[0].metrics["speed_levers"] == {"cache_on_device": True, "channels_last": True,
                                                      "compile": False, "check_every_step": False}


def _check_batch(cache, latents: torch.Tensor, text: torch.Tensor, idx: torch.Tensor) -> tuple[float, float]:
    """Every latent is its image's (or its flip's) cached mean + std x noise, every text embedding one of its
    captions or ""; returns the share of flipped and of dropped captions."""
    lat = latents.float().cpu() / cache.scaling_factor
    mean, mean_flip = cache.mean[idx].float(), cache.mean_flip[idx].float()
    limit = 8 * cache.std[idx].float().amax(dim=(1, 2, 3)) + 1e-2
    d_plain = (lat - mean).abs().amax(dim=(1, 2, 3))
    d_flip = (lat - mean_flip).abs().amax(dim=(1, 2, 3))
    assert bool(((d_plain <= limit) | (d_flip <= limit)).all())
    text = text.float().cpu()
    emb = cache.text_emb.float()
    dropped = 0
    for j, i in enumerate(idx.tolist()):
        allowed = [c for c in cache.caption_ids[i].tolist() if c >= 0] + [cache.empty_index]
        match = [c for c in allowed if torch.equal(text[j], emb[c])]
        assert match, f"sample {j}: not an embedding of one of its captions"
        dropped += match[0] == cache.empty_index
    return float((d_flip < d_plain).float().mean()), dropped / len(idx)


def test_the_gpu_cache_draws_the_same_kind_of_batches(cache):
    gpu = cache.to("cuda")
    assert gpu.device.type == "cuda" and cache.device.type == "cpu"
    idx = torch.arange(cache.n_images).repeat(8)  # 512 draws
    for source, gen in ((cache, torch.Generator().manual_seed(0)),
                        (gpu, torch.Generator(device="cuda").manual_seed(0))):
        latents, text = source.batch(idx.to(source.device), gen, flip_p=0.5, caption_dropout=0.1)
        assert latents.device.type == source.device.type and latents.dtype == text.dtype == torch.float32
        assert latents.shape == (len(idx), *cache.latent_shape) and text.shape == (len(idx), 77, cache.hidden_size)
        flipped, dropped = _check_batch(cache, latents, text, idx)
        assert 0.4 < flipped < 0.6 and 0.04 < dropped < 0.18, (source.device, flipped, dropped)


def test_a_training_step_does_not_synchronise_with_the_host(cache):
    from helpers.training import build_train_parts, draw_batch, train_step
    from helpers.training.step import DataOrder

    cfg = cuda_config(Path("unused"), "sync", batch_size=8, grad_accum=2)
    parts = build_train_parts(cfg, cache.latent_shape, cache.hidden_size, "cuda")
    gpu, gen = cache.to("cuda"), torch.Generator(device="cuda").manual_seed(0)
    order = DataOrder(cache.n_images, 0, torch.device("cuda"))
    epoch = pos = 0

    def step():
        nonlocal epoch, pos
        idx, epoch, pos = order.next(16, epoch, pos)
        batch = draw_batch(gpu, gen, idx, 1000, flip_p=0.5, caption_dropout=0.1)
        return train_step(parts, batch, cfg, finite_check=False)

    step()  # first calls: lazy initialisation, cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = step()  # raises on any host synchronisation (.item(), a blocking copy, ...)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert stats.loss.device.type == "cuda" and math.isfinite(stats.loss.item())


def test_a_nan_stops_the_run_at_the_next_check(tmp_path, cache):
    cfg = cuda_config(tmp_path, "nan", max_steps=12, save_freq=4, log_every=4, check_every_step=None,
                      cache_on_device=False)  # PoisonedCache is no LatentCache: drawn on the CPU
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6 .*Found at step 8.*steps 5\.\.8 were "
                                                 r"applied.*state_4"):
        train(cfg, PoisonedCache(cache, bad_call=6))
    run = Path(cfg.run_dir)
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [4]


def test_a_nan_in_the_gpu_cache_run_stops_too(tmp_path, cache, monkeypatch):
    from helpers.training import losses

    real, calls = losses.diffusion_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 6 else loss  # one call per step (no accumulation)

    monkeypatch.setattr(losses, "diffusion_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"at step 6 .*Found at step 8.*steps 5\.\.8"):
        train(cuda_config(tmp_path, "nan-gpu", max_steps=12, save_freq=4, log_every=10), cache)
    assert [s for s, _ in checkpoints.list_checkpoints(tmp_path / "nan-gpu", "state")] == [4]


def test_a_resume_on_the_other_generator_refuses(tmp_path, cache):
    train(cuda_config(tmp_path, "gen", max_steps=2, save_freq=2, cache_on_device=False), cache)
    with pytest.raises(RunFolderError, match="drawn on the CPU.*cache_on_device=False"):
        train(cuda_config(tmp_path, "gen", max_steps=3, resume="latest", cache_on_device=True), cache)


def test_bf16_sampling_agrees_with_fp32():
    from helpers.generation import sample_latents
    from helpers.schedule import default_scheduler_config, sampling_scheduler
    from helpers.unet import build_unet

    unet = build_unet("tiny", cross_attention_dim=32, sample_size=8, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(4, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    kw = dict(guidance_scale=3.0, steps=10, progress=False)
    fp32 = sample_latents(unet, sampling_scheduler("ddim", default_scheduler_config()), cond, uncond, [0, 1, 2, 3],
                          **kw)  # on the CPU: float32
    unet.to("cuda", memory_format=torch.channels_last)
    bf16 = sample_latents(unet, sampling_scheduler("ddim", default_scheduler_config()), cond, uncond, [0, 1, 2, 3],
                          **kw).cpu()  # on CUDA: bf16 autocast
    rel = float((bf16 - fp32).norm() / fp32.norm())
    assert 0 < rel < 5e-2, rel


def test_every_attention_layer_of_the_reference_unet_runs_on_flash_attention():
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from helpers.unet import unet_config

    with torch.device("cuda"):
        unet = UNet2DConditionModel(**unet_config("reference", cross_attention_dim=512, sample_size=32)).eval()
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    x = torch.randn(2, 4, 32, 32, device="cuda")
    text = torch.randn(2, 77, 512, device="cuda")
    t = torch.tensor([10, 500], device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = unet(x, t, encoder_hidden_states=text).sample  # raises if a layer cannot use flash attention
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
