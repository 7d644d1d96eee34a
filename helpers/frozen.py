"""Frozen pretrained encoders: the text encoder (CLIP or BERT-like) and the VAE (``AutoencoderKL``).

Both load with the normal ``from_pretrained`` code path from a hub id (through the HF cache) or a local folder, and
come back frozen (``eval()``, ``requires_grad_(False)``). Conventions (as in ``helpers``):

- text embeddings: ``[N, 77, D]`` float32 last hidden state, ``padding="max_length", max_length=77,
  truncation=True``; the unconditional embedding is the encoding of ``""``;
- images: float32 ``[B, 3, H, W]`` in ``[-1, 1]``;
- latents: "raw" = the VAE's ``latent_dist`` mean/std; "scaled" = raw * ``vae.config.scaling_factor``.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

MAX_LENGTH = 77  # Stable Diffusion's text length: CLIP's 77 positions, also used for BERT-like encoders
CLIP_MODEL_TYPES = ("clip", "clip_text_model")


class ModelLoadError(OSError):
    """A model could not be loaded; the message names the id or folder and what to do."""


# --------------------------------------------------------------------------------------------------- loading utils
@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the load reports of transformers/diffusers (e.g. CLIP's unused vision weights) and their bars."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    t_level, d_level = tlog.get_verbosity(), dlog.get_verbosity()
    t_bar = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    dlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(t_level)
        dlog.set_verbosity(d_level)
        if t_bar:
            tlog.enable_progress_bar()


def _looks_like_path(model_id: str) -> bool:
    """True for things that can only be folders (absolute/relative paths), False for ``owner/name`` hub ids."""
    s = str(model_id)
    return (Path(s).is_absolute() or s.startswith((".", "~")) or "\\" in s or s.count("/") > 1
            or s.endswith("/"))


def _where(model_id: str, subfolder: str | None) -> str:
    return f"{model_id}" + (f" (subfolder {subfolder!r})" if subfolder else "")


def _check_local(model_id: str | Path, subfolder: str | None, what: str) -> Path | None:
    """For a local folder: check it holds a model (``config.json``) and return it; None for a hub id."""
    path = Path(model_id).expanduser()
    if not path.exists():
        if _looks_like_path(str(model_id)):
            raise ModelLoadError(
                f"The {what} folder {path} does not exist. Pass an existing folder that holds the model files "
                "(config.json + weights), a hub id such as 'openai/clip-vit-base-patch32', or use profile='demo'.")
        return None
    if not path.is_dir():
        raise ModelLoadError(f"The {what} path {path} is a file, not a model folder (a folder with config.json).")
    folder = path / subfolder if subfolder else path
    if not (folder / "config.json").exists():
        hint = ""
        for sub in ("vae", "text_encoder"):
            if not subfolder and (path / sub / "config.json").exists():
                hint = f" It has a {sub}/ subfolder: pass subfolder={sub!r}."
        raise ModelLoadError(
            f"{folder} is not a model folder: it has no config.json.{hint} Pass a folder saved with "
            "save_pretrained (config.json + weights) or a hub id, or use profile='demo'.")
    return folder


def _hub_error(model_id: str, subfolder: str | None, what: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Cannot load the {what} {_where(model_id, subfolder)}: {type(err).__name__}: {err}\n"
        f"What to do: with network access it downloads once into the HF cache; offline, bring its files into the HF "
        f"cache (e.g. `hf download {model_id}` on a machine with network, then copy ~/.cache/huggingface) "
        "or pass a local folder that holds them (config.json + weights); or run the workbook with profile='demo'.")


# --------------------------------------------------------------------------------------------------- text encoder
class TextEncoder:
    """A frozen text encoder + its tokenizer, producing ``[N, 77, D]`` embeddings.

    ``kind`` is "clip" (CLIPTextModel, causal attention, no attention mask: as Stable Diffusion) or "bert"
    (any ``AutoModel``, run with its attention mask). ``hidden_size`` is ``D`` (the UNet's cross_attention_dim).
    """

    def __init__(self, model_id: str, kind: str, tokenizer: Any, model: torch.nn.Module,
                 max_length: int = MAX_LENGTH) -> None:
        self.model_id = str(model_id)
        self.kind = kind
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length
        self.hidden_size = int(model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def __repr__(self) -> str:
        return (f"TextEncoder({self.model_id!r}, kind={self.kind!r}, hidden_size={self.hidden_size}, "
                f"max_length={self.max_length}, device={self.device})")

    def token_lengths(self, prompts: Sequence[str]) -> list[int]:
        """Untruncated token counts of ``prompts``, special tokens included (a prompt longer than
        ``max_length`` is truncated by :meth:`encode`)."""
        prompts = _as_list(prompts)
        if not prompts:
            return []
        with warnings.catch_warnings(), quiet_loading():  # "sequence longer than model_max_length" notices
            warnings.simplefilter("ignore")
            ids = self.tokenizer(prompts, add_special_tokens=True, truncation=False, padding=False)["input_ids"]
        return [len(x) for x in ids]

    def truncated(self, prompts: Sequence[str]) -> list[tuple[str, int]]:
        """``(prompt, token count)`` for every prompt longer than ``max_length`` tokens."""
        prompts = _as_list(prompts)
        return [(p, n) for p, n in zip(prompts, self.token_lengths(prompts)) if n > self.max_length]

    def encode_with_report(self, prompts: Sequence[str], batch_size: int = 64,
                           progress: bool = False) -> tuple[torch.Tensor, list[tuple[str, int]]]:
        """Like :meth:`encode` but returns ``(embeddings, truncated)`` and does not warn."""
        prompts = _as_list(prompts)
        truncated = self.truncated(prompts)
        outs = []
        starts = range(0, len(prompts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="text encoder", disable=not progress or len(starts) <= 1):
                batch = prompts[start:start + batch_size]
                tok = self.tokenizer(batch, padding="max_length", max_length=self.max_length, truncation=True,
                                     return_tensors="pt")
                input_ids = tok["input_ids"].to(self.device)
                if self.kind == "clip":
                    out = self.model(input_ids=input_ids)
                else:
                    kwargs = {"input_ids": input_ids, "attention_mask": tok["attention_mask"].to(self.device)}
                    if "token_type_ids" in tok:
                        kwargs["token_type_ids"] = tok["token_type_ids"].to(self.device)
                    out = self.model(**kwargs)
                outs.append(out.last_hidden_state.float())
        if not outs:
            emb = torch.zeros(0, self.max_length, self.hidden_size, device=self.device)
        else:
            emb = torch.cat(outs)
        return emb.clone(), truncated  # clone: a normal tensor, not an inference-mode one

    def encode(self, prompts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Encode ``prompts`` to ``[N, 77, D]`` float32 (on the encoder's device).

        Prompts longer than 77 tokens are truncated, and one warning names each of them with its token count.
        """
        emb, truncated = self.encode_with_report(prompts, batch_size=batch_size, progress=progress)
        if truncated:
            lines = "\n".join(f"  {n} tokens: {p!r}" for p, n in truncated)
            warnings.warn(
                f"{len(truncated)} prompt(s) are longer than {self.max_length} tokens for {self.model_id} and were "
                f"truncated (only the first {self.max_length} tokens are encoded):\n{lines}",
                UserWarning, stacklevel=2)
        return emb

    def __call__(self, prompts: Sequence[str], **kwargs) -> torch.Tensor:
        return self.encode(prompts, **kwargs)


def _as_list(prompts: Sequence[str] | str) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prompts must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
    return prompts


def load_text_encoder(model_id: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      *, subfolder: str | None = None, tokenizer_subfolder: str | None = None) -> TextEncoder:
    """Load a frozen text encoder from a hub id or a local folder.

    CLIP (config ``model_type`` "clip" or "clip_text_model", e.g. ``openai/clip-vit-base-patch32``) loads as
    ``CLIPTokenizer`` + ``CLIPTextModel``; anything else as ``AutoTokenizer`` + ``AutoModel`` (BERT-like, e.g.
    all-MiniLM-L6-v2). Texts are always 77 tokens long, even when the model has more positions.
    For a Stable Diffusion folder pass ``subfolder="text_encoder"`` (the tokenizer is then read from
    ``tokenizer/``).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

    model_id = str(model_id)
    _check_local(model_id, subfolder, "text encoder")
    if subfolder == "text_encoder" and tokenizer_subfolder is None:
        tokenizer_subfolder = "tokenizer"
    sub_kw = {"subfolder": subfolder} if subfolder else {}
    tok_kw = {"subfolder": tokenizer_subfolder} if tokenizer_subfolder else {}
    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(model_id, **sub_kw)
    except (OSError, ValueError) as err:
        raise _hub_error(model_id, subfolder, "text encoder", err) from err
    model_type = getattr(config, "model_type", "")
    kind = "clip" if model_type in CLIP_MODEL_TYPES else "bert"
    try:
        with quiet_loading():
            if kind == "clip":
                tokenizer = CLIPTokenizer.from_pretrained(model_id, **tok_kw)
                model = CLIPTextModel.from_pretrained(model_id, dtype=dtype, **sub_kw)
            else:
                tokenizer = AutoTokenizer.from_pretrained(model_id, **tok_kw)
                model = AutoModel.from_pretrained(model_id, dtype=dtype, **sub_kw)
    except (OSError, ValueError) as err:
        raise _hub_error(model_id, subfolder, "text encoder", err) from err
    if kind == "clip":
        max_pos = int(getattr(model.config, "max_position_embeddings", MAX_LENGTH))
        if max_pos < MAX_LENGTH:
            raise ModelLoadError(f"{model_id}: a CLIP text model with {max_pos} positions cannot encode "
                                 f"{MAX_LENGTH} tokens.")
    if not hasattr(model.config, "hidden_size"):
        raise ModelLoadError(f"{model_id} ({type(model).__name__}) has no hidden_size: not a text encoder "
                             "(expected CLIP or a BERT-like model).")
    model.eval().requires_grad_(False).to(device)
    return TextEncoder(model_id, kind, tokenizer, model)


# --------------------------------------------------------------------------------------------------- VAE
def load_vae(model_id: str | Path, subfolder: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32):
    """Load a frozen ``AutoencoderKL`` (eval, no grad) from a hub id or a local folder.

    The course uses ``load_vae("CompVis/stable-diffusion-v1-4", subfolder="vae")``.
    """
    from diffusers import AutoencoderKL

    model_id = str(model_id)
    folder = _check_local(model_id, subfolder, "VAE")
    if folder is not None:
        try:
            cls_name = json.loads((folder / "config.json").read_text()).get("_class_name")
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{folder / 'config.json'} cannot be read as JSON ({err}).") from err
        if cls_name != "AutoencoderKL":
            if not cls_name:
                arch = json.loads((folder / "config.json").read_text()).get("architectures") or ["?"]
                cls_name = f"transformers model ({arch[0]})"
            raise ModelLoadError(
                f"{folder} holds a {cls_name}, not an AutoencoderKL. "
                "Pass the folder of the VAE (for a Stable Diffusion folder: subfolder='vae').")
    kw = {"subfolder": subfolder} if subfolder else {}
    try:
        with quiet_loading(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            vae = AutoencoderKL.from_pretrained(model_id, torch_dtype=dtype, **kw)
    except (OSError, ValueError) as err:
        raise _hub_error(model_id, subfolder, "VAE", err) from err
    vae.eval().requires_grad_(False).to(device)
    return vae


def scaling_factor(vae) -> float:
    """The factor that makes latents have std ~ 1 (``vae.config.scaling_factor``; 0.18215 for SD v1-4)."""
    value = getattr(vae.config, "scaling_factor", None)
    return 1.0 if value is None else float(value)


def downsample_factor(vae) -> int:
    """Image side / latent side (8 for SD's VAE: 2 ** (levels - 1))."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae, resolution: int) -> tuple[int, int, int]:
    """``(C, h, w)`` of the latents of a ``resolution`` px image."""
    f = downsample_factor(vae)
    return (int(vae.config.latent_channels), resolution // f, resolution // f)


def _vae_device_dtype(vae) -> tuple[torch.device, torch.dtype]:
    p = next(vae.parameters())
    return p.device, p.dtype


def encode_images(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``images`` ``[B,3,H,W]`` in [-1, 1] -> ``(mean_raw, std_raw)`` of the latent distribution, float32, unscaled,
    on the VAE's device (multiply by :func:`scaling_factor` to get what the UNet sees)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"encode_images expects [B, 3, H, W] images, got shape {tuple(images.shape)}")
    device, dtype = _vae_device_dtype(vae)
    with torch.inference_mode():
        dist = vae.encode(images.to(device=device, dtype=dtype)).latent_dist
        return dist.mean.float().clone(), dist.std.float().clone()


def decode_latents(vae, latents_scaled: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images ``[B,3,H,W]`` float32 in [-1, 1] (divides by :func:`scaling_factor` first)."""
    device, dtype = _vae_device_dtype(vae)
    with torch.inference_mode():
        x = vae.decode(latents_scaled.to(device=device, dtype=dtype) / scaling_factor(vae)).sample
        return x.float().clamp(-1, 1).clone()


# --------------------------------------------------------------------------------------------------- both
@dataclass
class FrozenModels:
    """The profile's frozen text encoder and VAE."""

    text_encoder: TextEncoder
    vae: Any  # diffusers.AutoencoderKL
    profile: Any  # helpers.profiles.Profile

    @property
    def cross_attention_dim(self) -> int:
        """The text encoder's hidden size (the UNet's cross_attention_dim)."""
        return self.text_encoder.hidden_size

    @property
    def scaling_factor(self) -> float:
        return scaling_factor(self.vae)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of the latents at the profile's resolution."""
        return latent_shape(self.vae, self.profile.resolution)

    def summary(self) -> str:
        te, vae = self.text_encoder, self.vae
        c, h, w = self.latent_shape
        vae_name = self.profile.vae + (f"/{self.profile.vae_subfolder}" if self.profile.vae_subfolder else "")
        return (f"text encoder: {te.model_id} ({te.kind}, {type(te.model).__name__}, "
                f"{parameter_count(te.model) / 1e6:.1f} M params, hidden size {te.hidden_size}, "
                f"{te.max_length} tokens)\n"
                f"VAE:          {vae_name} ({parameter_count(vae) / 1e6:.1f} M params, "
                f"{self.profile.resolution} px -> {c}x{h}x{w} latents, scaling_factor {self.scaling_factor:.5g})")


def load_frozen_models(profile) -> FrozenModels:
    """Load the profile's text encoder and VAE, frozen, on ``profile.device``.

    A VAE that the demo stack trains on the profile's data (``profile.vae_trained_here``) is trained first when it
    is missing (``demo_vae.ensure_demo_vae``).
    """
    if profile.vae_trained_here:
        from .demo_vae import ensure_demo_vae

        ensure_demo_vae(profile)
    text_encoder = load_text_encoder(profile.text_encoder, device=profile.device)
    vae = load_vae(profile.vae, subfolder=profile.vae_subfolder, device=profile.device)
    return FrozenModels(text_encoder=text_encoder, vae=vae, profile=profile)


def parameter_count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
