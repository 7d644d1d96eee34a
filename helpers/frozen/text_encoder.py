"""The frozen text encoder (CLIP or BERT-like) and its tokenizer: captions -> ``[N, 77, D]`` embeddings.

Text embeddings are the encoder's float32 last hidden state, ``padding="max_length", max_length=77,
truncation=True`` (truncation reported); the unconditional embedding is the encoding of ``""``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from helpers.progress import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

from .loading import ModelLoadError, check_local, hub_error, quiet_loading

MAX_LENGTH = 77  # Stable Diffusion's text length: CLIP's 77 positions, also used for BERT-like encoders
CLIP_MODEL_TYPES = ("clip", "clip_text_model")


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
                outs.append(self.hidden_states(tok))
        if not outs:
            emb = torch.zeros(0, self.max_length, self.hidden_size, device=self.device)
        else:
            emb = torch.cat(outs)
        return emb.clone(), truncated  # clone: a normal tensor, not an inference-mode one

    def hidden_states(self, tok) -> torch.Tensor:
        """The last hidden states ``[B, L, D]`` float32 of tokenizer output ``tok`` (CLIP: causal, no mask, as Stable
        Diffusion; BERT-like: with the attention mask). Call it under ``torch.inference_mode()``."""
        input_ids = tok["input_ids"].to(self.device)
        if self.kind == "clip":
            return self.model(input_ids=input_ids).last_hidden_state.float()
        kwargs = {"input_ids": input_ids, "attention_mask": tok["attention_mask"].to(self.device)}
        if "token_type_ids" in tok:
            kwargs["token_type_ids"] = tok["token_type_ids"].to(self.device)
        return self.model(**kwargs).last_hidden_state.float()

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
    model_id = str(model_id)
    check_local(model_id, subfolder, "text encoder")
    if subfolder == "text_encoder" and tokenizer_subfolder is None:
        tokenizer_subfolder = "tokenizer"
    sub_kw = {"subfolder": subfolder} if subfolder else {}
    tok_kw = {"subfolder": tokenizer_subfolder} if tokenizer_subfolder else {}
    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(model_id, **sub_kw)
    except (OSError, ValueError) as err:
        raise hub_error(model_id, subfolder, "text encoder", err) from err
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
        raise hub_error(model_id, subfolder, "text encoder", err) from err
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


