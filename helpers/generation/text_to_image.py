"""A trained UNet checkpoint + the frozen models + its noise schedule: prompts -> images (:class:`TextToImage`).

A checkpoint folder is checked before it is loaded (:func:`check_unet_folder`: a diffusers
``UNet2DConditionModel`` with weights) and must fit the frozen models (:func:`check_unet_matches`).
"""

from __future__ import annotations

import json
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import diffusers.utils.logging as dlog
import torch
from diffusers import UNet2DConditionModel

from helpers.checkpoints import check_unet_checkpoint, is_complete, read_meta
from helpers.data import DataError
from helpers.frozen import downsample_factor, quiet_loading
from helpers.schedule import sampling_scheduler, scheduler_config_or_course_default

from .sampling import decode_to_pil, default_batch_size, latent_shape_of, sample_latents

__all__ = ["TextToImage", "check_unet_folder", "check_unet_matches", "timed_generate", "quiet"]


UNET_CLASS = "UNet2DConditionModel"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _unet_folder(folder: Path) -> tuple[Path, Path]:
    """``(unet folder, folder holding the scheduler config)``; accepts a UNet folder or a diffusers pipeline folder."""
    if not folder.exists():
        raise DataError(f"{folder} does not exist. Pass a UNet checkpoint folder such as "
                          "outputs/<run>/ckpt/unet_<step> (helpers.checkpoints.list_checkpoints lists them).")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file; a UNet checkpoint is a folder (config.json + "
                          "diffusion_pytorch_model.safetensors), e.g. outputs/<run>/ckpt/unet_<step>.")
    if not (folder / "config.json").is_file() and (folder / "unet" / "config.json").is_file():
        return folder / "unet", folder  # a diffusers pipeline folder: its unet/ and scheduler/
    return folder, folder


def check_unet_folder(folder: str | Path) -> dict:
    """Check ``folder`` holds a diffusers ``UNet2DConditionModel`` (config.json + weights); return its config.

    Raises :class:`helpers.data.DataError` naming the file and the fix.
    """
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        hint = ""
        if (folder / "ckpt").is_dir():
            hint = " It looks like a run folder: pick one of its ckpt/unet_<step> folders."
        elif folder.name.startswith("state_"):
            hint = " state_<step> folders are for resuming training; pick the unet_<step> folder of the same step."
        raise DataError(f"{folder} is not a UNet checkpoint: it has no config.json.{hint} A UNet checkpoint is a "
                          "folder written by UNet2DConditionModel.save_pretrained (config.json + "
                          "diffusion_pytorch_model.safetensors), e.g. outputs/<run>/ckpt/unet_<step>.")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{cfg_path} cannot be read as JSON ({err}). The checkpoint is damaged: use another "
                          "unet_<step> folder or save the UNet again with save_pretrained.") from err
    cls_name = config.get("_class_name") if isinstance(config, dict) else None
    if cls_name != UNET_CLASS:
        what = cls_name or (f"transformers model ({(config.get('architectures') or ['?'])[0]})"
                            if isinstance(config, dict) else "something else")
        raise DataError(f"{cfg_path} describes a {what}, not a {UNET_CLASS}. Pass the folder of the UNet "
                          "(outputs/<run>/ckpt/unet_<step>, or the unet/ subfolder of a Stable Diffusion folder).")
    if not any((folder / w).is_file() for w in WEIGHT_NAMES):
        raise DataError(f"{folder} has a UNet config.json but no weights ({WEIGHT_NAMES[0]}). The checkpoint was "
                          "not written completely: use an earlier unet_<step> folder, or save it again.")
    return config


def check_unet_matches(config: dict, frozen, where: str | Path) -> None:
    """The UNet config must fit the frozen models: cross_attention_dim = text hidden size, in_channels = VAE's."""
    te, vae = frozen.text_encoder, frozen.vae
    cross = config.get("cross_attention_dim")
    if isinstance(cross, (list, tuple)):
        cross = cross[0]
    if cross != te.hidden_size:
        raise DataError(
            f"{where}: the UNet's cross_attention_dim is {cross} but the text encoder {te.model_id} has hidden size "
            f"{te.hidden_size}. This UNet was trained with another text encoder: load it with the profile it was "
            "trained with (see its workbook.json), or build the UNet with cross_attention_dim="
            f"{te.hidden_size}.")
    latent_c = int(vae.config.latent_channels)
    for key in ("in_channels", "out_channels"):
        if config.get(key, latent_c) != latent_c:
            raise DataError(
                f"{where}: the UNet has {key}={config.get(key)} but the VAE has {latent_c} latent channels. Use the "
                "VAE the UNet was trained with (the profile in its workbook.json), or a UNet built with "
                f"in_channels=out_channels={latent_c}.")


def _same_model(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return True
    return str(a).rstrip("/") == str(b).rstrip("/") or Path(str(a)).name == Path(str(b)).name


class TextToImage:
    """A trained UNet + the frozen text encoder and VAE + the noise schedule: prompts -> images.

    >>> tti = TextToImage.from_checkpoint("outputs/main/ckpt/unet_2000", frozen)
    >>> images = tti.generate(["a red slime monster"], seeds=[0], guidance_scale=7.5, steps=50)

    Image ``i`` uses seed ``seeds[i]`` (default ``base_seed + i``); the same prompt and seed give the same image
    alone or inside a batch.
    """

    def __init__(self, unet, frozen, scheduler_config: dict, *, checkpoint: str | Path | None = None,
                 meta: dict | None = None, base_seed: int = 0) -> None:
        self.unet = unet.eval().requires_grad_(False)
        self.frozen = frozen
        self.text_encoder = frozen.text_encoder
        self.vae = frozen.vae
        self.scheduler_config = dict(scheduler_config)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.meta = dict(meta or {})
        self.base_seed = int(base_seed)
        self._uncond: torch.Tensor | None = None
        check_unet_matches(dict(unet.config), frozen, self.checkpoint or "the UNet")

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls, folder: str | Path, frozen, *, base_seed: int = 0) -> "TextToImage":
        """Load ``folder``: a ``ckpt/unet_<step>/`` of a run (with its ``scheduler_config.json``), any folder
        holding a diffusers ``UNet2DConditionModel`` (without a scheduler config: the course sample code's
        ``DDPMScheduler()`` schedule, with a warning), or a diffusers pipeline folder (its ``unet/``)."""
        unet_dir, sched_dir = _unet_folder(Path(folder))
        config = check_unet_folder(unet_dir)
        if is_complete(unet_dir, "unet"):  # a folder of a run: its files against their digests (foreign: as is)
            check_unet_checkpoint(unet_dir)
        check_unet_matches(config, frozen, unet_dir)
        meta = read_meta(unet_dir)
        enc = frozen.text_encoder
        if meta.get("text_encoder") and not _same_model(meta["text_encoder"], enc.model_id):
            warnings.warn(f"{unet_dir} was trained with the text encoder {meta['text_encoder']} but "
                          f"{enc.model_id} is loaded: the images will not follow the prompts. Use the profile it "
                          "was trained with.", stacklevel=2)
        sched = scheduler_config_or_course_default(sched_dir if sched_dir != unet_dir else unet_dir)
        with quiet():
            unet = UNet2DConditionModel.from_pretrained(unet_dir)
        p = next(frozen.vae.parameters())
        unet.to(p.device, memory_format=torch.channels_last if p.device.type == "cuda" else torch.preserve_format)
        tti = cls(unet, frozen, sched, checkpoint=unet_dir, meta=meta, base_seed=base_seed)
        res = getattr(getattr(frozen, "profile", None), "resolution", None)
        if res:
            side = tti.latent_shape[-1] * downsample_factor(frozen.vae)
            if side != res:
                warnings.warn(f"{unet_dir}: the UNet's sample_size gives {side} px images but the profile's "
                              f"resolution is {res} px", stacklevel=2)
        return tti

    @property
    def step(self) -> int | None:
        """The training step of the checkpoint (from workbook.json or the folder name), if known."""
        if "step" in self.meta:
            return int(self.meta["step"])
        name = self.checkpoint.name if self.checkpoint else ""
        return int(name[5:]) if name.startswith("unet_") and name[5:].isdigit() else None

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return latent_shape_of(self.unet)

    def __repr__(self) -> str:
        c, h, w = self.latent_shape
        return (f"TextToImage(checkpoint={str(self.checkpoint) if self.checkpoint else None!r}, step={self.step}, "
                f"latents={c}x{h}x{w}, text_encoder={self.text_encoder.model_id!r}, "
                f"schedule={self.scheduler_config.get('beta_schedule')} "
                f"{self.scheduler_config.get('prediction_type')})")

    # ----------------------------------------------------------------------------------------------- generation
    def encode(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """Text embeddings ``[N, 77, D]`` of ``prompts`` (warns naming prompts longer than 77 tokens)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        return self.text_encoder.encode(prompts)

    @property
    def uncond_embedding(self) -> torch.Tensor:
        """The encoding of "" ``[1, 77, D]`` (computed once)."""
        if self._uncond is None:
            self._uncond = self.text_encoder.encode([""])
        return self._uncond

    def seeds_for(self, n: int, seeds: Sequence[int] | int | None = None) -> list[int]:
        """``seeds`` as a list of ``n`` ints (default ``base_seed + i``; one int ``s`` means ``s + i``)."""
        if seeds is None:
            return [self.base_seed + i for i in range(n)]
        if isinstance(seeds, int):
            return [seeds + i for i in range(n)]
        seeds = [int(s) for s in seeds]
        if len(seeds) != n:
            raise ValueError(f"got {n} prompts but {len(seeds)} seeds: give one seed per prompt (or none)")
        return seeds

    def generate_latents(self, cond_emb: torch.Tensor, seeds: Sequence[int], *, guidance_scale: float = 7.5,
                         steps: int = 50, scheduler: str = "ddim", batch_size: int | None = None,
                         progress: bool = True) -> torch.Tensor:
        """Scaled latents for text embeddings ``cond_emb`` [N, 77, D] (see :func:`sample_latents`);
        ``batch_size`` None: :func:`default_batch_size` of the UNet's device."""
        sched = sampling_scheduler(scheduler, self.scheduler_config)
        return sample_latents(self.unet, sched, cond_emb, self.uncond_embedding, seeds, guidance_scale=guidance_scale,
                              steps=steps, batch_size=batch_size or default_batch_size(self.device), progress=progress)

    def generate_from_embeddings(self, cond_emb: torch.Tensor, seeds: Sequence[int] | int | None = None, *,
                                 guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim",
                                 batch_size: int | None = None, progress: bool = True) -> list:
        """PIL images for text embeddings (e.g. a blend of two prompts' embeddings)."""
        seeds = self.seeds_for(cond_emb.shape[0], seeds)
        batch_size = batch_size or default_batch_size(self.device)
        latents = self.generate_latents(cond_emb, seeds, guidance_scale=guidance_scale, steps=steps,
                                        scheduler=scheduler, batch_size=batch_size, progress=progress)
        return decode_to_pil(self.vae, latents, batch_size=batch_size)

    def generate(self, prompts: Sequence[str] | str, seeds: Sequence[int] | int | None = None, *,
                 guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim", batch_size: int | None = None,
                 progress: bool = True) -> list:
        """One RGB PIL image per prompt.

        ``seeds``: one per prompt (default ``base_seed + i``). ``guidance_scale`` 1.0 turns guidance off.
        ``scheduler``: "ddim" (default), "dpm++" (good with ~15 steps), "euler" or "ddpm".
        ``batch_size`` images per UNet call (each call holds 2 x batch_size latents with guidance; None:
        :func:`default_batch_size` of the device, 128 on a GPU).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            return []
        seeds = self.seeds_for(len(prompts), seeds)
        emb = self.encode(prompts)
        return self.generate_from_embeddings(emb, seeds, guidance_scale=guidance_scale, steps=steps,
                                             scheduler=scheduler, batch_size=batch_size, progress=progress)

    def __call__(self, prompts, seeds=None, **kwargs) -> list:
        return self.generate(prompts, seeds, **kwargs)

    def compile(self, mode: str | None = "max-autotune-no-cudagraphs") -> TextToImage:
        """Compile the UNet with ``torch.compile`` (worth it on a GPU for a large export: the first call of each
        batch shape compiles, minutes, then every step is faster). Returns ``self``."""
        self.unet = torch.compile(self.unet, mode=mode)
        return self


def timed_generate(tti: TextToImage, prompts, seeds=None, **kwargs) -> tuple[list, float]:
    """``(images, seconds)`` of one :meth:`TextToImage.generate` call."""
    start = time.perf_counter()
    images = tti.generate(prompts, seeds, **kwargs)
    return images, time.perf_counter() - start


def quiet() -> ExitStack:
    """Silence transformers/diffusers load reports and bars (:func:`helpers.frozen.quiet_loading`) and their Python
    warnings, for the block of a ``with``."""
    stack = ExitStack()
    stack.enter_context(quiet_loading())
    if dlog.is_progress_bar_enabled():
        dlog.disable_progress_bar()
        stack.callback(dlog.enable_progress_bar)
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack
