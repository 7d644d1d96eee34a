"""The denoiser: a text-conditioned ``UNet2DConditionModel`` (diffusers), its presets, and what it costs.

A conditional UNet takes three inputs and returns one tensor:

- ``sample``: the noisy latents ``[B, 4, h, w]`` (scaled VAE latents plus noise at timestep ``t``);
- ``timestep``: ``[B]`` integers in ``[0, 1000)``, turned into a sinusoidal embedding and an MLP
  ("time embedding") that every ResNet block adds to its features;
- ``encoder_hidden_states``: the text embeddings ``[B, 77, D]`` that the cross-attention layers attend to
  (``D`` = ``cross_attention_dim`` = the text encoder's hidden size: 512 for CLIP ViT-B/32, 384 for MiniLM);

and predicts the noise (same shape as ``sample``). Down blocks halve the resolution, up blocks double it back and
concatenate the down path's features (the skip connections).

Presets (see :data:`PRESETS`): ``reference`` (the course's UNet, 241.36 M parameters with CLIP),
``demo`` (sized for a CPU and 16x16x4 latents of 64 px images) and ``tiny`` (smoke tests: seconds).
``cross_attention_dim`` always follows the text encoder and ``sample_size`` the latent size: both are arguments of
:func:`build_unet`, never part of a preset.

What a UNet costs (parameters per block, FLOPs, memory, shapes, attention) is :mod:`helpers.unet.costs`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import AutoConfig

__all__ = [
    "PRESETS", "REFERENCE_PARAMETERS", "reference_config", "unet_config", "build_unet", "text_hidden_size",
    "build_for_profile", "levels_factor",
]

#: Parameters of the reference UNet with CLIP ViT-B/32's text width (cross_attention_dim=512).
REFERENCE_PARAMETERS = 241_363_972

_REFERENCE = {
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (256, 384, 512, 768),
    "layers_per_block": 2,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    # diffusers' historical naming: for UNet2DConditionModel "attention_head_dim" is the NUMBER of heads
    # (diffusers issue 2011); 16 heads -> 16 dims per head at 256 channels, 32 at 512.
    "attention_head_dim": 16,
}

#: Architecture presets. ``cross_attention_dim`` and ``sample_size`` are not part of a preset: they follow the
#: text encoder and the latent size (arguments of :func:`build_unet`).
PRESETS: dict[str, dict[str, Any]] = {
    # The course's UNet (latents 32x32x4 of 256 px images). Attention at 32, 16 and 8 px, none in the 4x4 block.
    "reference": dict(_REFERENCE),
    # CPU-sized: 16x16x4 latents of 64 px images, 4.6 M parameters. No attention at 16x16 (256 tokens, the
    # costly resolution); cross-attention at 8x8 and 4x4 and in the mid block. About 0.4-0.5 s per AdamW step
    # (forward + backward) at batch 32 on 2 CPU cores, ~11 GFLOPs per forward pass at batch 32.
    "demo": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 4,  # 4 heads: 16 dims per head at 64 channels, 32 at 128
        "norm_num_groups": 16,  # 2 channels per group at 32 channels (32 groups would be instance norm)
    },
    # Smoke tests: two levels, a few hundred thousand parameters, a forward pass in milliseconds.
    "tiny": {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 2,
        "norm_num_groups": 8,
    },
}

# Text widths of encoders the workbook knows, for when their config cannot be read (offline, no HF cache).
_KNOWN_HIDDEN_SIZES = {
    "openai/clip-vit-base-patch32": 512,
    "openai/clip-vit-base-patch16": 512,
    "openai/clip-vit-large-patch14": 768,
    "sentence-transformers/all-MiniLM-L6-v2": 384,
}


# --------------------------------------------------------------------------------------------------- configs
def _listify(config: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def unet_config(preset: str, *, cross_attention_dim: int, sample_size: int, in_channels: int = 4,
                **overrides) -> dict:
    """The keyword arguments of ``UNet2DConditionModel(**config)`` for a preset.

    ``cross_attention_dim``: the text encoder's hidden size (what ``encoder_hidden_states`` carries).
    ``sample_size``: the latent side (resolution / VAE downsampling factor, e.g. 256 / 8 = 32).
    ``in_channels`` (and ``out_channels``, unless overridden) = the VAE's latent channels.
    ``overrides``: any other ``UNet2DConditionModel`` argument (e.g. ``block_out_channels=(64, 128, 192)``).
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown UNet preset {preset!r}: choose one of {', '.join(PRESETS)}")
    cfg = dict(PRESETS[preset])
    cfg.update(in_channels=int(in_channels), out_channels=int(overrides.pop("out_channels", in_channels)),
               cross_attention_dim=int(cross_attention_dim), sample_size=int(sample_size))
    cfg.update(overrides)
    levels = len(cfg["block_out_channels"])
    if len(cfg["down_block_types"]) != levels or len(cfg["up_block_types"]) != levels:
        raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
    if int(cfg["sample_size"]) % (2 ** (levels - 1)):
        raise ValueError(f"sample_size {cfg['sample_size']} must be divisible by {2 ** (levels - 1)} "
                         f"(the UNet halves the resolution {levels - 1} times)")
    groups = int(cfg.get("norm_num_groups", 32))
    bad = [c for c in cfg["block_out_channels"] if c % groups]
    if bad:
        raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups={groups}")
    return _listify(cfg)


def reference_config(cross_attention_dim: int = 512, sample_size: int = 32) -> dict:
    """The course's reference UNet config (``UNet2DConditionModel(**reference_config())``): 241.36 M parameters
    with ``cross_attention_dim=512`` (CLIP ViT-B/32), for 32x32x4 latents (256 px images, VAE factor 8)."""
    return unet_config("reference", cross_attention_dim=cross_attention_dim, sample_size=sample_size)


def build_unet(preset: str, *, cross_attention_dim: int, sample_size: int, in_channels: int = 4,
               seed: int | None = None, device: str | torch.device | None = None, **overrides):
    """Build a freshly initialised ``UNet2DConditionModel`` from a preset (see :func:`unet_config`).

    ``seed``: when given, the initial weights come from ``torch.manual_seed(seed)`` without touching the global
    RNG; otherwise from the global RNG (as diffusers does). ``device="meta"`` builds the architecture without
    allocating or initialising weights (instant, even for the 241 M reference): good for counting parameters and
    FLOPs (:func:`summary`), useless for running.
    """
    cfg = unet_config(preset, cross_attention_dim=cross_attention_dim, sample_size=sample_size,
                      in_channels=in_channels, **overrides)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return UNet2DConditionModel(**cfg)
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(int(seed))
        unet = UNet2DConditionModel(**cfg)
    return unet.to(device) if device is not None else unet


def levels_factor(preset: str) -> int:
    """How many times a preset's UNet halves the latent side, as a factor: ``2 ** (levels - 1)`` (the latent side
    must be a multiple of it)."""
    return 2 ** (len(PRESETS[preset]["block_out_channels"]) - 1)


def text_hidden_size(model_id: str) -> int:
    """The width ``D`` of a text encoder's last hidden state: the UNet's ``cross_attention_dim``.

    Reads only the config (``transformers.AutoConfig``): CLIP -> ``text_config.hidden_size`` (512 for ViT-B/32),
    BERT-like -> ``hidden_size`` (384 for all-MiniLM-L6-v2). Known hub ids are answered offline too.
    """
    try:
        config = AutoConfig.from_pretrained(model_id)
    except Exception:
        if model_id in _KNOWN_HIDDEN_SIZES:
            return _KNOWN_HIDDEN_SIZES[model_id]
        raise
    text = getattr(config, "text_config", None) or config
    return int(text.hidden_size)


def build_for_profile(profile, *, preset: str | None = None, seed: int | None = None,
                      device: str | torch.device | None = None, **overrides):
    """The UNet a profile trains: ``preset`` (default ``profile.unet_preset``) with ``cross_attention_dim`` = the
    profile's text-encoder width and ``sample_size``/channels = its latent shape (``profile.latent_shape()``, read
    from config files only)."""
    channels, side, _ = profile.latent_shape()
    return build_unet(preset or profile.unet_preset, cross_attention_dim=text_hidden_size(profile.text_encoder),
                      sample_size=side, in_channels=channels, seed=seed, device=device, **overrides)
