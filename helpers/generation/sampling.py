"""Sampling: batched classifier-free guidance along the noise schedule, with a seed per image.

Classifier-free guidance (CFG) runs the UNet on the unconditional and the conditional embeddings and moves the
prediction away from the unconditional one: ``eps = eps_uncond + g * (eps_cond - eps_uncond)``. Here both halves go
through ONE batched UNet call per step (``torch.cat([uncond, cond])``), not two calls as the course's sample code did.

Every image has its own ``torch.Generator`` seeded with its seed; its initial noise (and the noise of stochastic
samplers such as DDPM) is drawn from that generator only, so image ``i`` generated alone equals image ``i`` generated
inside a batch (up to the last bits of the batched matrix products, see :func:`sample_latents`).
"""

from __future__ import annotations

import inspect
import math
from contextlib import nullcontext
from typing import Sequence

import torch
from PIL import Image
from helpers.progress import tqdm

from helpers.frozen import decode_latents
from helpers.schedule import SAMPLER_NAMES

__all__ = ["sample_latents", "apply_guidance", "latent_shape_of", "decode_to_pil", "initial_noise", "default_batch_size", "SAMPLER_NAMES"]


# --------------------------------------------------------------------------------------------------- core sampling
def latent_shape_of(unet) -> tuple[int, int, int]:
    """``(C, h, w)`` of the latents a UNet denoises (its config's ``in_channels`` and ``sample_size``)."""
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(unet.config.in_channels), int(h), int(w))


#: Images per UNet call when none is given: a GPU is only busy with large batches (each call holds 2 x this many
#: latents with guidance; the reference UNet at 32x32 latents needs ~25 MB per image in bf16 inference). A CPU gains
#: less, but still some: the demo UNet denoises 32 guided images faster in one call than in four calls of 8
#: (``benchmarks/cpu_threads.py``).
DEFAULT_BATCH_SIZE = {"cuda": 128, "cpu": 32}


def default_batch_size(device: torch.device | str) -> int:
    """Images per UNet call for ``device``: :data:`DEFAULT_BATCH_SIZE` (32 on anything but CUDA)."""
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cpu"])


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def initial_noise(seeds: Sequence[int], latent_shape: Sequence[int], *, generator_device: str = "cpu"
                  ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Unit Gaussian noise [B, *latent_shape], image i drawn from its own generator seeded with ``seeds[i]``.

    Returns the noise and the generators (their state has moved past the noise; stochastic samplers draw from them).
    """
    gens = [torch.Generator(generator_device).manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *latent_shape), generator=g, device=generator_device) for g in gens])
    return noise, gens


def apply_guidance(pred_uncond: torch.Tensor, pred_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: move the prediction away from the unconditional one by ``scale``
    (``scale`` 1 gives the conditional prediction, 0 the unconditional one)."""
    return pred_uncond + scale * (pred_cond - pred_uncond)


@torch.inference_mode()
def sample_latents(unet, scheduler, cond_emb: torch.Tensor, uncond_emb: torch.Tensor, seeds: Sequence[int], *,
                   guidance_scale: float = 7.5, steps: int = 50, latent_shape: Sequence[int] | None = None,
                   batch_size: int | None = None, progress: bool = True, generator_device: str = "cpu",
                   ) -> torch.Tensor:
    """Sample scaled latents [B, C, h, w] with classifier-free guidance (one batched UNet call per step).

    - ``cond_emb`` [B, L, D]: one text embedding per image; ``uncond_emb`` [1 or B, L, D]: the encoding of "".
    - ``seeds``: one per image. Image i starts from noise drawn by ``torch.Generator(generator_device)
      .manual_seed(seeds[i])``, scaled by ``scheduler.init_noise_sigma``; stochastic steps (DDPM, ancestral
      samplers) get the list of per-image generators, so they stay per image too.
    - ``guidance_scale`` 1.0 skips the unconditional half (plain conditional sampling, half the work).
    - ``batch_size`` images per chunk (default: all); each chunk restarts ``scheduler.set_timesteps``.
    - On CUDA the UNet runs under bf16 autocast; the scheduler arithmetic stays float32.

    Batch independence: the noise and the scheduler steps are exactly per image, but a batched UNet call may
    differ from an unbatched one in the last bits (the matrix-product kernels depend on the batch size), so "the
    same image alone and in a batch" agree to ~1e-6 relative (max |diff| ~5e-5 on latents of size ~50 in the
    tests), not bit for bit. Decoded to 8-bit pixels they are the same picture (0-1 levels apart at most).
    """
    seeds = [int(s) for s in seeds]
    n = cond_emb.shape[0]
    if len(seeds) != n:
        raise ValueError(f"got {n} conditional embeddings but {len(seeds)} seeds: give one seed per image")
    if uncond_emb.shape[0] not in (1, n):
        raise ValueError(f"uncond_emb must have batch size 1 or {n}, not {uncond_emb.shape[0]}")
    if uncond_emb.shape[1:] != cond_emb.shape[1:]:
        raise ValueError(f"uncond_emb {tuple(uncond_emb.shape)} and cond_emb {tuple(cond_emb.shape)} differ in [L, D]")
    cross = getattr(unet.config, "cross_attention_dim", None)
    if isinstance(cross, int) and cond_emb.shape[-1] != cross:
        raise ValueError(f"the text embeddings have size {cond_emb.shape[-1]} but the UNet's cross_attention_dim is "
                         f"{cross}: use the text encoder the UNet was trained with")
    latent_shape = tuple(latent_shape) if latent_shape is not None else latent_shape_of(unet)
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    batch_size = max(1, int(batch_size or n))
    do_cfg = float(guidance_scale) != 1.0
    step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    out = []
    n_chunks = math.ceil(n / batch_size)
    bar = tqdm(total=n_chunks * steps, desc="sampling", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        idx = slice(start, min(n, start + batch_size))
        b = idx.stop - idx.start
        noise, gens = initial_noise(seeds[idx], latent_shape, generator_device=generator_device)
        scheduler.set_timesteps(steps, device=device)
        latents = noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma
        cond = cond_emb[idx].to(device=device, dtype=dtype)
        if do_cfg:
            unc = uncond_emb.to(device=device, dtype=dtype)
            unc = unc.expand(b, -1, -1) if unc.shape[0] == 1 else unc[idx]
            emb = torch.cat([unc, cond])
        else:
            emb = cond
        extra = {"generator": gens} if step_takes_generator else {}
        for t in scheduler.timesteps:
            x = torch.cat([latents, latents]) if do_cfg else latents
            x = scheduler.scale_model_input(x, t).to(dtype)
            with _autocast(device):
                pred = unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
            pred = pred.float()
            if do_cfg:
                pred = apply_guidance(*pred.chunk(2), guidance_scale)  # [uncond | cond] halves
            latents = scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
            bar.update(1)
        out.append(latents)
    bar.close()
    return torch.cat(out)


def _to_pil(images: torch.Tensor) -> list:
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


@torch.inference_mode()
def decode_to_pil(vae, latents_scaled: torch.Tensor, batch_size: int = 8) -> list:
    """Decode scaled latents to RGB PIL images (``helpers.frozen.decode_latents`` in chunks of ``batch_size``)."""
    images = []
    for start in range(0, latents_scaled.shape[0], max(1, batch_size)):
        images += _to_pil(decode_latents(vae, latents_scaled[start:start + batch_size]))
    return images
