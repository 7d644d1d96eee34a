"""The training loop (:func:`train`) around one optimizer step (:mod:`helpers.training.step`), which also runs as a
script and under DDP.

>>> config = TrainConfig.for_profile(P, run_name="main")            # defaults picked for the profile
>>> result = train(config, cache, frozen, callback=LiveLossPlot())   # cache: helpers.frozen.cache; frozen: helpers.frozen

Each step draws the next global batch from the latent cache (:func:`draw_batch`) and trains on this process's
share (:func:`train_step`): see :mod:`helpers.training.step`. Around it :func:`train` samples the fixed prompts every
``eval_freq`` steps into ``samples/step_<step>.png`` (EMA weights, ``sample_scheduler``; when given the frozen
models), writes a UNet checkpoint (EMA weights) and a full training state every ``save_freq`` steps and at the
end, and a ``metrics.jsonl`` line per logged step. Ctrl-C finishes the step, saves and returns; a non-finite loss
stops with :class:`NonFiniteLossError` and saves nothing; one trainer at a time holds a run folder
(:mod:`helpers.training.run_folder`).

On a GPU the speed levers of :class:`TrainConfig` apply: the cache in GPU memory (no host->device copy per step),
no host synchronisation per step (the loss is read back, and checked, every ``log_every`` steps and before every
save or sample grid), channels_last, and ``torch.compile`` when asked. The command line (:mod:`helpers.training.cli`
builds the cache and loads the frozen models, then calls :func:`train`)::

    python -m helpers.training --config outputs/main/train_config.json [--resume latest] [--max-steps N]
    accelerate launch --multi_gpu --num_processes 2 -m helpers.training --config outputs/main/train_config.json
    torchrun --nproc_per_node 2 -m helpers.training --config ...       # CPU (gloo) or GPUs (nccl)
"""

from __future__ import annotations

import dataclasses
import io
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor
from helpers.progress import tqdm

from helpers import checkpoints
from helpers.generation import decode_to_pil, sample_latents
from helpers.paths import atomic_write
from helpers.plots import make_grid
from helpers.profiles import default_device
from helpers.schedule import sampling_scheduler

from . import run_folder, tracking
from .config import CONFIG_NAME, SpeedLevers, TrainConfig, resolve_speed_levers
from .run_folder import RunFolderError
from .step import (Batch, DataOrder, NonFiniteLossError, Position, StepStats, TrainParts, build_train_parts,
                          compiled_model, draw_batch, train_step)

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
    compile_s: float | None = None  # seconds torch.compile took in this session (config.compile), not in elapsed
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


def _make_accelerator(device: str, config: TrainConfig):
    # Mixed precision, accumulation and the LR schedule are handled here by hand (see train_step); accelerate
    # provides the process group (DDP over NCCL/gloo), the device of each process, the DDP wrapper and the tracker.
    return Accelerator(cpu=(device == "cpu"), mixed_precision="no",
                       **tracking.accelerator_kwargs(config.report_to, config.run_path))


def _continue_from(resume_path: Path, parts: TrainParts, config: TrainConfig, data_gen: torch.Generator,
                   world: int, is_main: bool) -> tuple[Position, float, Path | None]:
    """Load the state ``resume_path`` into ``parts`` and ``data_gen``; returns the position, the seconds trained
    so far and the UNet checkpoint of that step. Refuses another config or a resume that would mix runs."""
    run_dir = config.run_path
    saved = _SavedGeneratorState()
    extra = checkpoints.load_state(resume_path, model=parts.unet, optimizer=parts.optimizer,
                                   lr_scheduler=parts.lr_scheduler, ema=parts.ema, generators={"data": saved})
    run_folder.check_same_config(config, extra.get("config") or {}, resume_path)
    _match_parameter_layout(parts)
    if saved.state is not None:
        _restore_data_generator(data_gen, saved.state, resume_path)
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


def _match_parameter_layout(parts: TrainParts) -> None:
    """Put the loaded AdamW moments and EMA weights in the memory layout of their parameters (a checkpoint holds
    them contiguous): fused AdamW pairs state and parameter elements by memory position, so a channels_last UNet
    with contiguous moments would get silently wrong updates."""
    def like(param: Tensor, value: Tensor) -> Tensor:
        if value.shape != param.shape or value.stride() == param.stride():
            return value
        return torch.empty_like(param, dtype=value.dtype).copy_(value)

    for param, state in parts.optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                state[key] = like(param, value)
    if parts.ema is not None:
        parts.ema.shadow_params = [like(p, s) for p, s in zip(parts.params, parts.ema.shadow_params)]


class _SavedGeneratorState:
    """Takes the saved state of the data generator (``checkpoints.load_state`` calls ``set_state``), so that it can
    be checked against the loop's generator before it goes in."""

    state: Tensor | None = None

    def set_state(self, state: Tensor) -> None:
        self.state = state


def _restore_data_generator(data_gen: torch.Generator, state: Tensor, resume_path: Path) -> None:
    """Put the saved state into ``data_gen``; refuses a state of a generator on another kind of device (the batches
    were drawn on the CPU and are now drawn on a GPU, or the other way round)."""
    if state.numel() != data_gen.get_state().numel():
        cpu = state.numel() == torch.Generator().get_state().numel()
        raise RunFolderError(
            f"{resume_path} was trained with its batches drawn on {'the CPU' if cpu else 'a GPU'}; this run draws them "
            f"on {data_gen.device}, another random stream. Resume it exactly with cache_on_device={not cpu} "
            f"{'(the latent cache in host memory)' if cpu else 'on a CUDA device'}.")
    data_gen.set_state(state)


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
                         labels=list(config.sample_prompts), min_tile=128, max_label_lines=8)
        buf = io.BytesIO()
        grid.save(buf, format="PNG")
        return grid, atomic_write(config.run_path / "samples" / f"step_{step}.png", buf.getvalue())


def _save(parts: TrainParts, config: TrainConfig, at: Position, elapsed: float, world: int, is_main: bool,
          data_device: torch.device) -> tuple[Path, Path]:
    """The UNet checkpoint (EMA weights) and the full training state at ``at`` (written by the main process);
    returns their folders. ``data_device``: where the data generator is."""
    run_dir = config.run_path
    if is_main:
        meta = {"ema": bool(config.ema), "profile_name": config.profile_name, "text_encoder": config.text_encoder,
                "vae": config.vae, "vae_subfolder": config.vae_subfolder, "resolution": config.resolution,
                "run_name": config.run_name, "step": at.step}
        checkpoints.save_unet(run_dir, at.step, parts.unet, scheduler_config=parts.scheduler_config, meta=meta,
                              ema=parts.ema)
        gen = torch.Generator(device=data_device)
        gen.set_state(at.generator_state)  # the data generator as it was at the end of step `at.step`
        extra = {"step": at.step, "epoch": at.epoch, "pos": at.pos, "elapsed": elapsed, "world_size": world,
                 "mixed_precision": parts.mixed_precision, "samples_seen": at.step * config.global_batch(world),
                 "config": config.to_dict()}
        checkpoints.save_state(run_dir, at.step, model=parts.unet, optimizer=parts.optimizer,
                               lr_scheduler=parts.lr_scheduler, ema=parts.ema, rng=True, extra=extra,
                               generators={"data": gen})
        # only now that the new state is complete: the newest intact state always stays
        checkpoints.prune(run_dir, keep_states=config.keep_states, keep_unets=config.keep_unets)
    ckpt = run_dir / checkpoints.CKPT_DIR
    return ckpt / f"unet_{at.step}", ckpt / f"state_{at.step}"


def _nonfinite_message(err: NonFiniteLossError, step: int, last_state, config: TrainConfig,
                       checked_at: int | None = None, since: int | None = None) -> str:
    """What to tell the user. ``checked_at``/``since``: the step of a deferred check and the first step it covered
    (``check_every_step=False``); None: the check ran before the update of ``step``."""
    where = f"the last good checkpoint is {last_state}" if last_state else "no checkpoint was saved yet"
    if checked_at is None:
        what_happened = "Nothing of this step was applied or saved"
    else:
        what_happened = (f"Found at step {checked_at} (check_every_step=False: the loss is checked every log_every="
                         f"{config.log_every} steps and before every save): steps {since}..{checked_at} were "
                         f"applied and their weights may be affected; nothing after step {since - 1} was saved")
    return (f"Training stopped: the {err.what} is {err.value} at step {step} (not finite). {what_happened}; "
            f"{where}. Try a lower lr (now {config.lr}), mixed_precision='no' (now {config.mixed_precision!r}), or "
            "check the data/cache; resume with resume='latest'.")


class _Readback:
    """Loss and gradient norm of the steps since the last read, kept on the device: read back (one host sync) and
    checked for NaN/inf when the loop logs, saves or samples, or every step (``check_every_step``)."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[Tensor] = []

    def add(self, step: int, stats: StepStats) -> None:
        self.steps.append(step)
        self.values.append(torch.stack([stats.loss.float(), stats.grad_norm.float().to(stats.loss.device)]))

    def read(self, config: TrainConfig, last_state) -> tuple[list[float], float | None]:
        """The losses of the pending steps and the last gradient norm; NonFiniteLossError when one is not finite."""
        if not self.steps:
            return [], None
        values, steps = torch.stack(self.values).tolist(), self.steps
        self.steps, self.values = [], []
        for step, (loss, norm) in zip(steps, values):
            if not (math.isfinite(loss) and math.isfinite(norm)):
                what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
                err = NonFiniteLossError("", what=what, value=value)
                raise NonFiniteLossError(_nonfinite_message(err, step, last_state, config, steps[-1], steps[0]),
                                         what=what, value=value)
        return [loss for loss, _ in values], values[-1][1]


def _on_device(config: TrainConfig, cache, device: torch.device, distributed: bool):
    """The speed levers on ``device`` (agreed on by all processes), the cache the batches are drawn from (a copy in
    GPU memory with ``cache_on_device``) and the data generator, on the device of that cache."""
    nbytes = getattr(cache, "nbytes", None) if hasattr(cache, "to") else None
    levers = resolve_speed_levers(config, device, nbytes)
    if distributed:  # one answer for all (free memory differs between GPUs): every process draws the same batch
        flag = torch.tensor(float(levers.cache_on_device), device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        levers = dataclasses.replace(levers, cache_on_device=bool(flag.item() > 0))
    if levers.cache_on_device and not hasattr(cache, "to"):
        raise TypeError(f"cache_on_device=True needs a helpers.frozen.cache.LatentCache (with .to(device)), not a "
                        f"{type(cache).__name__}; set cache_on_device=False.")
    source = cache.to(device) if levers.cache_on_device else cache
    data_device = device if levers.cache_on_device else torch.device("cpu")
    return levers, source, torch.Generator(device=data_device).manual_seed(int(config.seed))


# --------------------------------------------------------------------------------------------------- the loop
class _Session:
    """One call of :func:`train`: what the loop carries from step to step, and what it does when it logs, samples
    and saves."""

    def __init__(self, config: TrainConfig, cache, frozen, callbacks: list, accelerator) -> None:
        self.config, self.callbacks, self.accelerator = config, callbacks, accelerator
        self.device, self.world, self.rank = accelerator.device, accelerator.num_processes, accelerator.process_index
        self.is_main, self.distributed = accelerator.is_main_process, accelerator.num_processes > 1
        self.run_dir, self.n_images = config.run_path, cache.n_images
        if self.is_main:
            checkpoints.clean_incomplete(self.run_dir)  # leftovers of an interrupted save
        accelerator.wait_for_everyone()
        self.resume_path = run_folder.resolve_resume(config.resume, self.run_dir, move_damaged=self.is_main)
        latent_shape, text_shape = tuple(cache.latent_shape), tuple(cache.text_emb.shape[1:])
        self.parts = parts = build_train_parts(config, latent_shape, text_shape[-1], self.device)
        self.levers, self.source, self.data_gen = _on_device(config, cache, self.device, self.distributed)
        self.position, elapsed_before, self.last_unet = Position(0, 0, 0, self.data_gen.get_state()), 0.0, None
        if self.resume_path is not None:
            self.position, elapsed_before, self.last_unet = _continue_from(
                self.resume_path, parts, config, self.data_gen, self.world, self.is_main)
        elif self.is_main:  # a fresh run (resume='latest' with no complete state: start afresh)
            run_folder.start_fresh(self.run_dir)
        if self.is_main:
            config.save(self.run_dir / CONFIG_NAME)
        self.model = accelerator.prepare(parts.unet) if self.distributed else parts.unet
        self.compile_s = None
        if self.levers.compile and self.position.step < config.max_steps:
            if self.is_main:
                print("Compiling the UNet (torch.compile; once per session, minutes for the reference UNet) ...")
            self.model, self.compile_s = compiled_model(self.model, parts, config, latent_shape, text_shape)
        self.order = DataOrder(cache.n_images, config.seed, self.data_gen.device)
        self.grids = None
        if self.is_main and config.eval_freq > 0 and config.sample_prompts:
            if frozen is None:
                print("No sample grids: train() was given no frozen models (frozen=...) to encode the prompts and "
                      "decode the samples.")
            else:
                self.grids = _SampleGrids(config, frozen, parts, latent_shape)
        self.start_step, self.last_state = self.position.step, self.resume_path
        self.losses, self.samples, self.interrupted = [], [], False
        self.saved_at = self.position.step if self.resume_path else -1
        self.window = run_folder.MetricsWindow(config.global_batch(self.world), elapsed_before)
        self.pending, self.bar = _Readback(), None

    def emit(self, event: TrainEvent) -> None:
        for cb in (self.callbacks if self.is_main else ()):
            cb(event)

    def read(self) -> float | None:
        """Read the pending losses back (NonFiniteLossError if one is not finite); returns the last gradient norm."""
        new, grad_norm = self.pending.read(self.config, self.last_state)
        self.losses.extend(new)
        self.window.losses.extend(new)
        if new and self.bar is not None:
            self.bar.set_postfix(loss=f"{new[-1]:.4f}", lr=f"{self.parts.optimizer.param_groups[0]['lr']:.2e}",
                                 refresh=False)
        return grad_norm

    def sample(self, step: int) -> None:
        grid, path = self.grids(step)
        self.samples.append(path)
        tracking.log_grid(self.accelerator, self.config, grid, step)
        self.emit(TrainEvent("sample", step, self.config.max_steps, image=grid, path=path))

    def save(self, at: Position) -> None:
        self.read()  # never a checkpoint after a non-finite step
        self.last_unet, self.last_state = _save(self.parts, self.config, at, self.window.elapsed(), self.world,
                                                self.is_main, self.data_gen.device)
        self.emit(TrainEvent("save", at.step, self.config.max_steps, path=self.last_unet))
        self.accelerator.wait_for_everyone()
        self.saved_at = at.step

    def start(self) -> None:
        """The "start" event, the banner and the grid of step 0."""
        config, parts, step = self.config, self.parts, self.position.step
        global_batch = config.global_batch(self.world)
        self.emit(TrainEvent("start", step, config.max_steps, metrics={
            "global_batch": global_batch, "processes": self.world, "device": str(self.device),
            "mixed_precision": parts.mixed_precision, "n_images": self.n_images,
            "resumed_from": str(self.resume_path) if self.resume_path else None, "run_dir": str(self.run_dir),
            "speed_levers": dataclasses.asdict(self.levers), "compile_s": self.compile_s}))
        if self.is_main:
            print(f"Training {self.run_dir.name}: {self.n_images} cached images, global batch {global_batch} = "
                  f"{config.batch_size} x {self.world} process(es) x {config.grad_accum} accumulation, device "
                  f"{self.device}, mixed precision {parts.mixed_precision}, {_levers_line(self.levers, self.compile_s)}"
                  f", steps {step} -> {config.max_steps}.")
            if step >= config.max_steps:
                print(f"{self.run_dir.name} already finished at step {step} (max_steps={config.max_steps}); "
                      "nothing to train. Raise max_steps to train further.")
        if self.grids is not None and step == 0 and config.sample_at_start and config.max_steps > 0:
            self.sample(0)

    def step(self, stop: _StopFlag) -> bool:
        """One optimizer step and what follows it (read back, log, sample, save); True: stop after it."""
        config, levers, position = self.config, self.levers, self.position
        per_rank = config.batch_size * config.grad_accum
        idx, epoch, pos = self.order.next(config.global_batch(self.world), position.epoch, position.pos)
        batch = draw_batch(self.source, self.data_gen, idx, int(self.parts.noise_scheduler.config.num_train_timesteps),
                           flip_p=config.flip_p, caption_dropout=config.caption_dropout,
                           timestep_sampling=config.timestep_sampling, timestep_loc=config.timestep_loc,
                           timestep_scale=config.timestep_scale)
        try:
            stats = train_step(self.parts, batch.slice(self.rank * per_rank, (self.rank + 1) * per_rank), config,
                               model=self.model, finite_check=levers.check_every_step)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(_nonfinite_message(err, position.step + 1, self.last_state, config),
                                     what=err.what, value=err.value) from None
        self.pending.add(position.step + 1, stats)
        self.position = position = Position(position.step + 1, epoch, pos, self.data_gen.get_state())
        step = position.step
        log_now = step % config.log_every == 0 or step == config.max_steps
        sample_now = self.grids is not None and step % config.eval_freq == 0
        save_now = bool(config.save_freq and step % config.save_freq == 0) or step == config.max_steps
        check_now = levers.check_every_step or log_now or sample_now or save_now
        # (distributed: the processes agree at the checks only, when the loop syncs anyway)
        stop_now = _agreed_stop(stop.requested, self.distributed, self.device) \
            if check_now or not self.distributed else False
        grad_norm = self.read() if check_now else None
        if self.bar is not None:
            self.bar.update(1)
        if log_now:
            record = self.window.record(step, stats.lr, grad_norm, epoch)
            if self.is_main:
                run_folder.append_metrics(self.run_dir, record)
            tracking.log_scalars(self.accelerator, config, record, step)
            self.emit(TrainEvent("log", step, config.max_steps, metrics=record))
        if sample_now:
            self.sample(step)
        if save_now:
            self.save(position)
        return stop_now

    def loop(self) -> None:
        """Steps until ``max_steps``, Ctrl-C (saved) or an error."""
        self.bar = tqdm(total=self.config.max_steps, initial=self.position.step, desc=f"train {self.config.run_name}",
                        unit="step", disable=not self.is_main, dynamic_ncols=True)
        stop = _StopFlag()
        try:
            with stop:
                while self.position.step < self.config.max_steps:
                    if stop.requested and not self.distributed:  # (distributed: agreed on after a step)
                        self.interrupted = True
                        break
                    if self.step(stop):
                        self.interrupted = True
                        break
        except KeyboardInterrupt:
            self.interrupted = True
            if self.parts.updating:  # a second Ctrl-C in the middle of the optimizer update: do not save it
                if self.is_main:
                    print(f"Interrupted in the middle of an optimizer update: not saved. The last checkpoint is "
                          f"{self.last_state}.", file=sys.stderr)
                self.saved_at = self.position.step
        finally:
            self.bar.close()
        if self.interrupted and self.saved_at != self.position.step:
            if self.is_main:
                print(f"Interrupted: saving a checkpoint at step {self.position.step}.", file=sys.stderr)
            self.save(self.position)
        self.read()

    def result(self) -> TrainResult:
        step = self.position.step
        return TrainResult(step=step, run_dir=self.run_dir, checkpoint=self.last_unet, state=self.last_state,
                           losses=self.losses, start_step=self.start_step, compile_s=self.compile_s,
                           interrupted=self.interrupted, finished=step >= self.config.max_steps,
                           elapsed=self.window.elapsed(), samples=self.samples, unet=self.parts.unet,
                           ema=self.parts.ema)


def train(config: TrainConfig, cache, frozen=None, *,
          callback: Callable[[TrainEvent], Any] | Iterable[Callable[[TrainEvent], Any]] | None = None,
          ) -> TrainResult:
    """Train a UNet on the latent cache as ``config`` says; see the module docstring for what a step does.

    - ``cache``: a :class:`helpers.frozen.cache.LatentCache` (or anything with its ``batch``, ``n_images``,
      ``latent_shape`` and ``text_emb``); :mod:`helpers.training.cli` builds it for command-line runs.
    - ``frozen``: the :class:`helpers.frozen.FrozenModels`, used to encode the fixed sample prompts once and to
      decode the sample grids; None: no sample grids.
    - ``callback``: called with a :class:`TrainEvent` ("start", "log", "sample", "save", "end"); e.g.
      :class:`helpers.training.LiveLossPlot`. Raising KeyboardInterrupt in it stops the run like Ctrl-C (checkpoint
      saved).

    Returns a :class:`TrainResult`. Raises :class:`RunFolderError` rather than mixing two runs (or two trainers)
    in one folder and :class:`NonFiniteLossError` when the loss diverges (the last good checkpoint stays as it was).
    """
    config = TrainConfig.from_dict(config.to_dict())  # a private copy, validated
    callbacks = [] if callback is None else ([callback] if callable(callback) else list(callback))
    if cache.n_images == 0:
        raise ValueError("The latent cache holds no images")
    accelerator = _make_accelerator(config.device or default_device(), config)
    if accelerator.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution algorithms once
    with run_folder.holding(config.run_path, accelerator):
        session = _Session(config, cache, frozen, callbacks, accelerator)
        tracking.start_tracking(accelerator, config, session.position.step)
        try:
            session.start()
            session.loop()
        finally:
            tracking.finish(accelerator)  # flushes and closes the event files, also after an error
    result = session.result()
    session.emit(TrainEvent("end", result.step, config.max_steps, path=result.checkpoint,
                            metrics={"interrupted": result.interrupted, "elapsed": result.elapsed}))
    return result


def _levers_line(levers: SpeedLevers, compile_s: float | None) -> str:
    on = [name for name, value in (("cache on the device", levers.cache_on_device),
                                   ("channels_last", levers.channels_last)) if value]
    if compile_s is not None:
        on.append(f"torch.compile ({compile_s:.0f} s)")
    on.append("loss checked every step" if levers.check_every_step else "loss checked every log_every steps")
    return ", ".join(on)


def _agreed_stop(requested: bool, distributed: bool, device: torch.device) -> bool:
    """Whether to stop after this step: Ctrl-C on any process stops all of them (after the same step)."""
    if not distributed:
        return requested
    flag = torch.tensor(float(requested), device=device)
    torch.distributed.all_reduce(flag)
    return bool(flag.item() > 0)

