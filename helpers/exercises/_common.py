"""What the chapter checks share: the workbook's noise schedule and random latent-shaped cases."""

from __future__ import annotations

import functools

import torch

from helpers.schedule import default_scheduler_config, sampling_scheduler, training_scheduler
from .core import Case

#: Latent shapes [B, C, h, w] the checks draw from (B never equals w, so a missing reshape of a [B] tensor raises).
SHAPES = ((2, 4, 8, 8), (3, 4, 5, 7), (5, 4, 4, 6), (1, 4, 16, 16))


@functools.lru_cache(maxsize=None)
def noise_scheduler():
    """The workbook's training ``DDPMScheduler`` (default config), built once."""
    return training_scheduler(default_scheduler_config())


def alphas_cumprod() -> torch.Tensor:
    """``alphas_cumprod`` [1000] of the workbook's schedule (a copy: float32, as the scheduler holds it)."""
    return noise_scheduler().alphas_cumprod.clone()


def scheduler_for(alphas_cumprod: torch.Tensor):
    """The training scheduler, with ``alphas_cumprod`` swapped in when it is not the workbook's own."""
    sched = noise_scheduler()
    ac = torch.as_tensor(alphas_cumprod)
    if ac.shape == sched.alphas_cumprod.shape and torch.equal(ac.float().cpu(), sched.alphas_cumprod):
        return sched
    other = training_scheduler(default_scheduler_config())
    other.alphas_cumprod = ac.float().cpu()
    return other


def ddim(prediction_type: str, steps: int):
    """A DDIM sampler of the workbook's schedule with ``set_timesteps(steps)`` done."""
    sched = sampling_scheduler("ddim", default_scheduler_config(prediction_type))
    sched.set_timesteps(steps)
    return sched


def per_sample(ac: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``ac[t]`` reshaped to broadcast over ``like`` [B, ...] (for the mistakes' formulas)."""
    return ac.to(like.device)[t].to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def latent_cases(seed: int, n_inputs: int = 2, extra_t: tuple[int, ...] = (0, 999)) -> list[Case]:
    """One case per shape of :data:`SHAPES`: ``n_inputs`` random tensors of the shape, ``alphas_cumprod`` and
    random timesteps ``t`` [B] (the first case holds ``extra_t``, the ends of the schedule)."""
    g = torch.Generator().manual_seed(seed)
    ac = alphas_cumprod()
    cases = []
    for i, shape in enumerate(SHAPES):
        tensors = [torch.randn(shape, generator=g) for _ in range(n_inputs)]
        t = torch.randint(0, 1000, (shape[0],), generator=g)
        if i == 0:
            t[:len(extra_t)] = torch.tensor(extra_t[:shape[0]])
        cases.append(Case((*tensors, ac, t), f"tensors of shape {shape}, t = {t.tolist()}"))
    return cases
