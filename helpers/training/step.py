"""One optimizer step of the training loop: the batch (:func:`draw_batch`), what a step needs
(:func:`build_train_parts`) and the step itself (:func:`train_step`). :mod:`helpers.training.loop` runs the loop around
it.

:func:`draw_batch` takes the next ``batch_size x processes x grad_accum`` images of a seeded per-epoch permutation
(:class:`DataOrder`) from the **latent cache** (a latent sampled from the cached mean/std of the image or its flip,
the embedding of one of its captions or, with probability ``caption_dropout``, of ""), then the noise and the
timesteps, all from ONE generator owned by the loop and for the whole global batch at once (so the samples do not
depend on how the batch is split, and a resumed run continues exactly). The generator and the batch live where
the cache is: the CPU, or the GPU for a cache in GPU memory (``cache_on_device``). :func:`train_step` trains on
this process's share: :func:`helpers.training.losses.diffusion_loss` per micro-batch, ``/ grad_accum``, backward,
clipping, AdamW (fused where supported), the LR schedule (warm-up, cosine), the EMA; it synchronises with the
host only for its optional finite check.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from torch import Tensor

from helpers.schedule import default_scheduler_config, training_scheduler
from helpers.unet import build_unet

from . import losses
from .config import TrainConfig, resolve_mixed_precision, resolve_speed_levers

__all__ = ["NonFiniteLossError", "Batch", "draw_batch", "DataOrder", "Position", "TrainParts", "build_train_parts",
           "StepStats", "train_step", "compiled_model", "synchronize"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or the gradient norm) became NaN/inf; nothing of that step was applied or saved.

    ``what`` ("loss" or "gradient norm") and ``value`` say which number it was.
    """

    def __init__(self, message: str, *, what: str = "loss", value: float = float("nan")) -> None:
        super().__init__(message)
        self.what, self.value = what, value


# --------------------------------------------------------------------------------------------------- one batch
@dataclass
class Batch:
    """One global batch drawn from the latent cache (or a slice of it), where the cache is (CPU or GPU)."""

    latents: Tensor  # [B, C, h, w] scaled x0
    text: Tensor  # [B, 77, D] text embeddings (caption dropout applied)
    noise: Tensor  # [B, C, h, w]
    timesteps: Tensor  # [B] long

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(self.latents[start:stop], self.text[start:stop], self.noise[start:stop],
                     self.timesteps[start:stop])

    def to(self, device, memory_format: torch.memory_format = torch.preserve_format) -> Batch:
        """On ``device`` (nothing is copied when it is there already); ``memory_format`` for the 4-d latents and
        noise (``torch.channels_last`` for a channels_last UNet)."""
        return Batch(self.latents.to(device, non_blocking=True, memory_format=memory_format),
                     self.text.to(device, non_blocking=True),
                     self.noise.to(device, non_blocking=True, memory_format=memory_format),
                     self.timesteps.to(device, non_blocking=True))


def draw_batch(cache, generator: torch.Generator, indices: Tensor, num_train_timesteps: int, *, flip_p: float,
               caption_dropout: float, timestep_sampling: str = "uniform", timestep_loc: float = 0.0,
               timestep_scale: float = 1.0) -> Batch:
    """The batch of ``indices``: latents and caption embeddings from the cache, then the noise, then the timesteps
    (:func:`helpers.training.losses.sample_timesteps`), all drawn from ``generator`` in this order (what makes a resumed run
    continue bit for bit), on the generator's device (the cache's: the CPU, or the GPU for a cache in GPU memory)."""
    latents, text = cache.batch(indices, generator, flip_p=flip_p, caption_dropout=caption_dropout)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device)
    timesteps = losses.sample_timesteps(len(latents), num_train_timesteps, generator, sampling=timestep_sampling,
                                        loc=timestep_loc, scale=timestep_scale)
    return Batch(latents, text, noise, timesteps)


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch), the same on every process."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2 ** 63))
    return torch.randperm(n, generator=g)


class DataOrder:
    """The seeded epoch permutations of ``n`` images, one epoch at a time on ``device`` (one copy per epoch, none
    per step): the same order on every process and device."""

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.seed, self.device = n, seed, device
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            perm = _epoch_permutation(self.n, self.seed, epoch)
            if self.device.type == "cuda":  # from pinned memory: an asynchronous copy, the host does not wait
                perm = perm.pin_memory().to(self.device, non_blocking=True)
            self._epoch, self._perm = epoch, perm.to(self.device)
        return self._perm

    def next(self, count: int, epoch: int, pos: int) -> tuple[Tensor, int, int]:
        """The next ``count`` indices from (epoch, pos); returns them and the new (epoch, pos)."""
        out = []
        while count > 0:
            take = min(count, self.n - pos)
            out.append(self.permutation(epoch)[pos:pos + take])
            pos += take
            count -= take
            if pos >= self.n:
                epoch, pos = epoch + 1, 0
        return torch.cat(out), epoch, pos


@dataclass(frozen=True)
class Position:
    """Where the run is after ``step`` optimizer steps: the data position (epoch, pos in its permutation) and the
    state of the loop's generator. What a checkpoint saves and a resume continues from."""

    step: int
    epoch: int
    pos: int
    generator_state: Tensor


# --------------------------------------------------------------------------------------------------- one step
@dataclass
class TrainParts:
    """What one optimizer step needs, built once per run by :func:`build_train_parts`."""

    unet: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    ema: Any  # diffusers.training_utils.EMAModel or None
    noise_scheduler: Any  # DDPMScheduler: add_noise, get_velocity
    scheduler_config: dict  # the run's noise schedule (saved next to every UNet checkpoint)
    snr_w: Tensor | None  # min-SNR-gamma weight per timestep, on the device (None: plain MSE)
    mixed_precision: str  # "bf16" or "no"
    device: torch.device
    channels_last: bool = False  # the UNet (and train_step's inputs) in channels_last memory format
    updating: bool = False  # True while train_step applies an update (then a Ctrl-C does not save)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the UNet forward when ``mixed_precision == "bf16"``, else a no-op."""
        if self.mixed_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _make_optimizer(params: list, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it, else foreach."""
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                  weight_decay=config.weight_decay)
    if device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def _make_lr_scheduler(optimizer, config: TrainConfig):
    if config.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps,
                                           num_training_steps=config.max_steps)


def build_train_parts(config: TrainConfig, latent_shape: Sequence[int], hidden_size: int, device) -> TrainParts:
    """The UNet of ``config.unet_preset`` (seeded) on ``device`` for latents ``(C, h, w)`` and text embeddings of
    size ``hidden_size`` (channels_last when the config's lever says so on this device), AdamW, the LR schedule,
    the EMA, the training noise scheduler and the min-SNR weights."""
    device = torch.device(device)
    channels_last = resolve_speed_levers(config, device).channels_last
    scheduler_config = default_scheduler_config(config.prediction_type)
    noise_scheduler = training_scheduler(scheduler_config)
    unet = build_unet(config.unet_preset, cross_attention_dim=int(hidden_size), sample_size=int(latent_shape[-1]),
                      in_channels=int(latent_shape[0]), seed=config.seed, **dict(config.unet_overrides))
    unet.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config, device)
    ema = (EMAModel(params, decay=config.ema_decay, use_ema_warmup=config.ema_warmup, inv_gamma=config.ema_inv_gamma,
                    power=config.ema_power, foreach=True) if config.ema else None)
    snr_w = losses.loss_weights(noise_scheduler.alphas_cumprod, config.loss_weighting, config.snr_gamma,
                                config.prediction_type)
    return TrainParts(unet=unet, params=params, optimizer=optimizer, lr_scheduler=_make_lr_scheduler(optimizer, config),
                      ema=ema, noise_scheduler=noise_scheduler, scheduler_config=scheduler_config,
                      snr_w=None if snr_w is None else snr_w.to(device),
                      mixed_precision=resolve_mixed_precision(config.mixed_precision, device), device=device,
                      channels_last=channels_last)


@dataclass
class StepStats:
    """What :func:`train_step` reports (tensors stay on the device: reading them is the caller's choice)."""

    loss: Tensor  # the mean loss of the step (0-dim, detached; under DDP the mean over the processes)
    grad_norm: Tensor  # the total gradient norm before clipping (0-dim)
    lr: float  # the learning rate this step used


def _grad_norm(params: list, max_grad_norm: float | None) -> Tensor:
    """The total gradient norm; the gradients are clipped to ``max_grad_norm`` when it is set."""
    if max_grad_norm:
        return torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    return torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))


def _check_finite(parts: TrainParts, loss: Tensor, grad_norm: Tensor) -> None:
    """Raise NonFiniteLossError (gradients dropped, nothing applied) when the loss or the gradient norm is NaN/inf."""
    finite = torch.isfinite(torch.stack([loss.float(), grad_norm.detach().float().to(loss.device)]))
    if bool(finite.all()):  # (the one host sync of a step)
        return
    parts.optimizer.zero_grad(set_to_none=True)
    what, value = ("loss", float(loss)) if not bool(finite[0]) else ("gradient norm", float(grad_norm))
    raise NonFiniteLossError(f"the {what} is {value} (not finite); nothing of this step was applied", what=what,
                             value=value)


def train_step(parts: TrainParts, batch: Batch, config: TrainConfig, *, model=None,
               finite_check: bool = True) -> StepStats:
    """One optimizer step on ``batch``, this process's share of a global batch (``batch_size x grad_accum``).

    For each of ``config.grad_accum`` micro-batches of ``config.batch_size``: move it to the device,
    :func:`helpers.training.losses.diffusion_loss` / ``grad_accum``, backward (a DDP ``model`` syncs its gradients only on
    the last micro-batch). Then clip the gradient norm to ``config.max_grad_norm`` (or just measure it), check
    that loss and norm are finite (``finite_check``: else :class:`NonFiniteLossError`, nothing applied), AdamW
    step, LR schedule step, ``zero_grad``, EMA update. ``model``: what to call instead of ``parts.unet`` (its DDP
    wrapper, or a ``torch.compile`` of either). No host synchronisation unless ``finite_check``: the returned
    tensors stay on the device.
    """
    per_process = config.batch_size * config.grad_accum
    if len(batch) != per_process:
        raise ValueError(f"train_step takes one process's share of a global batch: batch_size x grad_accum = "
                         f"{config.batch_size} x {config.grad_accum} = {per_process} samples, not {len(batch)}")
    model = parts.unet if model is None else model
    ddp = isinstance(getattr(model, "_orig_mod", model), torch.nn.parallel.DistributedDataParallel)
    memory_format = torch.channels_last if parts.channels_last else torch.preserve_format
    loss_sum = torch.zeros((), device=parts.device)
    for k in range(config.grad_accum):
        mb = batch.slice(k * config.batch_size, (k + 1) * config.batch_size).to(parts.device, memory_format)
        last = k == config.grad_accum - 1
        with model.no_sync() if ddp and not last else contextlib.nullcontext():
            loss = losses.diffusion_loss(model, parts.noise_scheduler, mb.latents, mb.noise, mb.timesteps, mb.text,
                                         config.prediction_type, parts.snr_w, autocast=parts.autocast())
            loss = loss / config.grad_accum
            loss.backward()
        loss_sum += loss.detach()
    if ddp:  # one number for all processes: the mean loss of the global batch
        torch.distributed.all_reduce(loss_sum)
        loss_sum /= torch.distributed.get_world_size()
    grad_norm = _grad_norm(parts.params, config.max_grad_norm)
    if finite_check:
        _check_finite(parts, loss_sum, grad_norm)
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.updating = True
    parts.optimizer.step()
    parts.lr_scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.step(parts.params)
    parts.updating = False
    return StepStats(loss=loss_sum, grad_norm=grad_norm.detach(), lr=lr)


# --------------------------------------------------------------------------------------------------- compile
def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): what a wall-clock timing of GPU work needs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled_model(model, parts: TrainParts, config: TrainConfig, latent_shape: Sequence[int],
                   text_shape: Sequence[int]):
    """``torch.compile(model)`` (``parts.unet`` or its DDP wrapper), compiled at once by one forward and backward
    pass of a random micro-batch of latents ``(C, h, w)`` and text embeddings ``(L, D)`` (the weights, optimizer,
    EMA and data generator are not touched); returns it and the seconds it took."""
    start = time.perf_counter()
    compiled = torch.compile(model)
    g = torch.Generator().manual_seed(0)
    b = config.batch_size
    x0, noise = (torch.randn(b, *latent_shape, generator=g) for _ in range(2))
    text = torch.randn(b, *text_shape, generator=g)
    t = torch.randint(0, int(parts.noise_scheduler.config.num_train_timesteps), (b,), generator=g)
    mb = Batch(x0, text, noise, t).to(parts.device, torch.channels_last if parts.channels_last else
                                      torch.preserve_format)
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    with model.no_sync() if ddp else contextlib.nullcontext():
        losses.diffusion_loss(compiled, parts.noise_scheduler, mb.latents, mb.noise, mb.timesteps, mb.text,
                              config.prediction_type, parts.snr_w, autocast=parts.autocast()).backward()
    parts.optimizer.zero_grad(set_to_none=True)
    synchronize(parts.device)
    return compiled, time.perf_counter() - start
