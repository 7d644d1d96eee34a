"""The one noise schedule of the workbook, for training AND sampling.

The course's sample code trained with a bare ``DDPMScheduler()`` (linear betas 1e-4 ... 0.02) but sampled with Stable
Diffusion's DDIM config (scaled_linear 0.00085 ... 0.012): the sampler then walks a noise schedule the UNet never saw.
Here both schedulers are built from ONE config dict, saved next to every UNet checkpoint as
``scheduler_config.json`` (diffusers format), so a checkpoint always samples with the schedule it was trained on.

>>> config = default_scheduler_config()
>>> noise_scheduler = training_scheduler(config)         # DDPMScheduler: add_noise / get_velocity
>>> sampler = sampling_scheduler("ddim", config)          # or "dpm++", "euler", "ddpm"
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import diffusers

from helpers.paths import atomic_write

SCHEDULER_CONFIG_NAME = "scheduler_config.json"

#: The training schedule of ``DDPMScheduler()`` with no arguments (linear betas 1e-4 ... 0.02, epsilon), as the
#: course's sample code trained with it. Used for foreign UNet checkpoints that carry no ``scheduler_config.json``
#: (with a warning: we cannot know what they were trained with). Only the training side is copied from
#: ``DDPMScheduler()``; the sampling-only settings are the workbook's: ``clip_sample=False`` (DDPMScheduler()'s
#: True clips the predicted x0 to [-1, 1], which is meant for pixels, not latents) and trailing timesteps.
COURSE_SAMPLE_CODE_CONFIG: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "trailing",
}

PREDICTION_TYPES = ("epsilon", "v_prediction")

# name -> (diffusers class name, extra config entries)
_SAMPLERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
}
SAMPLER_NAMES: tuple[str, ...] = tuple(_SAMPLERS)


def default_scheduler_config(prediction_type: str = "epsilon") -> dict:
    """THE noise schedule of the workbook: Stable Diffusion's betas, 1000 training steps.

    - ``scaled_linear`` betas 0.00085 ... 0.012 (Stable Diffusion's; the course's VAE latents were made for it).
    - ``clip_sample=False``: latents are not in [-1, 1], clipping the predicted x0 would distort them.
    - ``set_alpha_to_one=False`` and ``steps_offset=1``: Stable Diffusion's DDIM settings (the last DDIM step ends
      at alpha_cumprod[0], not at a perfectly clean 1.0).
    - ``timestep_spacing="trailing"``: the sampling timesteps are counted back from t=999, so the first step always
      sees t=999 - the noise level of the pure Gaussian noise sampling starts from. With ``"leading"`` (SD v1's
      setting) 15 DPM-Solver steps would start at t=925 and 50 DDIM steps at t=981: the UNet is told the input is
      less noisy than it is (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
      table 2). Training is unaffected (it draws t from all of 0..999). ``steps_offset`` only matters for
      "leading" and is kept for SD compatibility.
    - ``prediction_type``: "epsilon" (the UNet predicts the noise, as SD v1 and the course) or "v_prediction".
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, not {prediction_type!r}")
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "prediction_type": prediction_type,
    }


def _clean(config) -> dict:
    """A plain dict without diffusers' bookkeeping keys (``_class_name``, ``_diffusers_version``...)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def training_scheduler(config: dict | None = None):
    """The ``DDPMScheduler`` the training loop uses (``add_noise``, ``get_velocity``) built from ``config``."""
    return diffusers.DDPMScheduler.from_config(_clean(config if config is not None else default_scheduler_config()))


def sampling_scheduler(name: str = "ddim", config: dict | None = None):
    """A sampler built from the same config: "ddim" (default), "dpm++" (DPM-Solver++ 2M), "euler", "ddpm".

    "ddpm" is stochastic: :func:`helpers.generation.sample_latents` passes one generator per image to its steps, so
    a single image still reproduces inside a batch.
    """
    key = (name or "ddim").strip().lower()
    key = {"dpm": "dpm++", "dpmsolver++": "dpm++", "dpm-solver++": "dpm++", "dpmpp": "dpm++"}.get(key, key)
    if key not in _SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}: choose one of {', '.join(SAMPLER_NAMES)}")
    class_name, extra = _SAMPLERS[key]
    cls = getattr(diffusers, class_name)
    return cls.from_config({**_clean(config if config is not None else default_scheduler_config()), **extra})


def save_scheduler_config(config: dict, folder: str | os.PathLike) -> Path:
    """Write ``folder/scheduler_config.json`` in diffusers' format (a ``DDIMScheduler`` config).

    ``DDIMScheduler.from_pretrained(folder)`` (and every scheduler's ``from_config``) reads it back.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"_class_name": "DDIMScheduler", "_diffusers_version": diffusers.__version__, **_clean(config)}
    return atomic_write(folder / SCHEDULER_CONFIG_NAME, json.dumps(data, indent=2) + "\n")


def load_scheduler_config(folder: str | os.PathLike) -> dict | None:
    """The config saved in ``folder/scheduler_config.json`` (also ``folder/scheduler/``), or None when absent."""
    folder = Path(folder)
    for path in (folder / SCHEDULER_CONFIG_NAME, folder / "scheduler" / SCHEDULER_CONFIG_NAME):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err}). Delete it or rewrite it with "
                                 "helpers.schedule.save_scheduler_config.") from err
            if not isinstance(data, dict):
                raise ValueError(f"{path} must hold a JSON object (a diffusers scheduler config)")
            return _clean(data)
    return None


def scheduler_config_or_course_default(folder: str | os.PathLike) -> dict:
    """The checkpoint's saved schedule, else the course sample code's ``DDPMScheduler()`` defaults (warns)."""
    config = load_scheduler_config(folder)
    if config is None:
        warnings.warn(
            f"{Path(folder)} has no {SCHEDULER_CONFIG_NAME}: assuming it was trained with the course sample code's "
            "DDPMScheduler() defaults (linear betas 1e-4..0.02). If it was trained with another schedule, save that "
            f"config there with helpers.schedule.save_scheduler_config.", stacklevel=2)
        config = dict(COURSE_SAMPLE_CODE_CONFIG)
    return config
