"""What a training run depends on: :class:`TrainConfig` (saved as ``outputs/<run>/train_config.json``), which of its
fields may change when a run is resumed, and what the "auto" settings (``mixed_precision``, the speed levers) mean
on this machine.

>>> config = TrainConfig.for_profile(profile, run_name="main", max_steps=2000)   # the profile's defaults, overridden
>>> config.save(config.run_path / CONFIG_NAME)                             # what `python -m helpers.training` reads
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from helpers.data import read_test_prompts
from helpers.paths import atomic_write, outputs_root
from helpers.schedule import PREDICTION_TYPES, SAMPLER_NAMES

from .losses import LOSS_WEIGHTINGS, TIMESTEP_SAMPLINGS
from .tracking import REPORT_TO

__all__ = ["TrainConfig", "RESUME_MAY_CHANGE", "CONFIG_NAME", "CPU_AUTO_MIXED_PRECISION", "resolve_mixed_precision",
           "SpeedLevers", "resolve_speed_levers", "CACHE_ON_DEVICE_SHARE", "default_sample_prompts"]

#: What ``mixed_precision="auto"`` means on CPU: measured with ``benchmarks/train_throughput.py --precision``
#: on the demo preset (see benchmarks/RESULTS.md). On CUDA "auto" is bf16 (where the GPU supports it).
CPU_AUTO_MIXED_PRECISION = "no"

#: Config fields that may differ when resuming (they do not change what the weights become).
RESUME_MAY_CHANGE = frozenset({
    "run_name", "max_steps", "eval_freq", "save_freq", "keep_states", "keep_unets", "log_every", "report_to", "resume", "device", "run_dir",
    "data_dir", "cache_dir", "sample_prompts", "sample_seeds", "sample_steps", "sample_guidance", "sample_scheduler",
    "sample_at_start", "cache_on_device", "channels_last", "compile", "check_every_step",
})

CONFIG_NAME = "train_config.json"

#: The demo's budget on a data set of one's own: at least this many passes over the cached images. Measured on two
#: outside sets of ~2,800 images (benchmarks/budget_study.py, RESULTS.md "Training budget"): 2,400 steps (13.6
#: epochs) followed held-out prompts about twice as often as 800 (retrieval top-1 0.41-0.58 vs 0.19-0.23, chance
#: 0.016). The generated demo set (608 images) keeps its 800 steps (21 epochs).
DEMO_EPOCHS = 14


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``outputs/<run>/train_config.json`` and in every state).

    Pick defaults with :meth:`for_profile`; every field can be overridden there. ``batch_size`` is per process and
    micro-batch: the optimizer sees ``batch_size x processes x grad_accum`` images per step.

    The speed levers (None = "auto", resolved per device by :func:`resolve_speed_levers`; benchmarks/RESULTS.md
    has what each one is worth):

    - ``cache_on_device``: keep a copy of the latent cache in GPU memory and draw every batch there with a
      generator on the GPU (no host->device copy per step). Auto: on CUDA when the cache takes at most
      ``CACHE_ON_DEVICE_SHARE`` of the free GPU memory; elsewhere off (on a CPU the cache already is where the
      step runs). It changes the random stream (a CUDA generator), so a run resumes with the setting it was
      saved with.
    - ``channels_last``: the UNet's weights and inputs in NHWC memory order (the layout GPU tensor cores want).
      Auto: on CUDA; off elsewhere.
    - ``compile``: ``torch.compile`` the UNet (the first steps of a session compile, minutes for the reference
      UNet; reported as ``compile_s`` and left out of samples/s). Off unless set: it needs Triton and a C
      compiler, and pays off only over thousands of steps.
    - ``check_every_step``: read the loss and gradient norm back and check them for NaN/inf before every update
      (a host synchronisation per step: nothing non-finite is ever applied). False: only every ``log_every``
      steps and before every checkpoint or sample grid (the GPU never waits for the host; a NaN then stops the
      run at the next check, the steps since the previous check may have been applied, and no checkpoint after
      them is written). Auto: every step except on CUDA.

    Automatic on CUDA, no field: TF32 matmuls, cuDNN autotuning, bf16 autocast (``mixed_precision="auto"``),
    fused AdamW, and diffusers' ``AttnProcessor2_0`` (``scaled_dot_product_attention``, flash attention on
    Ampere and newer) in every attention layer.
    """

    run_name: str = "main"
    run_dir: str | None = None  # default: <outputs>/<run_name>
    # -- the profile (what the cache and the frozen models are)
    profile_name: str = "demo"  # the name of the profile ("course" or "demo"; helpers.profiles)
    smoke: bool = False
    data_dir: str | None = None  # the data set (the command line builds/finds the cache from it)
    cache_dir: str | None = None  # a cache folder from helpers.frozen.cache.build_cache (command line)
    crop_to_content: bool = False  # the profile's image preparation and data-source columns (the command line
    image_column: str = "image"  # rebuilds the same cache from data_dir with them)
    caption_column: str = "text"
    resolution: int = 64
    text_encoder: str = ""
    vae: str = ""
    vae_subfolder: str | None = None
    unet_preset: str = "demo"
    unet_overrides: dict = field(default_factory=dict)  # UNet2DConditionModel config entries to change
    device: str | None = None  # for_profile: the profile's; None: cuda > mps > cpu
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
    snr_gamma: float | None = 5.0  # the gamma of the loss weighting; None: plain MSE
    loss_weighting: str = "min_snr"  # "min_snr", "soft_min_snr" or "none" (helpers.training.losses.loss_weights)
    timestep_sampling: str = "uniform"  # "uniform" or "logit_normal" (helpers.training.losses.sample_timesteps)
    timestep_loc: float = 0.0  # logit_normal: t / T = sigmoid(N(timestep_loc, timestep_scale))
    timestep_scale: float = 1.0
    caption_dropout: float = 0.1
    flip_p: float = 0.5
    mixed_precision: str = "auto"  # "bf16", "no" or "auto" (bf16 on CUDA, CPU_AUTO_MIXED_PRECISION on CPU)
    # -- what happens on the side
    eval_freq: int = 500  # sample the fixed prompts every eval_freq steps (0: never)
    save_freq: int = 500  # checkpoint every save_freq steps (and at the end)
    keep_states: int | None = 2  # keep the newest N resumable states (~3.9 GB each in the course; None: all)
    keep_unets: int | None = None  # keep the newest N UNet checkpoints (None: all, chapters 05/06 compare them)
    log_every: int = 10
    sample_prompts: list = field(default_factory=list)
    sample_seeds: list = field(default_factory=list)  # one per prompt (default 0, 1, 2, ...)
    sample_steps: int = 50
    sample_guidance: float = 3.0
    sample_scheduler: str = "ddim"  # the sampler of the grids: one of helpers.schedule.SAMPLER_NAMES
    sample_at_start: bool = True  # a grid at step 0 (what noise looks like) in a fresh run
    report_to: str | None = None  # "tensorboard": also log curves and grids to <run>/logs (helpers.training.tracking)
    # -- speed levers (None: auto, see the class docstring)
    cache_on_device: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    check_every_step: bool | None = None
    seed: int = 0
    resume: str | None = None  # None (refuses when the run folder holds a run), "latest", or a state folder

    # ---------------------------------------------------------------- construction / (de)serialisation
    @classmethod
    def for_profile(cls, profile, n_images: int | None = None, **overrides) -> TrainConfig:
        """Defaults for ``profile``: course (reference UNet, 256 px, eval/save every 500 steps), demo (CPU-sized
        UNet, a few hundred steps, minutes on a laptop CPU) or smoke (a handful of steps).

        ``n_images`` (the cached training images) sizes the demo's budget to the data: at least
        :data:`DEMO_EPOCHS` passes over them, never fewer than the 800 steps the demo set was tuned with; sample
        grids and checkpoints four times per run."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {sorted(unknown)}")
        run_name = overrides.get("run_name", "main")
        base = dict(
            run_name=run_name, run_dir=str(profile.run_dir(run_name)), profile_name=profile.name, smoke=profile.smoke,
            data_dir=str(profile.data_dir), resolution=profile.resolution, text_encoder=str(profile.text_encoder),
            vae=str(profile.vae), vae_subfolder=profile.vae_subfolder, unet_preset=profile.unet_preset,
            device=profile.device, crop_to_content=profile.crop_to_content, image_column=profile.image_column,
            caption_column=profile.caption_column)
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
            # benchmarks/recipe_study.py (equal compute, scored by the demo judge on the 64 held-out test prompts,
            # see benchmarks/RESULTS.md; two seeds each): v-prediction (epsilon: species adherence 20-27 % vs 73-75 %),
            # lr 2e-3 (73-86 %) and logit-normal timesteps (80 %, the lowest judge Frechet distance); together 83-84 %.
            # Round 2 (lr 4e-3, EMA, caption dropout, batch 32, UNet width/depth) found nothing better at this
            # budget. Sample grids at guidance 3: 86-88 % (guidance 4: 83-84 %, 2: 84-86 %, 6: 73-78 %).
            base.update(batch_size=16, grad_accum=1, max_steps=800, lr=2e-3, warmup_steps=40, eval_freq=200,
                        save_freq=200, log_every=10, ema_decay=0.999, prediction_type="v_prediction",
                        timestep_sampling="logit_normal", sample_steps=25, sample_guidance=3.0, n_prompts=8)
            if n_images:  # benchmarks/budget_study.py: ~3,000 outside images learn far more in 2,400 steps than 800
                steps = max(800, math.ceil(DEMO_EPOCHS * n_images / base["batch_size"]))
                base.update(max_steps=steps, eval_freq=steps // 4, save_freq=steps // 4)
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
        if self.prediction_type not in PREDICTION_TYPES:
            problems.append(f"prediction_type must be 'epsilon' or 'v_prediction', not {self.prediction_type!r}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            problems.append(f"loss_weighting must be one of {', '.join(LOSS_WEIGHTINGS)}, not {self.loss_weighting!r}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            problems.append(f"timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLINGS)}, not "
                            f"{self.timestep_sampling!r}")
        if self.sample_scheduler not in SAMPLER_NAMES:
            problems.append(f"sample_scheduler must be one of {', '.join(SAMPLER_NAMES)}, not {self.sample_scheduler!r}")
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
        if self.report_to not in REPORT_TO:
            problems.append(f"report_to must be None or 'tensorboard', not {self.report_to!r}")
        for name in ("keep_states", "keep_unets"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                problems.append(f"{name} must be None or >= 1")
        if problems:
            raise ValueError("Invalid TrainConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = _renamed(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown TrainConfig field(s) {unknown}; known fields: {sorted(names)}")
        config = cls(**data)
        config.validate()
        return config

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")

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
        return Path(self.run_dir) if self.run_dir else outputs_root() / self.run_name

    def global_batch(self, num_processes: int = 1) -> int:
        return self.batch_size * self.grad_accum * num_processes

    def differences(self, other: TrainConfig | dict) -> dict[str, tuple[Any, Any]]:
        """Fields that matter for the weights and differ: ``{name: (self's, other's)}``."""
        mine, theirs = self.to_dict(), _renamed(other) if isinstance(other, dict) else other.to_dict()
        out = {}
        for name, value in mine.items():
            if name in RESUME_MAY_CHANGE:
                continue
            saved = theirs.get(name, _DEFAULTS.get(name, _MISSING))  # a field newer than the checkpoint: its default
            if _comparable(name, value) != _comparable(name, saved):
                out[name] = (value, theirs.get(name, "<missing>"))
        return out


_MISSING = object()
#: Fields renamed since a config could have been saved: old name -> new name (a saved run still loads and resumes).
_RENAMED = {"profile": "profile_name"}


def _renamed(data: dict) -> dict:
    """``data`` with the old names of renamed fields replaced by the new ones; the former ``keep_last`` (N of each
    kind, None: all) becomes ``keep_states`` and ``keep_unets``."""
    data = {_RENAMED.get(k, k): v for k, v in data.items()}
    if "keep_last" in data:
        keep = data.pop("keep_last")
        data = {"keep_states": keep, "keep_unets": keep, **data}
    return data
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _comparable(name: str, value):
    """Model paths compare by their last component (a moved checkout still resumes); tuples as lists."""
    if name in ("text_encoder", "vae") and isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    if isinstance(value, tuple):
        return list(value)
    return value


def default_sample_prompts(profile, n: int = 8) -> list[str]:
    """``n`` fixed prompts spread over the profile's test.json, or, for data without one (an imagefolder, a
    ``datasets`` source), over the training set's distinct captions: the same every run."""
    if Path(profile.test_json).is_file():
        prompts = [p.text_prompt for p in read_test_prompts(profile.test_json)]
    elif Path(profile.data_dir).exists():
        prompts = [c for c in profile.load_train_set(check=False, verbose=False).distinct_captions() if c]
    else:  # no data (yet): no fixed prompts
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


#: The largest share of the free GPU memory that ``cache_on_device=None`` lets the latent cache take.
CACHE_ON_DEVICE_SHARE = 0.25


@dataclass(frozen=True)
class SpeedLevers:
    """The speed levers of a run as resolved for one device (see :class:`TrainConfig`)."""

    cache_on_device: bool
    channels_last: bool
    compile: bool
    check_every_step: bool


def resolve_speed_levers(config: TrainConfig, device: torch.device | str, cache_nbytes: int | None = None
                         ) -> SpeedLevers:
    """The levers of ``config`` on ``device``; None (auto) becomes the device's default. ``cache_nbytes``: the size
    of the latent cache (None: it cannot be moved, so it is not kept on the device unless asked)."""
    device = torch.device(device)
    cuda = device.type == "cuda"

    def auto(value: bool | None, default: bool) -> bool:
        return default if value is None else bool(value)

    fits = False
    if cuda and cache_nbytes is not None:
        free, _ = torch.cuda.mem_get_info(device)
        fits = cache_nbytes <= CACHE_ON_DEVICE_SHARE * free
    return SpeedLevers(cache_on_device=auto(config.cache_on_device, fits),
                       channels_last=auto(config.channels_last, cuda), compile=bool(config.compile),
                       check_every_step=auto(config.check_every_step, not cuda))
