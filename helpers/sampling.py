"""Generation: batched classifier-free guidance, per-image seeds, checkpoints -> images, pipeline export.

Classifier-free guidance (CFG) runs the UNet on the unconditional and the conditional embeddings and moves the
prediction away from the unconditional one: ``eps = eps_uncond + g * (eps_cond - eps_uncond)``. Here both halves go
through ONE batched UNet call per step (``torch.cat([uncond, cond])``), not two calls as the course's sample code did.

Every image has its own ``torch.Generator`` seeded with its seed; its initial noise (and the noise of stochastic
samplers such as DDPM) is drawn from that generator only, so image ``i`` generated alone equals image ``i`` generated
inside a batch (up to the last bits of the batched matrix products, see :func:`sample_latents`).
"""

from __future__ import annotations

import inspect
import json
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .frozen import decode_latents, quiet_loading
from .paths import atomic_folder
from .schedule import SAMPLER_NAMES, sampling_scheduler, scheduler_config_or_course_default

__all__ = ["sample_latents", "decode_to_pil", "initial_noise", "TextToImage", "check_unet_folder", "default_batch_size",
           "export_pipeline", "load_pipeline", "timed_generate", "SAMPLER_NAMES"]


# --------------------------------------------------------------------------------------------------- core sampling
def _latent_shape(unet) -> tuple[int, int, int]:
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(unet.config.in_channels), int(h), int(w))


#: Images per UNet call when none is given: a GPU is only busy with large batches (each call holds 2 x this many
#: latents with guidance; the reference UNet at 32x32 latents needs ~25 MB per image in bf16 inference). A CPU gains
#: less, but still some: the demo UNet denoises 32 guided images faster in one call than in four calls of 8
#: (``benchmarks/cpu_threads.py``).
DEFAULT_BATCH_SIZE = {"cuda": 128, "cpu": 32}


def default_batch_size(device: torch.device | str) -> int:
    """Images per UNet call for ``device``: :data:`DEFAULT_BATCH_SIZE` (32 on anything but CUDA)."""
    return DEFAULT_BATCH_SIZE.get(torch.device(device).type, DEFAULT_BATCH_SIZE["cpu"])


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def initial_noise(seeds: Sequence[int], latent_shape: Sequence[int], *, generator_device: str = "cpu"
                  ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Unit Gaussian noise [B, *latent_shape], image i drawn from its own generator seeded with ``seeds[i]``.

    Returns the noise and the generators (their state has moved past the noise; stochastic samplers draw from them).
    """
    gens = [torch.Generator(generator_device).manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *latent_shape), generator=g, device=generator_device) for g in gens])
    return noise, gens


@torch.inference_mode()
def sample_latents(unet, scheduler, cond_emb: torch.Tensor, uncond_emb: torch.Tensor, seeds: Sequence[int], *,
                   guidance_scale: float = 7.5, steps: int = 50, latent_shape: Sequence[int] | None = None,
                   batch_size: int | None = None, progress: bool = True, generator_device: str = "cpu",
                   ) -> torch.Tensor:
    """Sample scaled latents [B, C, h, w] with classifier-free guidance (one batched UNet call per step).

    - ``cond_emb`` [B, L, D]: one text embedding per image; ``uncond_emb`` [1 or B, L, D]: the encoding of "".
    - ``seeds``: one per image. Image i starts from noise drawn by ``torch.Generator(generator_device)
      .manual_seed(seeds[i])``, scaled by ``scheduler.init_noise_sigma``; stochastic steps (DDPM, ancestral
      samplers) get the list of per-image generators, so they stay per image too.
    - ``guidance_scale`` 1.0 skips the unconditional half (plain conditional sampling, half the work).
    - ``batch_size`` images per chunk (default: all); each chunk restarts ``scheduler.set_timesteps``.
    - On CUDA the UNet runs under bf16 autocast; the scheduler arithmetic stays float32.

    Batch independence: the noise and the scheduler steps are exactly per image, but a batched UNet call may
    differ from an unbatched one in the last bits (the matrix-product kernels depend on the batch size), so "the
    same image alone and in a batch" agree to ~1e-6 relative (max |diff| ~5e-5 on latents of size ~50 in the
    tests), not bit for bit. Decoded to 8-bit pixels they are the same picture (0-1 levels apart at most).
    """
    seeds = [int(s) for s in seeds]
    n = cond_emb.shape[0]
    if len(seeds) != n:
        raise ValueError(f"got {n} conditional embeddings but {len(seeds)} seeds: give one seed per image")
    if uncond_emb.shape[0] not in (1, n):
        raise ValueError(f"uncond_emb must have batch size 1 or {n}, not {uncond_emb.shape[0]}")
    if uncond_emb.shape[1:] != cond_emb.shape[1:]:
        raise ValueError(f"uncond_emb {tuple(uncond_emb.shape)} and cond_emb {tuple(cond_emb.shape)} differ in [L, D]")
    cross = getattr(unet.config, "cross_attention_dim", None)
    if isinstance(cross, int) and cond_emb.shape[-1] != cross:
        raise ValueError(f"the text embeddings have size {cond_emb.shape[-1]} but the UNet's cross_attention_dim is "
                         f"{cross}: use the text encoder the UNet was trained with")
    latent_shape = tuple(latent_shape) if latent_shape is not None else _latent_shape(unet)
    param = next(unet.parameters())
    device, dtype = param.device, param.dtype
    batch_size = max(1, int(batch_size or n))
    do_cfg = float(guidance_scale) != 1.0
    step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    out = []
    n_chunks = math.ceil(n / batch_size)
    bar = tqdm(total=n_chunks * steps, desc="sampling", disable=not progress, leave=False)
    for start in range(0, n, batch_size):
        idx = slice(start, min(n, start + batch_size))
        b = idx.stop - idx.start
        noise, gens = initial_noise(seeds[idx], latent_shape, generator_device=generator_device)
        scheduler.set_timesteps(steps, device=device)
        latents = noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma
        cond = cond_emb[idx].to(device=device, dtype=dtype)
        if do_cfg:
            unc = uncond_emb.to(device=device, dtype=dtype)
            unc = unc.expand(b, -1, -1) if unc.shape[0] == 1 else unc[idx]
            emb = torch.cat([unc, cond])
        else:
            emb = cond
        extra = {"generator": gens} if step_takes_generator else {}
        for t in scheduler.timesteps:
            x = torch.cat([latents, latents]) if do_cfg else latents
            x = scheduler.scale_model_input(x, t).to(dtype)
            with _autocast(device):
                pred = unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]
            pred = pred.float()
            if do_cfg:
                pred_uncond, pred_cond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = scheduler.step(pred, t, latents, **extra, return_dict=False)[0]
            bar.update(1)
        out.append(latents)
    bar.close()
    return torch.cat(out)


def _to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, mode="RGB") for a in arr]


@torch.inference_mode()
def decode_to_pil(vae, latents_scaled: torch.Tensor, batch_size: int = 8) -> list:
    """Decode scaled latents to RGB PIL images (``helpers.frozen.decode_latents`` in chunks of ``batch_size``)."""
    images = []
    for start in range(0, latents_scaled.shape[0], max(1, batch_size)):
        images += _to_pil(decode_latents(vae, latents_scaled[start:start + batch_size]))
    return images


# --------------------------------------------------------------------------------------------------- checkpoints
UNET_CLASS = "UNet2DConditionModel"
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
META_NAME = "workbook.json"


def _data_error(message: str):
    from .data import DataError

    return DataError(message)


def _unet_folder(folder: Path) -> tuple[Path, Path]:
    """``(unet folder, folder holding the scheduler config)``; accepts a UNet folder or a diffusers pipeline folder."""
    if not folder.exists():
        raise _data_error(f"{folder} does not exist. Pass a UNet checkpoint folder such as "
                          "outputs/<run>/ckpt/unet_<step> (helpers.checkpoints.list_checkpoints lists them).")
    if not folder.is_dir():
        raise _data_error(f"{folder} is a file; a UNet checkpoint is a folder (config.json + "
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
        raise _data_error(f"{folder} is not a UNet checkpoint: it has no config.json.{hint} A UNet checkpoint is a "
                          "folder written by UNet2DConditionModel.save_pretrained (config.json + "
                          "diffusion_pytorch_model.safetensors), e.g. outputs/<run>/ckpt/unet_<step>.")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise _data_error(f"{cfg_path} cannot be read as JSON ({err}). The checkpoint is damaged: use another "
                          "unet_<step> folder or save the UNet again with save_pretrained.") from err
    cls_name = config.get("_class_name") if isinstance(config, dict) else None
    if cls_name != UNET_CLASS:
        what = cls_name or (f"transformers model ({(config.get('architectures') or ['?'])[0]})"
                            if isinstance(config, dict) else "something else")
        raise _data_error(f"{cfg_path} describes a {what}, not a {UNET_CLASS}. Pass the folder of the UNet "
                          "(outputs/<run>/ckpt/unet_<step>, or the unet/ subfolder of a Stable Diffusion folder).")
    if not any((folder / w).is_file() for w in WEIGHT_NAMES):
        raise _data_error(f"{folder} has a UNet config.json but no weights ({WEIGHT_NAMES[0]}). The checkpoint was "
                          "not written completely: use an earlier unet_<step> folder, or save it again.")
    return config


def check_unet_matches(config: dict, frozen, where: str | Path) -> None:
    """The UNet config must fit the frozen models: cross_attention_dim = text hidden size, in_channels = VAE's."""
    te, vae = frozen.text_encoder, frozen.vae
    cross = config.get("cross_attention_dim")
    if isinstance(cross, (list, tuple)):
        cross = cross[0]
    if cross != te.hidden_size:
        raise _data_error(
            f"{where}: the UNet's cross_attention_dim is {cross} but the text encoder {te.model_id} has hidden size "
            f"{te.hidden_size}. This UNet was trained with another text encoder: load it with the profile it was "
            "trained with (see its workbook.json), or build the UNet with cross_attention_dim="
            f"{te.hidden_size}.")
    latent_c = int(vae.config.latent_channels)
    for key in ("in_channels", "out_channels"):
        if config.get(key, latent_c) != latent_c:
            raise _data_error(
                f"{where}: the UNet has {key}={config.get(key)} but the VAE has {latent_c} latent channels. Use the "
                "VAE the UNet was trained with (the profile in its workbook.json), or a UNet built with "
                f"in_channels=out_channels={latent_c}.")


def _read_meta(folder: Path) -> dict:
    path = folder / META_NAME
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except ValueError:
        warnings.warn(f"{path} is not valid JSON; ignoring it", stacklevel=3)
        return {}


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
        from diffusers import UNet2DConditionModel

        unet_dir, sched_dir = _unet_folder(Path(folder))
        config = check_unet_folder(unet_dir)
        check_unet_matches(config, frozen, unet_dir)
        meta = _read_meta(unet_dir)
        enc = frozen.text_encoder
        if meta.get("text_encoder") and not _same_model(meta["text_encoder"], enc.model_id):
            warnings.warn(f"{unet_dir} was trained with the text encoder {meta['text_encoder']} but "
                          f"{enc.model_id} is loaded: the images will not follow the prompts. Use the profile it "
                          "was trained with.", stacklevel=2)
        sched = scheduler_config_or_course_default(sched_dir if sched_dir != unet_dir else unet_dir)
        with _quiet():
            unet = UNet2DConditionModel.from_pretrained(unet_dir)
        p = next(frozen.vae.parameters())
        unet.to(p.device, memory_format=torch.channels_last if p.device.type == "cuda" else torch.preserve_format)
        tti = cls(unet, frozen, sched, checkpoint=unet_dir, meta=meta, base_seed=base_seed)
        res = getattr(getattr(frozen, "profile", None), "resolution", None)
        if res:
            f = 2 ** (len(frozen.vae.config.block_out_channels) - 1)
            side = tti.latent_shape[-1] * f
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
        return _latent_shape(self.unet)

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


# --------------------------------------------------------------------------------------------------- export
def _quiet():
    """Silence transformers/diffusers load reports and bars (helpers.frozen's switch) and their Python warnings."""
    from contextlib import ExitStack

    stack = ExitStack()
    stack.enter_context(quiet_loading())
    import diffusers.utils.logging as dlog

    if dlog.is_progress_bar_enabled():
        dlog.disable_progress_bar()
        stack.callback(dlog.enable_progress_bar)
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    return stack


def load_pipeline(folder: str | Path, device: str | torch.device | None = None):
    """``DiffusionPipeline.from_pretrained(folder)`` without the load reports (for a folder of
    :func:`export_pipeline`, whose BERT-like text encoder makes diffusers log an expected-type notice)."""
    with _quiet():
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


_EXPORT_README = """# Stable Diffusion pipeline exported from the workbook

Checkpoint: {checkpoint}
Text encoder: {text_encoder} ({kind})  |  VAE: {vae}  |  scheduler: DDIM with the schedule the UNet was trained with

```python
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained("{out_dir}")
image = pipe("a red slime monster", num_inference_steps=50, guidance_scale=7.5).images[0]
```
{note}"""

_BERT_NOTE = """
The text encoder is BERT-like, not CLIP. StableDiffusionPipeline runs it as it runs CLIP (input ids, output
last_hidden_state) and passes the attention mask because text_encoder/config.json sets `use_attention_mask: true`
(a switch the pipeline reads); the tokenizer pads to 77 tokens (tokenizer_config.json `model_max_length: 77`).
That reproduces the workbook's embeddings exactly. diffusers logs "Expected types for text_encoder" on loading:
expected, harmless.
"""


def export_pipeline(checkpoint_folder: str | Path, frozen, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a diffusers ``StableDiffusionPipeline`` folder that ``DiffusionPipeline.from_pretrained(out_dir)`` loads.

    Components: the checkpoint's UNet, the profile's VAE, text encoder and tokenizer, a ``DDIMScheduler`` built from
    the checkpoint's ``scheduler_config.json``; no safety checker. A CLIP text encoder is exported as Stable
    Diffusion's; a BERT-like one (the demo profile) is exported with ``use_attention_mask: true`` in its config and a
    77-token tokenizer, so the pipeline computes the same embeddings as the workbook (see the README.md it writes).
    Written to a temporary folder, then renamed; an existing non-empty ``out_dir`` needs ``overwrite=True``.
    """
    with _quiet():
        from diffusers import DDIMScheduler, StableDiffusionPipeline

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds files. Pass overwrite=True to replace it, or choose "
                              "another folder.")
    tti = TextToImage.from_checkpoint(checkpoint_folder, frozen)
    te = frozen.text_encoder
    kind = getattr(te, "kind", "clip")
    if kind not in ("clip", "bert"):
        raise ValueError(f"export_pipeline supports CLIP and BERT-like text encoders, not {kind!r}")
    pipe = StableDiffusionPipeline(
        vae=frozen.vae, text_encoder=te.model, tokenizer=te.tokenizer, unet=tti.unet,
        scheduler=DDIMScheduler.from_config(tti.scheduler_config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    with atomic_folder(out_dir, replace=True) as tmp:
        with _quiet():
            pipe.save_pretrained(tmp, safe_serialization=True)
        # the tokenizer pads/truncates to 77 tokens as the workbook's TextEncoder does
        tok_cfg = tmp / "tokenizer" / "tokenizer_config.json"
        data = json.loads(tok_cfg.read_text(encoding="utf-8"))
        data["model_max_length"] = int(getattr(te, "max_length", 77))
        tok_cfg.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        if kind == "bert":
            te_cfg = tmp / "text_encoder" / "config.json"
            data = json.loads(te_cfg.read_text(encoding="utf-8"))
            data["use_attention_mask"] = True
            te_cfg.write_text(json.dumps(data, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(_EXPORT_README.format(
            checkpoint=tti.checkpoint, text_encoder=te.model_id, kind=kind,
            vae=getattr(getattr(frozen, "profile", None), "vae", "?"), out_dir=out_dir,
            note=_BERT_NOTE if kind == "bert" else ""), encoding="utf-8")
    return out_dir
