"""Cross-attention maps: which pixels of the image attend to which word of the prompt.

Every cross-attention layer (``attn2`` of a transformer block) lets each latent pixel take a weighted average of the
77 text-token vectors; the weights, ``softmax(q k^T / sqrt(d))`` over the tokens, are the *attention
probabilities*. :func:`cross_attention_maps` records them during one guided generation:

- a recording processor is installed on the cross-attention layers only (self-attention keeps its processor
  object, and so its fast kernel); it returns exactly what the processor it replaces returns (it calls it) and
  recomputes the probabilities of the conditional half of the batch on the side from the same query/key layers;
- per layer call the probabilities are averaged over heads and added to one accumulator per spatial size (never one
  per step), then upsampled (bilinear) to a common size at the end (upsampling is linear, so this equals upsampling
  every step's map);
- the UNet's processors are put back, the very same objects, also when generation fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from helpers.plots import balanced_columns, new_figure

from .sampling import decode_to_pil
from .text_to_image import TextToImage

__all__ = ["AttentionMaps", "AttentionRecorder", "RecordingProcessor", "cross_attention_maps",
           "plot_attention_maps", "prompt_tokens"]


# --------------------------------------------------------------------------------------------------- recording
class AttentionRecorder:
    """Sums of head-averaged cross-attention probabilities ``[L, h, w]``, one per spatial size ``(h, w)``.

    ``latent_hw``: the UNet's latent size (a layer's ``h, w`` are found from its number of pixels);
    ``guided``: the batch is ``[uncond, cond]`` (classifier-free guidance) and only its second half is recorded.
    """

    def __init__(self, latent_hw: tuple[int, int], guided: bool) -> None:
        self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.guided = bool(guided)
        self.sums: dict[tuple[int, int], torch.Tensor] = {}
        self.counts: dict[tuple[int, int], int] = {}

    def grid(self, n_pixels: int) -> tuple[int, int]:
        """The ``(h, w)`` of a layer with ``n_pixels`` query positions (the latent size halved k times)."""
        h, w = self.latent_hw
        while h * w > n_pixels and (h > 1 or w > 1):
            h, w = -(-h // 2), -(-w // 2)  # a stride-2 convolution rounds up
        if h * w != n_pixels:
            raise ValueError(f"a cross-attention layer has {n_pixels} query positions, which is no downsampling of "
                             f"the {self.latent_hw} latent grid")
        return h, w

    def add(self, probs: torch.Tensor, hw: tuple[int, int]) -> None:
        """Add probabilities ``[B, heads, h*w, L]`` (their mean over batch and heads) to the ``hw`` accumulator."""
        m = probs.float().mean(dim=(0, 1)).transpose(0, 1).reshape(-1, *hw)  # [L, h, w]
        if hw in self.sums:
            self.sums[hw] += m
            self.counts[hw] += 1
        else:
            self.sums[hw] = m.clone()
            self.counts[hw] = 1

    def mean_maps(self, size: tuple[int, int]) -> torch.Tensor:
        """``[L, *size]``: the mean over all recorded layer calls, each upsampled bilinearly to ``size``."""
        if not self.sums:
            raise RuntimeError("nothing was recorded: the UNet ran no cross-attention layer")
        total = sum(self.counts.values())
        out = sum(F.interpolate(s[None], size=size, mode="bilinear", align_corners=False)[0]
                  for s in self.sums.values())
        return (out / total).clamp_min(0)  # bilinear weights are >= 0; clamp guards against -0.0 / rounding

    def by_resolution(self) -> dict[tuple[int, int], torch.Tensor]:
        """``{(h, w): [L, h, w]}``: the mean map of the layers of each spatial size, at that size."""
        return {hw: s / self.counts[hw] for hw, s in sorted(self.sums.items())}


def _cross_attention_probs(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                           attention_mask: torch.Tensor | None, temb: torch.Tensor | None) -> torch.Tensor:
    """``softmax(q k^T * attn.scale)`` ``[B, heads, N, L]`` in float32, prepared as diffusers' processors do.

    For UNet layers ``attn.scale`` = 1/sqrt(head dim), the scale ``scaled_dot_product_attention`` uses.
    """
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.flatten(2).transpose(1, 2)
    b, n, _ = hidden_states.shape
    length = encoder_hidden_states.shape[1]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    if attn.norm_cross:
        encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
    key = attn.to_k(encoder_hidden_states)
    head_dim = key.shape[-1] // attn.heads
    query = query.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(b, -1, attn.heads, head_dim).transpose(1, 2)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    scores = (query.float() @ key.float().transpose(-1, -2)) * attn.scale  # [B, heads, N, L]
    if attention_mask is not None:
        mask = attn.prepare_attention_mask(attention_mask, length, b)
        scores = scores + mask.view(b, attn.heads, -1, length).float()
    return scores.softmax(dim=-1)


class RecordingProcessor:
    """Wraps a cross-attention processor: its output is the wrapped processor's own (it is called with the same
    arguments), and the conditional half's attention probabilities go to ``recorder`` on the side."""

    def __init__(self, original: Any, recorder: AttentionRecorder) -> None:
        self.original = original
        self.recorder = recorder

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        if temb is not None:
            kwargs["temb"] = temb
        out = self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                            attention_mask=attention_mask, **kwargs)  # as Attention.forward calls a processor
        if encoder_hidden_states is not None:
            self._record(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return out

    def _record(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_mask: torch.Tensor | None, temb: torch.Tensor | None) -> None:
        b = hidden_states.shape[0]
        half = slice(b // 2, b) if self.recorder.guided else slice(0, b)
        if attention_mask is not None:
            attention_mask = attention_mask[half]
        probs = _cross_attention_probs(attn, hidden_states[half], encoder_hidden_states[half], attention_mask,
                                       None if temb is None else temb[half])
        n = probs.shape[2]
        hw = tuple(hidden_states.shape[-2:]) if hidden_states.ndim == 4 else self.recorder.grid(n)
        self.recorder.add(probs, hw)


def _cross_attention_names(unet: torch.nn.Module) -> set[str]:
    """Keys of ``unet.attn_processors`` whose layer is a cross-attention layer (``attn2`` in the UNet)."""
    return {f"{name}.processor" for name, module in unet.named_modules()
            if hasattr(module, "set_processor") and getattr(module, "is_cross_attention", False)}


# --------------------------------------------------------------------------------------------------- tokens
def _join(tokenizer: Any, pieces: list[str]) -> str:
    """The text of one word's pieces (CLIP's byte-level symbols decoded, ``</w>`` and ``##`` removed)."""
    return tokenizer.convert_tokens_to_string(pieces).replace("</w>", " ").strip()


def prompt_tokens(text_encoder: Any, prompt: str) -> tuple[list[int], list[int], list[str], list[int], list[str]]:
    """How ``text_encoder`` splits ``prompt``, special tokens dropped (as :meth:`TextEncoder.encode` truncates it).

    Returns ``(positions in the 77-token embedding, token ids, tokens, word index of each token, words)``. CLIP's
    end-of-word ``</w>`` is stripped from the tokens (it ends a word); a BERT ``##`` piece keeps its marker (it
    continues the previous word).
    """
    tok = text_encoder.tokenizer
    ids = tok(prompt, truncation=True, max_length=text_encoder.max_length)["input_ids"]
    special = set(tok.all_special_ids)
    positions = [i for i, t in enumerate(ids) if t not in special]
    token_ids = [int(ids[i]) for i in positions]
    raw = tok.convert_ids_to_tokens(token_ids)
    clip = getattr(text_encoder, "kind", "clip") == "clip"
    word_of, pieces, words = [], [], []
    for piece in raw:
        starts = not pieces or (not clip and not piece.startswith("##"))
        if starts and pieces:
            words.append(_join(tok, pieces))
            pieces = []
        pieces.append(piece)
        word_of.append(len(words))
        if clip and piece.endswith("</w>"):
            words.append(_join(tok, pieces))
            pieces = []
    if pieces:
        words.append(_join(tok, pieces))
    tokens = [p[:-4] if clip and p.endswith("</w>") else p for p in raw]
    return positions, token_ids, tokens, word_of, words


# --------------------------------------------------------------------------------------------------- result
@dataclass
class AttentionMaps:
    """Cross-attention maps of one generated image.

    ``maps[i, y, x]``: the attention probability that latent pixel ``(y, x)`` gives to ``tokens[i]``, averaged over
    heads, cross-attention layers and sampling steps (each layer's map upsampled bilinearly to ``maps``' size).
    At every pixel the probabilities over all 77 positions sum to 1; what the prompt's tokens do not get goes to
    the start/end/padding positions (``other``). ``by_resolution``: the same per layer size, at that size.
    """

    prompt: str
    tokens: list[str]
    token_ids: list[int]
    positions: list[int]
    maps: torch.Tensor
    other: torch.Tensor
    image: Any
    latents: torch.Tensor
    by_resolution: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    word_of: list[int] = field(default_factory=list)
    word_texts: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def words(self) -> tuple[list[str], torch.Tensor]:
        """``(words, maps [n_words, H, W])``: word pieces merged into words, a word's map the sum of its pieces'."""
        out = torch.zeros(len(self.word_texts), *self.maps.shape[1:], dtype=self.maps.dtype)
        out.index_add_(0, torch.tensor(self.word_of, dtype=torch.long), self.maps)
        return list(self.word_texts), out

    def __repr__(self) -> str:
        return (f"AttentionMaps({self.prompt!r}, tokens={self.tokens}, maps={tuple(self.maps.shape)}, "
                f"prompt share {float(self.maps.sum(0).mean()):.0%})")


def _size(size: int | Sequence[int] | None, latent_hw: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return latent_hw
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def cross_attention_maps(tti: TextToImage, prompt: str, seed: int = 0, *, guidance_scale: float = 7.5,
                         steps: int = 50, scheduler: str = "ddim", size: int | Sequence[int] | None = None,
                         progress: bool = False) -> AttentionMaps:
    """Generate ``prompt`` with ``seed`` (as ``tti.generate``) and record its cross-attention maps.

    ``size``: the maps' ``(H, W)`` (an int for a square; default the latent size). The image and latents are
    exactly those of ``tti.generate_latents(tti.encode([prompt]), [seed], ...)`` without recording.
    """
    positions, token_ids, tokens, word_of, words = prompt_tokens(tti.text_encoder, prompt)
    unet = getattr(tti.unet, "_orig_mod", tti.unet)  # a torch.compile'd UNet: its module
    _, h, w = tti.latent_shape
    recorder = AttentionRecorder((h, w), guided=float(guidance_scale) != 1.0)
    before = unet.attn_processors
    cross = _cross_attention_names(unet)
    if not cross:
        raise ValueError("this UNet has no cross-attention layers: nothing attends to the prompt")
    try:
        unet.set_attn_processor({name: RecordingProcessor(proc, recorder) if name in cross else proc
                                 for name, proc in before.items()})
        latents = tti.generate_latents(tti.encode([prompt]), [seed], guidance_scale=guidance_scale, steps=steps,
                                       scheduler=scheduler, batch_size=1, progress=progress)
    finally:
        unet.set_attn_processor(dict(before))  # set_attn_processor empties the dict it gets
    full = recorder.mean_maps(_size(size, (h, w))).cpu()
    keep = torch.tensor(positions, dtype=torch.long)
    rest = torch.ones(full.shape[0], dtype=torch.bool)
    rest[keep] = False
    return AttentionMaps(
        prompt=prompt, tokens=tokens, token_ids=token_ids, positions=positions, maps=full[keep].clone(),
        other=full[rest].sum(0), image=decode_to_pil(tti.vae, latents)[0], latents=latents.clone(),
        by_resolution={hw: m.cpu()[keep].clone() for hw, m in recorder.by_resolution().items()},
        word_of=word_of, word_texts=words,
        settings=dict(seed=seed, guidance_scale=guidance_scale, steps=steps, scheduler=scheduler))


# --------------------------------------------------------------------------------------------------- plotting
def plot_attention_maps(result: AttentionMaps, ncols: int = 6, words: bool = True, size: float = 1.8,
                        alpha: float = 0.6, cmap: str = "inferno"):
    """The image, then one heat map per word (``words=False``: per token) over it, titled with the word and its
    share of the attention. Each heat map is scaled to its own maximum (compare the shares, not the colours)."""
    labels, maps = result.words() if words else (list(result.tokens), result.maps)
    image = np.asarray(result.image)
    n = 1 + len(labels)
    ncols = balanced_columns(n, ncols)  # as few empty panes as the count allows
    nrows = -(-n // ncols)
    fig = new_figure((ncols * size, nrows * (size + 0.35)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
    axes[0].imshow(image, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, label, m in zip(axes[1:], labels, maps):
        ax.imshow(image, interpolation="nearest")
        m = m.numpy()
        ax.imshow(m / max(float(m.max()), 1e-12), cmap=cmap, alpha=alpha, vmin=0, vmax=1, extent=extent,
                  interpolation="bilinear")
        ax.set_title(f"{label} ({float(m.mean()):.0%})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"{result.prompt!r}: what each word attends to", fontsize=10)
    fig.tight_layout()
    return fig
