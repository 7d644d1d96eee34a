"""The training loop: one function, configured by one dataclass, that also runs as a script (and under DDP).

>>> config = TrainConfig.for_profile(P, run_name="main")           # defaults picked for the profile
>>> result = train(config, profile=P, cache=cache, frozen=frozen, callback=LiveLossPlot())

What one optimizer step does (all of it in :func:`train`):

1. draw the next ``batch_size x processes x grad_accum`` images of a seeded per-epoch permutation, and from the
   **latent cache** (never the VAE or the text encoder): a latent sampled from the cached mean/std (of the image or
   of its flipped view), the text embedding of one of its captions, replaced by the embedding of "" with
   probability ``caption_dropout`` (so the model also learns the unconditional prediction classifier-free
   guidance needs); then the Gaussian noise and uniform timesteps. All of it comes from ONE ``torch.Generator``
   owned by the loop, drawn for the whole global batch at once, so the samples do not depend on how the batch is
   split into micro-batches or processes, and a resumed run continues exactly;
2. noise the latents with the workbook's one noise schedule (``helpers.schedule``), predict the noise (or ``v``),
   MSE loss weighted by min-SNR-gamma, backward per micro-batch (``loss / grad_accum``; DDP syncs gradients only
   on the last micro-batch);
3. clip the gradient norm, AdamW step, LR schedule step (linear warm-up, cosine decay), EMA update.

Every ``eval_freq`` steps it samples the fixed prompts (DDIM, fixed seeds, EMA weights) into
``outputs/<run>/samples/step_<step>.png``; every ``save_freq`` steps and at the end it writes a UNet checkpoint
(EMA weights, loadable with ``UNet2DConditionModel.from_pretrained``) and a full training state (exact resume).
``metrics.jsonl`` gets one line per logged step. Ctrl-C (kernel interrupt) finishes the current step, saves and
returns; a non-finite loss stops with :class:`NonFiniteLossError` and saves nothing.

Command line (the same function)::

    python -m helpers.train --config outputs/main/train_config.json [--resume latest] [--max-steps N]
    accelerate launch --multi_gpu --num_processes 2 -m helpers.train --config outputs/main/train_config.json
    torchrun --nproc_per_node 2 -m helpers.train --config ...       # CPU (gloo) or GPUs (nccl)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainResult", "TrainEvent", "NonFiniteLossError", "RunFolderError", "train",
           "LiveLossPlot", "read_metrics", "sample_grids", "colour_prompts", "named_colour", "dominant_colour", "resolve_mixed_precision", "CPU_AUTO_MIXED_PRECISION",
           "main"]

#: What ``mixed_precision="auto"`` means on CPU: measured with ``benchmarks/train_throughput.py --precision``
#: on the demo preset (see benchmarks/RESULTS.md). On CUDA "auto" is bf16 (where the GPU supports it).
CPU_AUTO_MIXED_PRECISION = "no"

#: Config fields that may differ when resuming (they do not change what the weights become).
RESUME_MAY_CHANGE = frozenset({
    "run_name", "max_steps", "eval_freq", "save_freq", "keep_last", "log_every", "resume", "device", "run_dir", "data_dir",
    "cache_dir", "sample_prompts", "sample_seeds", "sample_steps", "sample_guidance", "sample_at_start",
})

CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.jsonl"


# --------------------------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``outputs/<run>/train_config.json`` and in every state).

    Pick defaults with :meth:`for_profile`; every field can be overridden there. ``batch_size`` is per process and
    micro-batch: the optimizer sees ``batch_size x processes x grad_accum`` images per step.
    """

    run_name: str = "main"
    run_dir: str | None = None  # default: <outputs>/<run_name>
    # -- the profile (what the cache and the frozen models are)
    profile: str = "demo"
    smoke: bool = False
    data_dir: str | None = None  # the data set (the command line builds/finds the cache from it)
    cache_dir: str | None = None  # a cache folder from helpers.cache.build_cache (command line)
    resolution: int = 64
    text_encoder: str = ""
    vae: str = ""
    vae_subfolder: str | None = None
    unet_preset: str = "demo"
    unet_overrides: dict = field(default_factory=dict)  # UNet2DConditionModel config entries to change
    device: str | None = None  # None: the profile's (cuda > mps > cpu)
    # -- optimisation
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int = 300  # optimizer steps
    lr: float = 2e-4
    lr_schedule: str = "cosine"  # "cosine" (warm-up then cosine to 0 at max_steps) or "constant" (after warm-up)
    warmup_steps: int = 50
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    # -- EMA of the weights (diffusers.training_utils.EMAModel)
    ema: bool = True
    ema_decay: float = 0.9999  # the cap
    ema_warmup: bool = True  # decay = 1 - (1 + step / inv_gamma) ** -power, capped at ema_decay
    ema_inv_gamma: float = 1.0
    ema_power: float = 0.75
    # -- diffusion
    prediction_type: str = "epsilon"  # or "v_prediction"
    snr_gamma: float | None = 5.0  # min-SNR-gamma loss weighting; None: plain MSE
    caption_dropout: float = 0.1
    flip_p: float = 0.5
    mixed_precision: str = "auto"  # "bf16", "no" or "auto" (bf16 on CUDA, CPU_AUTO_MIXED_PRECISION on CPU)
    # -- what happens on the side
    eval_freq: int = 500  # sample the fixed prompts every eval_freq steps (0: never)
    save_freq: int = 500  # checkpoint every save_freq steps (and at the end)
    keep_last: int | None = None  # keep only the last N checkpoints (None: all)
    log_every: int = 10
    sample_prompts: list = field(default_factory=list)
    sample_seeds: list = field(default_factory=list)  # one per prompt (default 0, 1, 2, ...)
    sample_steps: int = 50
    sample_guidance: float = 3.0
    sample_at_start: bool = True  # a grid at step 0 (what noise looks like) in a fresh run
    seed: int = 0
    resume: str | None = None  # None (refuses when the run folder holds a run), "latest", or a state folder

    # ---------------------------------------------------------------- construction / (de)serialisation
    @classmethod
    def for_profile(cls, profile, **overrides) -> TrainConfig:
        """Defaults for ``profile``: course (reference UNet, 256 px, eval/save every 500 steps), demo (CPU-sized
        UNet, a few hundred steps, minutes on a laptop CPU) or smoke (a handful of steps)."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {sorted(unknown)}")
        run_name = overrides.get("run_name", "main")
        base = dict(
            run_name=run_name, run_dir=str(profile.run_dir(run_name)), profile=profile.name, smoke=profile.smoke,
            data_dir=str(profile.data_dir), resolution=profile.resolution, text_encoder=str(profile.text_encoder),
            vae=str(profile.vae), vae_subfolder=profile.vae_subfolder, unet_preset=profile.unet_preset)
        if profile.smoke:
            base.update(batch_size=8, grad_accum=1, max_steps=6, lr=2e-4, warmup_steps=2, eval_freq=3, save_freq=3,
                        log_every=1, ema_decay=0.999, prediction_type=("v_prediction" if profile.name == "demo"
                                                                         else "epsilon"),
                        sample_steps=4, sample_guidance=3.0, n_prompts=4)
        elif profile.name == "course":
            # Global batch 64 (32 x 2 accumulation on one GPU); ~680 steps per epoch of 43k sprites.
            base.update(batch_size=32, grad_accum=2, max_steps=20_000, lr=1e-4, warmup_steps=500, eval_freq=500,
                        save_freq=500, log_every=25, ema_decay=0.9999, sample_steps=50, sample_guidance=3.0,
                        n_prompts=8)
        else:  # demo: minutes on a laptop CPU
            # Measured (a stand-in VAE, the demo UNet and MiniLM, 640 sprites): with epsilon prediction and 400 steps
            # of 32 the samples are still noise; v-prediction, lr 1e-3 and 800 steps of 16 (the same compute) give
            # the colour of the prompt in 16 of 16 samples at guidance >= 3.
            base.update(batch_size=16, grad_accum=1, max_steps=800, lr=1e-3, warmup_steps=40, eval_freq=200,
                        save_freq=200, log_every=10, ema_decay=0.999, prediction_type="v_prediction",
                        sample_steps=25, sample_guidance=4.0, n_prompts=8)
        n_prompts = base.pop("n_prompts")
        if "sample_prompts" not in overrides:
            base["sample_prompts"] = default_sample_prompts(profile, n_prompts)
        base.update(overrides)
        config = cls(**base)
        if not config.sample_seeds:
            config.sample_seeds = list(range(len(config.sample_prompts)))
        config.validate()
        return config

    def validate(self) -> None:
        problems = []
        if self.prediction_type not in ("epsilon", "v_prediction"):
            problems.append(f"prediction_type must be 'epsilon' or 'v_prediction', not {self.prediction_type!r}")
        if self.mixed_precision not in ("auto", "bf16", "no"):
            problems.append(f"mixed_precision must be 'auto', 'bf16' or 'no', not {self.mixed_precision!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            problems.append(f"lr_schedule must be 'cosine' or 'constant', not {self.lr_schedule!r}")
        for name in ("batch_size", "grad_accum", "max_steps", "log_every"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("eval_freq", "save_freq", "warmup_steps"):
            if int(getattr(self, name)) < 0:
                problems.append(f"{name} must be >= 0")
        if not 0 <= self.caption_dropout <= 1 or not 0 <= self.flip_p <= 1:
            problems.append("caption_dropout and flip_p must be in [0, 1]")
        if self.sample_seeds and len(self.sample_seeds) != len(self.sample_prompts):
            problems.append(f"{len(self.sample_prompts)} sample_prompts but {len(self.sample_seeds)} sample_seeds")
        if self.keep_last is not None and int(self.keep_last) < 1:
            problems.append("keep_last must be None or >= 1")
        if problems:
            raise ValueError("Invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown TrainConfig field(s) {unknown}; known fields: {sorted(names)}")
        config = cls(**data)
        config.validate()
        return config

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from err
        return cls.from_dict(data)

    # ----------------------------------------------------------------------------------- derived values
    @property
    def run_path(self) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        from .paths import outputs_root

        return outputs_root() / self.run_name

    def global_batch(self, num_processes: int = 1) -> int:
        return self.batch_size * self.grad_accum * num_processes

    def differences(self, other: TrainConfig | dict) -> dict[str, tuple[Any, Any]]:
        """Fields that matter for the weights and differ: ``{name: (self's, other's)}``."""
        mine, theirs = self.to_dict(), other if isinstance(other, dict) else other.to_dict()
        out = {}
        for name, value in mine.items():
            if name in RESUME_MAY_CHANGE:
                continue
            a, b = _comparable(name, value), _comparable(name, theirs.get(name, _MISSING))
            if a != b:
                out[name] = (value, theirs.get(name, "<missing>"))
        return out


_MISSING = object()


def _comparable(name: str, value):
    """Model paths compare by their last component (a moved checkout still resumes); tuples as lists."""
    if name in ("text_encoder", "vae") and isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    if isinstance(value, tuple):
        return list(value)
    return value


def default_sample_prompts(profile, n: int = 8) -> list[str]:
    """``n`` prompts of the profile's test.json, spread over the file (fixed: the same every run)."""
    try:
        from .data import read_test_prompts

        prompts = [p.text_prompt for p in read_test_prompts(profile.test_json)]
    except Exception:  # no test.json (imagefolder data): no fixed prompts
        return []
    if len(prompts) <= n:
        return prompts
    return [prompts[(i * len(prompts)) // n] for i in range(n)]


def resolve_mixed_precision(setting: str, device: torch.device | str) -> str:
    """"bf16" or "no" for ``setting`` on ``device`` ("auto": bf16 on CUDA when supported; measured on CPU)."""
    device = torch.device(device)
    if setting == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        if device.type == "cpu":
            return CPU_AUTO_MIXED_PRECISION
        return "no"
    return setting


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
    """The loss (or the gradient norm) became NaN/inf; nothing of that step was applied or saved."""


class RunFolderError(RuntimeError):
    """The run folder holds another run (or a different config) and the loop refuses to mix them."""


# --------------------------------------------------------------------------------------------------- helpers
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


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The data order of one epoch: a permutation seeded by (seed, epoch), the same on every process."""
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2 ** 63))
    return torch.randperm(n, generator=g)


def _next_indices(n: int, count: int, seed: int, epoch: int, pos: int) -> tuple[torch.Tensor, int, int]:
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


def _snr_weights(alphas_cumprod: torch.Tensor, gamma: float | None, prediction_type: str) -> torch.Tensor | None:
    """min-SNR-gamma loss weights per timestep (Hang et al. 2023): min(SNR, g)/SNR for epsilon, /(SNR+1) for v."""
    if gamma is None:
        return None
    ac = alphas_cumprod.double()
    snr = ac / (1 - ac)
    clipped = torch.clamp(snr, max=float(gamma))
    w = clipped / snr if prediction_type == "epsilon" else clipped / (snr + 1)
    return w.float()


def _write_metrics(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the metrics lines of steps <= ``last_step`` (steps after the resumed checkpoint are redone)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``<run_dir>/metrics.jsonl`` (one per logged step)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def sample_grids(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the sample grids ``samples/step_<step>.png`` of a run, by step."""
    out = []
    for p in (Path(run_dir) / "samples").glob("step_*.png"):
        try:
            out.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)


def _profile_from_config(config: TrainConfig):
    """A Profile equivalent to the one the config was made from (command-line runs)."""
    from .profiles import Profile, default_device

    return Profile(
        name=config.profile, smoke=config.smoke, reason="from the training config",
        data_dir=Path(config.data_dir) if config.data_dir else Path("."), outputs_dir=config.run_path.parent,
        resolution=config.resolution, text_encoder=config.text_encoder, vae=config.vae,
        vae_subfolder=config.vae_subfolder, unet_preset=config.unet_preset,
        device=config.device or default_device())


def _build_unet(config: TrainConfig, latent_shape: Sequence[int], cross_attention_dim: int):
    from .unet import build_unet

    return build_unet(config.unet_preset, cross_attention_dim=cross_attention_dim, sample_size=int(latent_shape[-1]),
                      in_channels=int(latent_shape[0]), seed=config.seed, **dict(config.unet_overrides))


def _make_optimizer(params, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, fused where the device supports it, else foreach."""
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                  weight_decay=config.weight_decay)
    params = list(params)
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


def _make_accelerator(device: str):
    from accelerate import Accelerator

    # Mixed precision, accumulation and the LR schedule are handled here by hand (see train()); accelerate
    # provides the process group (DDP over NCCL/gloo), the device of each process and the DDP wrapper.
    return Accelerator(cpu=(device == "cpu"), mixed_precision="no")


def _resolve_resume(config: TrainConfig, run_dir: Path) -> Path | None:
    """The state folder to resume from (None: a fresh run); refuses to mix two runs."""
    from . import checkpoints

    states = checkpoints.list_checkpoints(run_dir, kind="state")
    unets = checkpoints.list_checkpoints(run_dir, kind="unet")
    if config.resume is None:
        if states or unets:
            raise RunFolderError(
                f"{run_dir} already holds a training run (checkpoints at steps "
                f"{sorted({s for s, _ in states + unets})}). Pass resume='latest' to continue it, or another "
                f"run_name to start a new run; delete the folder to start over.")
        if (run_dir / METRICS_NAME).exists():
            raise RunFolderError(
                f"{run_dir} holds the metrics of an earlier run that saved no checkpoint. Pass resume='latest' "
                "(which starts afresh when there is no checkpoint) or another run_name.")
        return None
    if str(config.resume).lower() == "latest":
        return checkpoints.latest_state(run_dir)
    path = Path(config.resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={config.resume!r}: no such state folder. Pass resume='latest' or a "
                                f"folder like {run_dir / 'ckpt' / 'state_500'}.")
    return path


# --------------------------------------------------------------------------------------------------- the loop
def train(config: TrainConfig, *, profile=None, cache=None, frozen=None,
          callback: Callable[[TrainEvent], Any] | Iterable[Callable[[TrainEvent], Any]] | None = None,
          ) -> TrainResult:
    """Train a UNet on the latent cache as ``config`` says; see the module docstring for what a step does.

    - ``profile``: the :class:`helpers.profiles.Profile` (device, where to build the cache); default: rebuilt
      from the config's fields.
    - ``cache``: a :class:`helpers.cache.LatentCache`; default: ``config.cache_dir``, else built from
      ``config.data_dir`` with the frozen models (main process), then loaded by every process.
    - ``frozen``: the :class:`helpers.frozen.FrozenModels`, used only to encode the fixed sample prompts once and
      to decode the sample grids (loaded when needed).
    - ``callback``: called with a :class:`TrainEvent` ("start", "log", "sample", "save", "end"); e.g.
      :class:`LiveLossPlot`. Raising KeyboardInterrupt in it stops the run like Ctrl-C (checkpoint saved).

    Returns a :class:`TrainResult`. Raises :class:`RunFolderError` rather than mixing two runs in one folder and
    :class:`NonFiniteLossError` when the loss diverges (the last good checkpoint stays as it was).
    """
    from . import checkpoints
    from .schedule import default_scheduler_config, training_scheduler

    config = TrainConfig.from_dict(config.to_dict())  # a private copy, validated
    callbacks = [] if callback is None else ([callback] if callable(callback) else list(callback))
    if profile is None:
        profile = _profile_from_config(config)
    want_device = config.device or profile.device
    accelerator = _make_accelerator(want_device)
    device = accelerator.device
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    distributed = world > 1
    mixed_precision = resolve_mixed_precision(config.mixed_precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    run_dir = config.run_path

    def emit(event: TrainEvent) -> None:
        if is_main:
            for cb in callbacks:
                cb(event)

    # ---- the cache (built once by the main process, loaded by all)
    if cache is None:
        cache = _obtain_cache(config, profile, frozen, accelerator)
    n_images = cache.n_images
    if n_images == 0:
        raise ValueError("The latent cache holds no images")
    hidden = int(cache.text_emb.shape[-1])

    # ---- the run folder: leftovers of an interrupted save, a run that is already there
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoints.clean_incomplete(run_dir)
    accelerator.wait_for_everyone()
    resume_path = _resolve_resume(config, run_dir)

    # ---- model, optimizer, schedules
    sched_config = default_scheduler_config(config.prediction_type)
    noise_scheduler = training_scheduler(sched_config)
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    latent_shape = tuple(cache.latent_shape)
    unet = _build_unet(config, latent_shape, hidden).to(device)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = _make_optimizer(params, config, device)
    lr_scheduler = _make_lr_scheduler(optimizer, config)
    ema = None
    if config.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=config.ema_warmup,
                       inv_gamma=config.ema_inv_gamma, power=config.ema_power, foreach=True)
    snr_w = _snr_weights(noise_scheduler.alphas_cumprod, config.snr_gamma, config.prediction_type)
    snr_w = snr_w.to(device) if snr_w is not None else None

    data_gen = torch.Generator().manual_seed(int(config.seed))
    step, epoch, pos, elapsed_before = 0, 0, 0, 0.0
    last_state = last_unet = None
    if resume_path is not None:
        extra = checkpoints.load_state(resume_path, model=unet, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                       ema=ema, generators={"data": data_gen})
        saved = extra.get("config") or {}
        diffs = config.differences(saved)
        if diffs:
            lines = "; ".join(f"{k}: checkpoint {b!r}, now {a!r}" for k, (a, b) in sorted(diffs.items()))
            raise RunFolderError(
                f"Cannot resume {resume_path} with a different config ({lines}). Resume with the same settings "
                f"(only {', '.join(sorted(RESUME_MAY_CHANGE - {'resume'}))} may change) or start another run_name.")
        step, epoch, pos = int(extra["step"]), int(extra["epoch"]), int(extra["pos"])
        elapsed_before = float(extra.get("elapsed", 0.0))
        if int(extra.get("world_size", world)) != world:
            warnings.warn(f"Resuming a run trained with {extra.get('world_size')} process(es) on {world}: the global "
                          f"batch changes from {config.global_batch(int(extra.get('world_size')))} to "
                          f"{config.global_batch(world)}.", stacklevel=2)
        last_state = resume_path
        here = [s for s, _ in checkpoints.list_checkpoints(run_dir, kind="state")]
        if resume_path.resolve().parent.parent != run_dir.resolve():
            if here:
                raise RunFolderError(
                    f"resume={str(resume_path)!r} belongs to another run folder, and {run_dir} already holds "
                    f"checkpoints ({here}): pass a new run_name to branch off {resume_path}.")
        elif any(s > step for s in here):
            raise RunFolderError(
                f"{run_dir} holds states after step {step} ({[s for s in here if s > step]}): resuming from "
                f"{resume_path} would overwrite them. Resume from 'latest', delete the later checkpoints, or pass "
                "another run_name.")
        for s, p in checkpoints.list_checkpoints(run_dir, kind="unet"):
            if s == step:
                last_unet = p
            elif s > step and is_main:  # written just before a crash, without its state: will be written again
                print(f"Removing {p}: it was written after the last complete training state (step {step}).")
                shutil.rmtree(p, ignore_errors=True)
        if is_main:
            _truncate_metrics(run_dir / METRICS_NAME, step)
            print(f"Resuming {run_dir.name} from {resume_path} (step {step}).")
    elif is_main:  # a fresh run (resume='latest' with no complete state: start afresh)
        (run_dir / METRICS_NAME).unlink(missing_ok=True)
        for s, p in checkpoints.list_checkpoints(run_dir, kind="unet"):
            print(f"Removing {p}: a UNet checkpoint without a training state cannot be resumed from.")
            shutil.rmtree(p, ignore_errors=True)
    if is_main:
        config.save(run_dir / CONFIG_NAME)
    start_step = step

    model = accelerator.prepare(unet) if distributed else unet
    per_rank = config.batch_size * config.grad_accum
    global_batch = per_rank * world
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if mixed_precision == "bf16"
                else contextlib.nullcontext())

    # ---- the fixed sample prompts: encoded once
    sampler = None
    prompt_emb = uncond_emb = None
    eval_on = config.eval_freq > 0 and bool(config.sample_prompts)
    if eval_on and is_main:
        if frozen is None:
            from .frozen import load_frozen_models

            frozen = load_frozen_models(profile)
        from .schedule import sampling_scheduler

        emb = frozen.text_encoder.encode(list(config.sample_prompts) + [""]).to("cpu", torch.float32)
        prompt_emb, uncond_emb = emb[:-1], emb[-1:]
        sampler = sampling_scheduler("ddim", sched_config)
    seeds = list(config.sample_seeds) or list(range(len(config.sample_prompts)))

    meta = {"ema": bool(config.ema), "profile": config.profile, "text_encoder": config.text_encoder,
            "vae": config.vae, "vae_subfolder": config.vae_subfolder, "resolution": config.resolution,
            "run_name": config.run_name}

    def sample_grid(at_step: int):
        """Sample the fixed prompts with the EMA weights (main process) -> samples/step_<step>.png."""
        from .plots import make_grid
        from .sampling import decode_to_pil, sample_latents

        unet.eval()
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        try:
            latents = sample_latents(unet, sampler, prompt_emb, uncond_emb, seeds,
                                     guidance_scale=config.sample_guidance, steps=config.sample_steps,
                                     latent_shape=latent_shape, progress=False)
            images = decode_to_pil(frozen.vae, latents)
        finally:
            if ema is not None:
                ema.restore(params)
            unet.train()
        grid = make_grid(images, ncols=min(len(images), 4 if len(images) <= 8 else 8),
                         labels=list(config.sample_prompts))
        path = run_dir / "samples" / f"step_{at_step}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp.png")
        grid.save(tmp)
        os.replace(tmp, path)
        return grid, path

    def save(at_step: int, at_epoch: int, at_pos: int, gen_state: torch.Tensor, elapsed: float):
        """UNet checkpoint (EMA weights) + the full state; main process only, the others wait."""
        nonlocal last_state, last_unet
        last_unet = run_dir / checkpoints.CKPT_DIR / f"unet_{at_step}"  # (what the main process writes)
        last_state = run_dir / checkpoints.CKPT_DIR / f"state_{at_step}"
        if is_main:
            last_unet = checkpoints.save_unet(run_dir, at_step, unet, scheduler_config=sched_config,
                                              meta={**meta, "step": at_step}, ema=ema)
            gen = torch.Generator()
            gen.set_state(gen_state)  # the data generator as it was at the end of step `at_step`
            extra = {"step": at_step, "epoch": at_epoch, "pos": at_pos, "elapsed": elapsed, "world_size": world,
                     "mixed_precision": mixed_precision, "samples_seen": at_step * global_batch,
                     "config": config.to_dict()}
            last_state = checkpoints.save_state(run_dir, at_step, model=unet, optimizer=optimizer,
                                                lr_scheduler=lr_scheduler, ema=ema, rng=True, extra=extra,
                                                generators={"data": gen})
            if config.keep_last:
                checkpoints.prune(run_dir, config.keep_last)
            emit(TrainEvent("save", at_step, config.max_steps, path=last_unet))
        accelerator.wait_for_everyone()

    losses: list[float] = []
    samples: list[Path] = []
    interrupted = False
    saved_at = step if resume_path is not None else -1
    emit(TrainEvent("start", step, config.max_steps, metrics={
        "global_batch": global_batch, "processes": world, "device": str(device), "mixed_precision": mixed_precision,
        "n_images": n_images, "resumed_from": str(resume_path) if resume_path else None, "run_dir": str(run_dir)}))
    if is_main:
        print(f"Training {run_dir.name}: {n_images} cached images, global batch {global_batch} = {config.batch_size} "
              f"x {world} process(es) x {config.grad_accum} accumulation, device {device}, mixed precision "
              f"{mixed_precision}, steps {step} -> {config.max_steps}.")
    if is_main and step >= config.max_steps:
        print(f"{run_dir.name} already finished at step {step} (max_steps={config.max_steps}); nothing to train. "
              "Raise max_steps to train further.")

    if eval_on and is_main and step == 0 and config.sample_at_start and step < config.max_steps:
        grid, path = sample_grid(0)
        samples.append(path)
        emit(TrainEvent("sample", 0, config.max_steps, image=grid, path=path))
    accelerator.wait_for_everyone()

    bar = tqdm(total=config.max_steps, initial=step, desc=f"train {config.run_name}", unit="step",
               disable=not is_main, dynamic_ncols=True)
    boundary = (step, epoch, pos, data_gen.get_state())  # the last consistent state
    t_session = time.perf_counter()
    t_window, window_losses, last_grad_norm = time.perf_counter(), [], float("nan")
    window_steps = 0
    in_update = False
    stop = _StopFlag()
    try:
        with stop:
            while step < config.max_steps:
                if stop.requested and not distributed:  # (distributed: agreed on below, after this step)
                    interrupted = True
                    break
                # -- the global batch, drawn at once from the loop's generator (independent of the split)
                idx, epoch, pos = _next_indices(n_images, global_batch, config.seed, epoch, pos)
                latents, text = cache.batch(idx, data_gen, flip_p=config.flip_p,
                                            caption_dropout=config.caption_dropout)
                noise = torch.randn(latents.shape, generator=data_gen)
                timesteps = torch.randint(0, num_train_timesteps, (global_batch,), generator=data_gen)
                shard = slice(rank * per_rank, (rank + 1) * per_rank)
                latents, text, noise, timesteps = latents[shard], text[shard], noise[shard], timesteps[shard]

                loss_sum = torch.zeros((), device=device)
                for k in range(config.grad_accum):
                    mb = slice(k * config.batch_size, (k + 1) * config.batch_size)
                    x0 = latents[mb].to(device, non_blocking=True)
                    eps = noise[mb].to(device, non_blocking=True)
                    t = timesteps[mb].to(device, non_blocking=True)
                    cond = text[mb].to(device, non_blocking=True)
                    sync = k == config.grad_accum - 1
                    ctx = model.no_sync() if distributed and not sync else contextlib.nullcontext()
                    with ctx:
                        noisy = noise_scheduler.add_noise(x0, eps, t)
                        target = (eps if config.prediction_type == "epsilon"
                                  else noise_scheduler.get_velocity(x0, eps, t))
                        with autocast:
                            pred = model(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
                        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
                        if snr_w is not None:
                            per_sample = per_sample * snr_w[t]
                        loss = per_sample.mean() / config.grad_accum
                        loss.backward()
                    loss_sum += loss.detach()

                # -- one number for all processes: the mean loss and "stop" (Ctrl-C on any process)
                if distributed:
                    packed = torch.stack([loss_sum, torch.tensor(float(stop.requested), device=device)])
                    torch.distributed.all_reduce(packed)
                    loss_value, stop_now = packed[0].item() / world, packed[1].item() > 0
                else:
                    loss_value, stop_now = loss_sum.item(), stop.requested
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(_nonfinite_message("loss", loss_value, step + 1, last_state, config))
                if config.max_grad_norm:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                else:
                    grad_norm = torch.linalg.vector_norm(
                        torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
                grad_norm = float(grad_norm)
                if not math.isfinite(grad_norm):
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(_nonfinite_message("gradient norm", grad_norm, step + 1, last_state,
                                                                config))
                lr_now = optimizer.param_groups[0]["lr"]  # the LR of this step (logged)
                in_update = True
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.step(params)
                step += 1
                boundary = (step, epoch, pos, data_gen.get_state())
                in_update = False

                losses.append(loss_value)
                window_losses.append(loss_value)
                window_steps += 1
                last_grad_norm = grad_norm
                if is_main:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_now:.2e}", refresh=False)
                if step % config.log_every == 0 or step == config.max_steps:
                    now = time.perf_counter()
                    record = {"step": step, "loss": sum(window_losses) / len(window_losses), "lr": lr_now,
                              "grad_norm": last_grad_norm,
                              "samples_per_s": window_steps * global_batch / max(now - t_window, 1e-9),
                              "elapsed": elapsed_before + now - t_session, "epoch": epoch}
                    if is_main:
                        _write_metrics(run_dir / METRICS_NAME, record)
                    emit(TrainEvent("log", step, config.max_steps, metrics=record))
                    t_window, window_losses, window_steps = now, [], 0

                if eval_on and step % config.eval_freq == 0:
                    if is_main:
                        grid, path = sample_grid(step)
                        samples.append(path)
                        emit(TrainEvent("sample", step, config.max_steps, image=grid, path=path))
                    accelerator.wait_for_everyone()
                if (config.save_freq and step % config.save_freq == 0) or step == config.max_steps:
                    save(step, epoch, pos, boundary[3], elapsed_before + time.perf_counter() - t_session)
                    saved_at = step
                if stop_now:
                    interrupted = True
                    break
    except KeyboardInterrupt:
        interrupted = True
        if in_update:
            if is_main:
                print(f"Interrupted in the middle of an optimizer update: not saved. The last checkpoint is "
                      f"{last_state}.", file=sys.stderr)
            saved_at = boundary[0]  # do not save a half-updated model
    finally:
        bar.close()

    if interrupted and saved_at != boundary[0]:
        b_step, b_epoch, b_pos, b_gen = boundary
        if is_main:
            print(f"Interrupted: saving a checkpoint at step {b_step}.", file=sys.stderr)
        save(b_step, b_epoch, b_pos, b_gen, elapsed_before + time.perf_counter() - t_session)
    elapsed = elapsed_before + time.perf_counter() - t_session
    result = TrainResult(step=boundary[0], run_dir=run_dir, checkpoint=last_unet, state=last_state, losses=losses,
                         start_step=start_step, interrupted=interrupted, finished=boundary[0] >= config.max_steps,
                         elapsed=elapsed, samples=samples, unet=unet, ema=ema)
    emit(TrainEvent("end", result.step, config.max_steps, metrics={"interrupted": interrupted, "elapsed": elapsed},
                    path=last_unet))
    return result


def _nonfinite_message(what: str, value: float, step: int, last_state, config: TrainConfig) -> str:
    where = f"the last good checkpoint is {last_state}" if last_state else "no checkpoint was saved yet"
    return (f"Training stopped: the {what} is {value} at step {step} (not finite). Nothing of this step was applied "
            f"or saved; {where}. Try a lower lr (now {config.lr}), mixed_precision='no' (now "
            f"{config.mixed_precision!r}), or check the data/cache; resume with resume='latest'.")


def _obtain_cache(config: TrainConfig, profile, frozen, accelerator):
    """Load ``config.cache_dir``, or build the cache from ``config.data_dir`` (main process first)."""
    from .cache import build_cache, load_cache

    if config.cache_dir:
        return load_cache(config.cache_dir)
    if not config.data_dir:
        raise ValueError("train() needs a cache: pass cache=..., or set cache_dir or data_dir in the config")
    folder = None
    if accelerator.is_main_process:
        from .data import load_train_set
        from .frozen import load_frozen_models

        frozen = frozen or load_frozen_models(profile)
        folder = build_cache(load_train_set(profile.data_dir), frozen, profile)
    accelerator.wait_for_everyone()
    if folder is None:  # the other processes: the same call finds the finished cache
        from .data import load_train_set
        from .frozen import load_frozen_models

        folder = build_cache(load_train_set(profile.data_dir), frozen or load_frozen_models(profile), profile)
    return load_cache(folder)


# --------------------------------------------------------------------------------------------------- notebook
class LiveLossPlot:
    """A training callback for notebooks: a loss curve redrawn in place, and each sample grid shown as it comes.

    >>> result = train(config, ..., callback=LiveLossPlot(every=20))

    ``every``: redraw after this many optimizer steps. ``history``: a resumed run first loads the curve of its
    ``metrics.jsonl`` (so the plot shows the whole run). Outside IPython it draws nothing (the progress bar and
    metrics.jsonl remain).
    """

    def __init__(self, every: int = 20, show_samples: bool = True, figsize: tuple[float, float] = (7.0, 3.0),
                 log_scale: bool = True, sample_width: int | None = None, history: bool = True) -> None:
        self.every = max(1, int(every))
        self.history = history
        self.show_samples = show_samples
        self.figsize = figsize
        self.log_scale = log_scale
        self.sample_width = sample_width
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.lr: list[float] = []
        self._handle = None
        self._last_draw = -1
        self.max_steps = None

    def __call__(self, event: TrainEvent) -> None:
        self.max_steps = event.max_steps
        if event.kind == "start" and self.history and event.metrics.get("resumed_from") and not self.steps:
            self.load_history(event.metrics["run_dir"])
            if self.steps:
                self.draw()
        elif event.kind == "log":
            self.steps.append(event.step)
            self.loss.append(event.metrics["loss"])
            self.lr.append(event.metrics["lr"])
            if event.step - self._last_draw >= self.every or event.step == event.max_steps:
                self.draw()
        elif event.kind == "sample" and self.show_samples and event.image is not None:
            self._display_image(event.image, f"samples at step {event.step}")
        elif event.kind == "end" and self.steps:
            self.draw()

    def load_history(self, run_dir: str | os.PathLike) -> LiveLossPlot:
        """Start from the curve of ``metrics.jsonl`` (a resumed run shows its whole history)."""
        for rec in read_metrics(run_dir):
            self.steps.append(rec["step"])
            self.loss.append(rec["loss"])
            self.lr.append(rec.get("lr", float("nan")))
        return self

    def figure(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=self.figsize)
        ax = fig.add_subplot(1, 1, 1)
        ax.plot(self.steps, self.loss, lw=1, color="tab:blue", label="loss")
        if len(self.loss) >= 5:
            k = max(2, len(self.loss) // 20)
            smooth = [sum(self.loss[max(0, i - k + 1):i + 1]) / len(self.loss[max(0, i - k + 1):i + 1])
                      for i in range(len(self.loss))]
            ax.plot(self.steps, smooth, lw=2, color="tab:orange", label=f"moving mean ({k} logs)")
        if self.log_scale and self.loss and min(self.loss) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (min-SNR weighted MSE)")
        if self.max_steps:
            ax.set_xlim(0, self.max_steps)
        ax2 = ax.twinx()
        ax2.plot(self.steps, self.lr, lw=1, ls="--", color="tab:gray")
        ax2.set_ylabel("learning rate", color="tab:gray")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        self._last_draw = self.steps[-1] if self.steps else 0
        try:
            from IPython.display import Image, display
        except ImportError:
            return
        png = _figure_png(self.figure())
        if self._handle is None:
            self._handle = display(Image(data=png), display_id=True)
        else:
            self._handle.update(Image(data=png))

    def _display_image(self, image, title: str) -> None:
        try:
            from IPython.display import Image, Markdown, display
        except ImportError:
            return
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        display(Markdown(f"**{title}**"))
        display(Image(data=buf.getvalue(), width=self.sample_width))


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def colour_prompts(captions: Sequence[str], n: int = 8, colours: Sequence[str] | None = None) -> list[str]:
    """Up to ``n`` captions that name ``n`` different colours (one caption per colour, in ``colours`` order).

    ``colours`` defaults to the named colours of the demo sprites (``helpers.demo_data.COLOURS``); captions
    that name two of them are skipped. Used to check that a model follows the colour of a prompt.
    """
    import re

    if colours is None:
        from .demo_data import COLOURS

        colours = list(COLOURS)
    words = {c: re.compile(rf"\b{re.escape(c)}\b", re.IGNORECASE) for c in colours}
    out = []
    for colour in colours:
        for cap in captions:
            named = [c for c, w in words.items() if w.search(cap)]
            if named == [colour]:
                out.append(cap)
                break
        if len(out) >= n:
            break
    return out


def named_colour(text: str, colours: Sequence[str] | None = None) -> str | None:
    """The first of ``colours`` (default: the demo sprites' colour names) that ``text`` names, else None."""
    import re

    if colours is None:
        from .demo_data import COLOURS

        colours = list(COLOURS)
    found = [(m.start(), c) for c in colours for m in [re.search(rf"\b{re.escape(c)}\b", text, re.IGNORECASE)] if m]
    return min(found)[1] if found else None


_NEUTRALS = {  # parts of a sprite that are not its body colour (eyes, horns, metal, wood, gold, mouth, outline)
    "eye": (250, 248, 236), "horn": (228, 210, 166), "metal": (186, 196, 212), "wood": (132, 84, 44),
    "gold": (246, 196, 36), "beak": (250, 168, 40), "mouth": (112, 24, 40), "outline": (22, 18, 30)}


def dominant_colour(image, palette: dict[str, tuple[int, int, int]] | None = None,
                    background: tuple[int, int, int] = (255, 255, 255)) -> str | None:
    """The palette colour that most pixels of a sprite show, or None for an (almost) empty image.

    Each pixel votes for the nearest of: every palette colour with its shaded and lit tones (x0.6, x0.7, and 35 %
    / 45 % towards white, as the demo sprites are drawn), and the neutral parts (eyes, horns, metal, outline...),
    whose votes do not count. Background pixels are ignored. ``palette`` defaults to the demo sprites' colours.
    On the demo set's own sprites (40 species x 5 actions) it names the right colour every time.
    """
    import numpy as np

    if palette is None:
        from .demo_data import COLOURS as palette  # noqa: N811
    names, points = [], []
    for name, rgb in palette.items():
        base = np.array(rgb, dtype=np.float32)
        for tone in (base, base * 0.6, base * 0.7, base + (255 - base) * 0.35, base + (255 - base) * 0.45):
            names.append(name)
            points.append(tone)
    for rgb in _NEUTRALS.values():
        names.append(None)
        points.append(np.array(rgb, dtype=np.float32))
    pts = np.stack(points)
    px = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    px = px[np.linalg.norm(px - np.array(background, np.float32), axis=1) > 40]
    if len(px) < 8:
        return None
    nearest = np.linalg.norm(px[:, None, :] - pts[None], axis=2).argmin(axis=1)
    votes: dict[str, int] = {}
    for i in nearest.tolist():
        if names[i] is not None:
            votes[names[i]] = votes.get(names[i], 0) + 1
    return max(votes, key=votes.get) if votes else None


# --------------------------------------------------------------------------------------------------- script
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.train",
        description="Train the UNet with a TrainConfig JSON file (e.g. outputs/<run>/train_config.json). "
                    "Runs as is, or under `accelerate launch --multi_gpu --num_processes N` / `torchrun`.")
    parser.add_argument("--config", required=True, help="a TrainConfig JSON file")
    parser.add_argument("--resume", default=None, help="'latest', 'none' or a state folder (overrides the file)")
    parser.add_argument("--max-steps", type=int, default=None, help="overrides max_steps")
    parser.add_argument("--run-dir", default=None, help="overrides run_dir")
    parser.add_argument("--result-json", default=None, help="write the TrainResult (main process) to this file")
    args = parser.parse_args(argv)

    config = TrainConfig.load(args.config)
    if args.resume is not None:
        config.resume = None if args.resume.lower() == "none" else args.resume
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.run_dir is not None:
        config.run_dir = args.run_dir
    result = train(config)
    print(result)
    if args.result_json and int(os.environ.get("RANK", "0")) == 0:
        Path(args.result_json).write_text(json.dumps({
            "step": result.step, "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
            "state": str(result.state), "interrupted": result.interrupted, "finished": result.finished,
            "losses": result.losses}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
