"""What a run will cost before it starts: steps, epochs over the cache, and minutes from a step timed on this machine.

::

    budget = measure_budget(config, cache, profile.device)   # times a few optimizer steps of this very config
    print(budget)                        # 800 steps x 16 images = 21.1 epochs of 608 images; ~0.21 s/step -> ~2.8 min
    config.max_steps = budget.steps_for(minutes=20)            # a budget in minutes instead of steps

The timed steps run on copies of the run's parts (UNet, AdamW, EMA) and draw their batches from their own generator,
so measuring changes nothing of the run itself. Sample grids and checkpoints come on top (a few seconds each on the
demo, more in the course).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch

from .config import TrainConfig
from .step import build_train_parts, draw_batch, synchronize, train_step

__all__ = ["Budget", "measure_budget"]


@dataclass(frozen=True)
class Budget:
    """The cost of ``steps`` optimizer steps of ``global_batch`` images over a cache of ``n_images``."""

    steps: int
    global_batch: int
    n_images: int
    seconds_per_step: float
    timed_steps: int

    @property
    def epochs(self) -> float:
        """How many times the run sees each cached image (on average)."""
        return self.steps * self.global_batch / max(1, self.n_images)

    @property
    def minutes(self) -> float:
        """Minutes of optimizer steps (sample grids and checkpoints not included)."""
        return self.steps * self.seconds_per_step / 60

    def steps_for(self, minutes: float) -> int:
        """The number of steps that fits ``minutes`` at the measured speed (at least 1)."""
        if minutes <= 0:
            raise ValueError(f"minutes must be positive, not {minutes}")
        return max(1, int(minutes * 60 / self.seconds_per_step))

    def __str__(self) -> str:
        return (f"{self.steps} steps x {self.global_batch} images = {self.epochs:.1f} epochs of {self.n_images} "
                f"cached images; ~{self.seconds_per_step:.2f} s/step on this machine (timed over "
                f"{self.timed_steps} steps) -> ~{self.minutes:.1f} min of training, plus sample grids and checkpoints")


def measure_budget(config: TrainConfig, cache, device, *, n_steps: int = 3) -> Budget:
    """Time ``n_steps`` optimizer steps of ``config`` (after one untimed warm-up step) on fresh parts; the median."""
    parts = build_train_parts(config, cache.latent_shape, cache.hidden_size, device)
    gen = torch.Generator(device=cache.device).manual_seed(12345)
    n = config.global_batch()
    times = []
    for i in range(n_steps + 1):
        batch = draw_batch(cache, gen, torch.randint(cache.n_images, (n,), generator=gen, device=cache.device),
                           parts.noise_scheduler.config.num_train_timesteps, flip_p=config.flip_p,
                           caption_dropout=config.caption_dropout, timestep_sampling=config.timestep_sampling,
                           timestep_loc=config.timestep_loc, timestep_scale=config.timestep_scale)
        synchronize(torch.device(device))
        start = time.perf_counter()
        train_step(parts, batch, config)
        synchronize(torch.device(device))
        if i:  # the first step pays for allocations and kernel choices
            times.append(time.perf_counter() - start)
    return Budget(config.max_steps, n, cache.n_images, statistics.median(times), n_steps)
