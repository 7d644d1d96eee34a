"""The training loop: one optimizer step (:func:`train_step`) and the loop around it (:func:`train`), which also runs
as a script and under DDP.

>>> config = TrainConfig.for_profile(P, run_name="main")            # defaults picked for the profile
>>> result = train(config, cache, frozen, callback=LiveLossPlot())   # cache: helpers.cache; frozen: helpers.frozen

One optimizer step: :func:`draw_batch` takes the next ``batch_size x processes x grad_accum`` images of a seeded
per-epoch permutation from the **latent cache** (a latent sampled from the cached mean/std of the image or its flip,
the embedding of one of its captions or, with probability ``caption_dropout``, of ""), then the noise and the
timesteps, all from ONE generator owned by the loop and for the whole global batch at once (so the samples do not
depend on how the batch is split, and a resumed run continues exactly); :func:`train_step` trains on this
process's share: :func:`helpers.losses.diffusion_loss` per micro-batch, ``/ grad_accum``, backward, clipping,
AdamW, the LR schedule (warm-up, cosine), the EMA.

Around it :func:`train` samples the fixed prompts every ``eval_freq`` steps into ``samples/step_<step>.png`` (EMA
weights, ``sample_scheduler``; when given the frozen models), writes a UNet checkpoint (EMA weights) and a full
training state every ``save_freq`` steps and at the end, and a ``metrics.jsonl`` line per logged step. Ctrl-C
finishes the step, saves and returns; a non-finite loss stops with :class:`NonFiniteLossError` and saves nothing;
one trainer at a time holds a run folder (:mod:`helpers.run_folder`). The command line (:mod:`helpers.train_cli`
builds the cache and loads the frozen models, then calls :func:`train`)::

    python -m helpers.train --config outputs/main/train_config.json [--resume latest] [--max-steps N]
    accelerate launch --multi_gpu --num_processes 2 -m helpers.train --config outputs/main/train_config.json
    torchrun --nproc_per_node 2 -m helpers.train --config ...       # CPU (gloo) or GPUs (nccl)
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import checkpoints, losses, run_folder
from .paths import atomic_write
from .plots import make_grid
from .profiles import default_device
from .run_folder import RunFolderError
from .sampling import decode_to_pil, sample_latents
from .schedule import default_scheduler_config, sampling_scheduler, training_scheduler
from .train_config import CONFIG_NAME, TrainConfig, resolve_mixed_precision
from .unet import build_unet

__all__ = ["TrainConfig", "TrainResult", "TrainEvent", "NonFiniteLossError", "RunFolderError", "train",
           "train_step", "build_train_parts", "draw_batch", "Batch", "TrainParts", "StepStats", "Position"]


# --------------------------------------------------------------------------------------------------- results
@dataclass
class TrainEvent:
    """What the loop tells its callback. ``kind``: "start", "log", "sample", "save", "end"."""

    kind: str
    step: int
    max_steps: int
    metrics: dict = field(default_factory=dict)
    image: Any = None  # the sample grid (PIL) for "sample"
    path: Path | None = None  # the file/folder written ("sample", "save")


@dataclass
class TrainResult:
    step: int  # the last completed optimizer step
    run_dir: Path
    checkpoint: Path | None  # the last UNet checkpoint (ckpt/unet_<step>/)
    state: Path | None  # the last training state (ckpt/state_<step>/)
    losses: list = field(default_factory=list)  # per optimizer step of this session
    start_step: int = 0
    interrupted: bool = False
    finished: bool = False  # reached max_steps
    elapsed: float = 0.0  # seconds of training over all sessions
    samples: list = field(default_factory=list)  # sample grids written in this session
    unet: Any = field(default=None, repr=False)  # the trained model in memory (raw weights, not EMA)
    ema: Any = field(default=None, repr=False)  # its EMAModel (``ema.copy_to(unet.parameters())`` for EMA weights)

    def __repr__(self) -> str:
        status = "interrupted" if self.interrupted else ("finished" if self.finished else "stopped")
        return (f"TrainResult(step={self.step}, {status}, run_dir={str(self.run_dir)!r}, "
                f"checkpoint={str(self.checkpoint) if self.checkpoint else None!r})")


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
    """One global batch drawn from the latent cache, on the CPU (or a slice of it, or a copy on a device)."""

    latents: Tensor  # [B, C, h, w] scaled x0
    text: Tensor  # [B, 77, D] text embeddings (caption dropout applied)
    noise: Tensor  # [B, C, h, w]
    timesteps: Tensor  # [B] long

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(self.latents[start:stop], self.text[start:stop], self.noise[start:stop],
                     self.timesteps[start:stop])

    def to(self, device) -> Batch:
        return Batch(*(x.to(device, non_blocking=True) for x in (self.latents, self.text, self.noise, self.timesteps)))


def draw_batch(cache, generator: torch.Generator, indices: Tensor, num_train_timesteps: int, *, flip_p: float,
               caption_dropout: float) -> Batch:
    """The batch of ``indices``: latents and caption embeddings from the cache, then the noise, then the timesteps,
    all drawn from ``generator`` in this order (what makes a resumed run continue bit for bit)."""
    latents, text = cache.batch(indices, generator, flip_p=flip_p, caption_dropout=caption_dropout)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, num_train_timesteps, (len(latents),), generator=generator)
    return Batch(latents, text, noise, timesteps)


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch), the same on every process."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2 ** 63))
    return torch.randperm(n, generator=g)


def _next_indices(n: int, count: int, seed: int, epoch: int, pos: int) -> tuple[Tensor, int, int]:
    """The next ``count`` indices of the seeded epoch permutations from (epoch, pos); returns the new position."""
    out = []
    while count > 0:
        perm = _epoch_permutation(n, seed, epoch)
        take = min(count, n - pos)
        out.append(perm[pos:pos + take])
        pos += take
        count -= take
        if pos >= n:
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
    from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if config.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps,
                                           num_training_steps=config.max_steps)


def build_train_parts(config: TrainConfig, latent_shape: Sequence[int], hidden_size: int, device) -> TrainParts:
    """The UNet of ``config.unet_preset`` (seeded) on ``device`` for latents ``(C, h, w)`` and text embeddings of
    size ``hidden_size``, AdamW, the LR schedule, the EMA, the training noise scheduler and the min-SNR weights."""
    from diffusers.training_utils import EMAModel

    device = torch.device(device)
    scheduler_config = default_scheduler_config(config.prediction_type)
    noise_scheduler = training_scheduler(scheduler_config)
    unet = build_unet(config.unet_preset, cross_attention_dim=int(hidden_size), sample_size=int(latent_shape[-1]),
                      in_channels=int(latent_shape[0]), seed=config.seed, **dict(config.unet_overrides)).to(device)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config, device)
    ema = (EMAModel(params, decay=config.ema_decay, use_ema_warmup=config.ema_warmup, inv_gamma=config.ema_inv_gamma,
                    power=config.ema_power, foreach=True) if config.ema else None)
    snr_w = losses.snr_weights(noise_scheduler.alphas_cumprod, config.snr_gamma, config.prediction_type)
    return TrainParts(unet=unet, params=params, optimizer=optimizer, lr_scheduler=_make_lr_scheduler(optimizer, config),
                      ema=ema, noise_scheduler=noise_scheduler, scheduler_config=scheduler_config,
                      snr_w=None if snr_w is None else snr_w.to(device),
                      mixed_precision=resolve_mixed_precision(config.mixed_precision, device), device=device)


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
    :func:`helpers.losses.diffusion_loss` / ``grad_accum``, backward (a DDP ``model`` syncs its gradients only on
    the last micro-batch). Then clip the gradient norm to ``config.max_grad_norm`` (or just measure it), check
    that loss and norm are finite (``finite_check``: else :class:`NonFiniteLossError`, nothing applied), AdamW
    step, LR schedule step, ``zero_grad``, EMA update. ``model``: what to call instead of ``parts.unet`` (its DDP
    wrapper).
    """
    per_process = config.batch_size * config.grad_accum
    if len(batch) != per_process:
        raise ValueError(f"train_step takes one process's share of a global batch: batch_size x grad_accum = "
                         f"{config.batch_size} x {config.grad_accum} = {per_process} samples, not {len(batch)}")
    model = parts.unet if model is None else model
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    loss_sum = torch.zeros((), device=parts.device)
    for k in range(config.grad_accum):
        mb = batch.slice(k * config.batch_size, (k + 1) * config.batch_size).to(parts.device)
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


# --------------------------------------------------------------------------------------------------- the loop's parts
class _StopFlag:
    """SIGINT (Ctrl-C, Jupyter's interrupt) asks the loop to stop after the current step; a second one raises."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):  # not allowed here (embedded interpreter...)
                self._previous = None
        return self

    def _handler(self, signum, frame) -> None:
        if self.requested:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupt received: finishing this step, saving a checkpoint and stopping "
              "(interrupt again to stop at once, without saving).", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _make_accelerator(device: str):
    from accelerate import Accelerator

    # Mixed precision, accumulation and the LR schedule are handled here by hand (see train_step); accelerate
    # provides the process group (DDP over NCCL/gloo), the device of each process and the DDP wrapper.
    return Accelerator(cpu=(device == "cpu"), mixed_precision="no")


def _continue_from(resume_path: Path, parts: TrainParts, config: TrainConfig, data_gen: torch.Generator,
                   world: int, is_main: bool) -> tuple[Position, float, Path | None]:
    """Load the state ``resume_path`` into ``parts`` and ``data_gen``; returns the position, the seconds trained
    so far and the UNet checkpoint of that step. Refuses another config or a resume that would mix runs."""
    run_dir = config.run_path
    extra = checkpoints.load_state(resume_path, model=parts.unet, optimizer=parts.optimizer,
                                   lr_scheduler=parts.lr_scheduler, ema=parts.ema, generators={"data": data_gen})
    run_folder.check_same_config(config, extra.get("config") or {}, resume_path)
    step = int(extra["step"])
    saved_world = int(extra.get("world_size", world))
    if saved_world != world:
        warnings.warn(f"Resuming a run trained with {saved_world} process(es) on {world}: the global batch changes "
                      f"from {config.global_batch(saved_world)} to {config.global_batch(world)}.", stacklevel=3)
    run_folder.check_resume_target(run_dir, resume_path, step)
    if is_main:
        last_unet = run_folder.drop_after(run_dir, step)
        print(f"Resuming {run_dir.name} from {resume_path} (step {step}).")
    else:
        last_unet = dict(checkpoints.list_checkpoints(run_dir, kind="unet")).get(step)
    position = Position(step, int(extra["epoch"]), int(extra["pos"]), data_gen.get_state())
    return position, float(extra.get("elapsed", 0.0)), last_unet


class _SampleGrids:
    """The fixed prompts, encoded once, sampled with the EMA weights into ``samples/step_<step>.png``."""

    def __init__(self, config: TrainConfig, frozen, parts: TrainParts, latent_shape: Sequence[int]) -> None:
        emb = frozen.text_encoder.encode(list(config.sample_prompts) + [""]).to("cpu", torch.float32)
        self.prompt_emb, self.uncond_emb = emb[:-1], emb[-1:]
        self.sampler = sampling_scheduler(config.sample_scheduler, parts.scheduler_config)
        self.seeds = list(config.sample_seeds) or list(range(len(config.sample_prompts)))
        self.config, self.vae, self.parts, self.latent_shape = config, frozen.vae, parts, tuple(latent_shape)

    def __call__(self, step: int):
        """Sample the grid of ``step``; returns (the PIL grid, its path)."""
        config, unet = self.config, self.parts.unet
        unet.eval()
        try:
            with checkpoints.ema_weights(unet, self.parts.ema):
                latents = sample_latents(unet, self.sampler, self.prompt_emb, self.uncond_emb, self.seeds,
                                         guidance_scale=config.sample_guidance, steps=config.sample_steps,
                                         latent_shape=self.latent_shape, progress=False)
        finally:
            unet.train()
        images = decode_to_pil(self.vae, latents)
        grid = make_grid(images, ncols=min(len(images), 4 if len(images) <= 8 else 8),
                         labels=list(config.sample_prompts))
        buf = io.BytesIO()
        grid.save(buf, format="PNG")
        return grid, atomic_write(config.run_path / "samples" / f"step_{step}.png", buf.getvalue())


def _save(parts: TrainParts, config: TrainConfig, at: Position, elapsed: float, world: int,
          is_main: bool) -> tuple[Path, Path]:
    """The UNet checkpoint (EMA weights) and the full training state at ``at`` (written by the main process);
    returns their folders."""
    run_dir = config.run_path
    if is_main:
        meta = {"ema": bool(config.ema), "profile": config.profile, "text_encoder": config.text_encoder,
                "vae": config.vae, "vae_subfolder": config.vae_subfolder, "resolution": config.resolution,
                "run_name": config.run_name, "step": at.step}
        checkpoints.save_unet(run_dir, at.step, parts.unet, scheduler_config=parts.scheduler_config, meta=meta,
                              ema=parts.ema)
        gen = torch.Generator()
        gen.set_state(at.generator_state)  # the data generator as it was at the end of step `at.step`
        extra = {"step": at.step, "epoch": at.epoch, "pos": at.pos, "elapsed": elapsed, "world_size": world,
                 "mixed_precision": parts.mixed_precision, "samples_seen": at.step * config.global_batch(world),
                 "config": config.to_dict()}
        checkpoints.save_state(run_dir, at.step, model=parts.unet, optimizer=parts.optimizer,
                               lr_scheduler=parts.lr_scheduler, ema=parts.ema, rng=True, extra=extra,
                               generators={"data": gen})
        if config.keep_last:
            checkpoints.prune(run_dir, config.keep_last)
    ckpt = run_dir / checkpoints.CKPT_DIR
    return ckpt / f"unet_{at.step}", ckpt / f"state_{at.step}"


def _nonfinite_message(err: NonFiniteLossError, step: int, last_state, config: TrainConfig) -> str:
    where = f"the last good checkpoint is {last_state}" if last_state else "no checkpoint was saved yet"
    return (f"Training stopped: the {err.what} is {err.value} at step {step} (not finite). Nothing of this step was "
            f"applied or saved; {where}. Try a lower lr (now {config.lr}), mixed_precision='no' (now "
            f"{config.mixed_precision!r}), or check the data/cache; resume with resume='latest'.")


# --------------------------------------------------------------------------------------------------- the loop
def train(config: TrainConfig, cache, frozen=None, *,
          callback: Callable[[TrainEvent], Any] | Iterable[Callable[[TrainEvent], Any]] | None = None,
          ) -> TrainResult:
    """Train a UNet on the latent cache as ``config`` says; see the module docstring for what a step does.

    - ``cache``: a :class:`helpers.cache.LatentCache` (or anything with its ``batch``, ``n_images``,
      ``latent_shape`` and ``text_emb``); :mod:`helpers.train_cli` builds it for command-line runs.
    - ``frozen``: the :class:`helpers.frozen.FrozenModels`, used to encode the fixed sample prompts once and to
      decode the sample grids; None: no sample grids.
    - ``callback``: called with a :class:`TrainEvent` ("start", "log", "sample", "save", "end"); e.g.
      :class:`helpers.plots.LiveLossPlot`. Raising KeyboardInterrupt in it stops the run like Ctrl-C (checkpoint
      saved).

    Returns a :class:`TrainResult`. Raises :class:`RunFolderError` rather than mixing two runs (or two trainers)
    in one folder and :class:`NonFiniteLossError` when the loss diverges (the last good checkpoint stays as it was).
    """
    config = TrainConfig.from_dict(config.to_dict())  # a private copy, validated
    callbacks = [] if callback is None else ([callback] if callable(callback) else list(callback))
    if cache.n_images == 0:
        raise ValueError("The latent cache holds no images")
    accelerator = _make_accelerator(config.device or default_device())
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index
    is_main, distributed, run_dir = accelerator.is_main_process, accelerator.num_processes > 1, config.run_path
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def emit(event: TrainEvent) -> None:
        for cb in (callbacks if is_main else ()):
            cb(event)

    with run_folder.holding(run_dir, accelerator):
        if is_main:
            checkpoints.clean_incomplete(run_dir)  # leftovers of an interrupted save
        accelerator.wait_for_everyone()
        resume_path = run_folder.resolve_resume(config.resume, run_dir)
        latent_shape = tuple(cache.latent_shape)
        parts = build_train_parts(config, latent_shape, int(cache.text_emb.shape[-1]), device)
        data_gen = torch.Generator().manual_seed(int(config.seed))
        position, elapsed_before, last_unet = Position(0, 0, 0, data_gen.get_state()), 0.0, None
        if resume_path is not None:
            position, elapsed_before, last_unet = _continue_from(resume_path, parts, config, data_gen, world, is_main)
        elif is_main:  # a fresh run (resume='latest' with no complete state: start afresh)
            run_folder.start_fresh(run_dir)
        if is_main:
            config.save(run_dir / CONFIG_NAME)
        model = accelerator.prepare(parts.unet) if distributed else parts.unet
        per_rank, global_batch = config.batch_size * config.grad_accum, config.global_batch(world)
        num_train_timesteps = int(parts.noise_scheduler.config.num_train_timesteps)
        grids = None
        if is_main and config.eval_freq > 0 and config.sample_prompts:
            if frozen is None:
                print("No sample grids: train() was given no frozen models (frozen=...) to encode the prompts and "
                      "decode the samples.")
            else:
                grids = _SampleGrids(config, frozen, parts, latent_shape)

        start_step, last_state = position.step, resume_path
        step_losses, samples, interrupted, saved_at = [], [], False, (position.step if resume_path else -1)
        window = run_folder.MetricsWindow(global_batch, elapsed_before)
        emit(TrainEvent("start", position.step, config.max_steps, metrics={
            "global_batch": global_batch, "processes": world, "device": str(device),
            "mixed_precision": parts.mixed_precision, "n_images": cache.n_images,
            "resumed_from": str(resume_path) if resume_path else None, "run_dir": str(run_dir)}))
        if is_main:
            print(f"Training {run_dir.name}: {cache.n_images} cached images, global batch {global_batch} = "
                  f"{config.batch_size} x {world} process(es) x {config.grad_accum} accumulation, device {device}, "
                  f"mixed precision {parts.mixed_precision}, steps {position.step} -> {config.max_steps}.")
            if position.step >= config.max_steps:
                print(f"{run_dir.name} already finished at step {position.step} (max_steps={config.max_steps}); "
                      "nothing to train. Raise max_steps to train further.")

        def sample(step: int) -> None:
            grid, path = grids(step)
            samples.append(path)
            emit(TrainEvent("sample", step, config.max_steps, image=grid, path=path))

        def save(at: Position) -> None:
            nonlocal last_unet, last_state, saved_at
            last_unet, last_state = _save(parts, config, at, window.elapsed(), world, is_main)
            emit(TrainEvent("save", at.step, config.max_steps, path=last_unet))
            accelerator.wait_for_everyone()
            saved_at = at.step

        if grids is not None and position.step == 0 and config.sample_at_start and config.max_steps > 0:
            sample(0)
        bar = tqdm(total=config.max_steps, initial=position.step, desc=f"train {config.run_name}", unit="step",
                   disable=not is_main, dynamic_ncols=True)
        stop = _StopFlag()
        try:
            with stop:
                while position.step < config.max_steps:
                    if stop.requested and not distributed:  # (distributed: agreed on below, after this step)
                        interrupted = True
                        break
                    idx, epoch, pos = _next_indices(cache.n_images, global_batch, config.seed, position.epoch,
                                                    position.pos)
                    batch = draw_batch(cache, data_gen, idx, num_train_timesteps, flip_p=config.flip_p,
                                       caption_dropout=config.caption_dropout)
                    try:
                        stats = train_step(parts, batch.slice(rank * per_rank, (rank + 1) * per_rank), config,
                                           model=model)
                    except NonFiniteLossError as err:
                        raise NonFiniteLossError(_nonfinite_message(err, position.step + 1, last_state, config),
                                                 what=err.what, value=err.value) from None
                    position = Position(position.step + 1, epoch, pos, data_gen.get_state())
                    stop_now = _agreed_stop(stop.requested, distributed, device)
                    loss = float(stats.loss)
                    step_losses.append(loss)
                    window.losses.append(loss)
                    if is_main:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{stats.lr:.2e}", refresh=False)
                    if position.step % config.log_every == 0 or position.step == config.max_steps:
                        record = window.record(position.step, stats.lr, float(stats.grad_norm), epoch)
                        if is_main:
                            run_folder.append_metrics(run_dir, record)
                        emit(TrainEvent("log", position.step, config.max_steps, metrics=record))
                    if grids is not None and position.step % config.eval_freq == 0:
                        sample(position.step)
                    if (config.save_freq and position.step % config.save_freq == 0) or \
                            position.step == config.max_steps:
                        save(position)
                    if stop_now:
                        interrupted = True
                        break
        except KeyboardInterrupt:
            interrupted = True
            if parts.updating:  # a second Ctrl-C in the middle of the optimizer update: do not save it
                if is_main:
                    print(f"Interrupted in the middle of an optimizer update: not saved. The last checkpoint is "
                          f"{last_state}.", file=sys.stderr)
                saved_at = position.step
        finally:
            bar.close()
        if interrupted and saved_at != position.step:
            if is_main:
                print(f"Interrupted: saving a checkpoint at step {position.step}.", file=sys.stderr)
            save(position)

    result = TrainResult(step=position.step, run_dir=run_dir, checkpoint=last_unet, state=last_state,
                         losses=step_losses, start_step=start_step, interrupted=interrupted,
                         finished=position.step >= config.max_steps, elapsed=window.elapsed(), samples=samples,
                         unet=parts.unet, ema=parts.ema)
    emit(TrainEvent("end", result.step, config.max_steps, path=last_unet,
                    metrics={"interrupted": interrupted, "elapsed": result.elapsed}))
    return result


def _agreed_stop(requested: bool, distributed: bool, device: torch.device) -> bool:
    """Whether to stop after this step: Ctrl-C on any process stops all of them (after the same step)."""
    if not distributed:
        return requested
    flag = torch.tensor(float(requested), device=device)
    torch.distributed.all_reduce(flag)
    return bool(flag.item() > 0)


if __name__ == "__main__":
    from .train_cli import main

    sys.exit(main())
