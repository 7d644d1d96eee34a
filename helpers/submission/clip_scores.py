"""CLIP scores as the course reports them (raw cosines, not x100).

- **CLIP-T**: ``mean_i cos(e_img(generated_i), e_txt(prompt_i))`` — the RAW cosine (≈ 0.29 for good course
  solutions). torchmetrics' ``CLIPScore`` is ``mean_i 100 * max(cos, 0)``; it is shown beside CLIP-T, labelled.
- **CLIP-I**: ``mean_i s_i`` with ``s_i = mean_{r in R_i} cos(e_img(generated_i), e_img(r))``, where ``R_i`` are the
  reference images of prompt ``i`` (the course has exactly one per prompt; the held-out split of
  :mod:`helpers.data.split` has every frame of the held-out ``monsterID_ACTION`` as references).

Where the CLIP model cannot be loaded (offline and not cached) a result says ``skipped: <why>`` and holds no number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPModel, CLIPProcessor

from helpers.frozen import model_problem, quiet_loading

from .scores import MetricResult, load_pils

DEFAULT_CLIP = "openai/clip-vit-base-patch32"

__all__ = ["ClipScorer", "load_clip", "clip_problem", "cosine_rows", "clip_t_from_embeddings",
           "clip_i_from_embeddings", "clip_t", "clip_i", "clip_scores", "clip_or_skip", "DEFAULT_CLIP"]


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of [N,D] and [N,D] (or [1,D] broadcast) -> [N], float64."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)


def clip_t_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """Per-image raw cosines [N], CLIP-T (their mean) and torchmetrics' CLIPScore (mean of 100·max(cos, 0))."""
    cos = cosine_rows(image_emb, text_emb)
    return cos, float(cos.mean()), float((100 * cos.clamp(min=0)).mean())


def clip_i_from_embeddings(gen_emb: torch.Tensor, ref_embs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Per-image ``s_i = mean_r cos(gen_i, ref_{i,r})`` [N] and CLIP-I = ``mean_i s_i``.

    ``ref_embs[i]`` is [k_i, D] (k_i >= 1 reference images of prompt i) or [D].
    """
    if len(ref_embs) != gen_emb.shape[0]:
        raise ValueError(f"{gen_emb.shape[0]} generated embeddings but {len(ref_embs)} reference lists")
    per = []
    for g, refs in zip(gen_emb, ref_embs):
        refs = torch.as_tensor(refs)
        refs = refs.reshape(-1, refs.shape[-1])
        if refs.shape[0] == 0:
            raise ValueError("every generated image needs at least one reference image for CLIP-I")
        per.append(cosine_rows(g.unsqueeze(0), refs).mean())
    s = torch.stack(per)
    return s, float(s.mean())


def clip_problem(model_id: str) -> str | None:
    """Why the CLIP model ``model_id`` cannot be loaded (offline and not cached, no such folder), or None."""
    return model_problem(model_id)


class ClipScorer:
    """A CLIP model (transformers ``CLIPModel`` + processor) that embeds images and texts for CLIP-T/CLIP-I."""

    def __init__(self, model, processor, model_id: str, device: str | torch.device = "cpu"):
        self.model, self.processor, self.model_id, self.device = model, processor, model_id, torch.device(device)

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers 5 returns an output object whose pooler_output is the projected embedding
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def image_embeddings(self, images: Sequence, batch_size: int = 32) -> torch.Tensor:
        """Embeddings [N,D] (float32, projected, not normalised) of RGB PIL images."""
        out = []
        for i in range(0, len(images), batch_size):
            px = self.processor(images=list(images[i:i + batch_size]), return_tensors="pt")["pixel_values"]
            out.append(self._features(self.model.get_image_features(pixel_values=px.to(self.device))).float().cpu())
        return torch.cat(out)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings [N,D] of texts (tokenized with padding, truncated to CLIP's 77 tokens)."""
        out = []
        tok = getattr(self.processor, "tokenizer", self.processor)
        max_len = min(int(getattr(tok, "model_max_length", 77) or 77), 77)
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_len,
                      return_tensors="pt")
            feats = self.model.get_text_features(input_ids=enc["input_ids"].to(self.device),
                                                 attention_mask=enc["attention_mask"].to(self.device))
            out.append(self._features(feats).float().cpu())
        return torch.cat(out)


def load_clip(model_id: str = DEFAULT_CLIP, device: str | torch.device = "cpu") -> ClipScorer:
    """``CLIPModel`` + ``CLIPProcessor`` from a hub id or a local folder (``from_pretrained``), frozen, eval."""
    with quiet_loading():
        model = CLIPModel.from_pretrained(model_id).to(device).eval().requires_grad_(False)
        processor = CLIPProcessor.from_pretrained(model_id)
    return ClipScorer(model, processor, str(model_id), device)


def clip_or_skip(clip: ClipScorer | str | None, names: Sequence[str], n: int, device
                  ) -> tuple[ClipScorer | None, list[MetricResult]]:
    if isinstance(clip, ClipScorer):
        return clip, []
    model_id = str(clip or DEFAULT_CLIP)
    key = (model_id, str(device))
    if key in _LOADED_CLIP:  # loaded once per session (a notebook scores several folders)
        return _LOADED_CLIP[key], []
    problem = clip_problem(model_id)
    if problem is None:
        try:
            _LOADED_CLIP.clear()  # keep at most one CLIP model in memory
            _LOADED_CLIP[key] = load_clip(model_id, device)
            return _LOADED_CLIP[key], []
        except Exception as err:
            problem = f"cannot load {model_id} ({type(err).__name__}: {err})"
    return None, [MetricResult.skip(name, problem, model=model_id, n_images=n) for name in names]


_LOADED_CLIP: dict[tuple[str, str], ClipScorer] = {}


def clip_t(images: Sequence, prompts: Sequence[str], *, clip: ClipScorer | str | None = None,
           names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> MetricResult:
    """CLIP-T (raw cosine, mean over images) with torchmetrics' CLIPScore ×100 beside it.

    ``images``: RGB PIL images (already read like training); ``prompts[i]`` belongs to ``images[i]``;
    ``names``: image names for ``per_image``. ``clip``: a :class:`ClipScorer`, a model id/folder, or None (default).
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    scorer, skipped = clip_or_skip(clip, ["CLIP-T"], len(images), device)
    if scorer is None:
        return skipped[0]
    cos, mean, x100 = clip_t_from_embeddings(scorer.image_embeddings(images), scorer.text_embeddings(prompts))
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    return MetricResult(name="CLIP-T", value=mean, model=scorer.model_id, n_images=len(images),
                        settings={"similarity": "raw cosine"}, per_image=dict(zip(names, cos.tolist())),
                        beside=f"CLIPScore x100 = {x100:.2f} (torchmetrics: 100*max(cos,0))")


def clip_i(images: Sequence, references: Sequence[Sequence], *, clip: ClipScorer | str | None = None,
           names: Sequence[str] | None = None, device: str | torch.device = "cpu") -> MetricResult:
    """CLIP-I: mean over generated images of the mean cosine to their reference images (module docstring).

    ``references[i]``: the RGB PIL reference images of ``images[i]`` (one or more).
    """
    if len(images) != len(references):
        raise ValueError(f"{len(images)} images but {len(references)} reference lists")
    scorer, skipped = clip_or_skip(clip, ["CLIP-I"], len(images), device)
    if scorer is None:
        return skipped[0]
    gen = scorer.image_embeddings(images)
    flat = [r for refs in references for r in refs]
    ref_emb = scorer.image_embeddings(flat)
    ref_lists, k = [], 0
    for refs in references:
        ref_lists.append(ref_emb[k:k + len(refs)])
        k += len(refs)
    per, mean = clip_i_from_embeddings(gen, ref_lists)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    return MetricResult(name="CLIP-I", value=mean, model=scorer.model_id, n_images=len(images),
                        settings={"similarity": "raw cosine", "n_reference": len(flat)},
                        per_image=dict(zip(names, per.tolist())))


def clip_scores(scorer: ClipScorer, pairs, refs: dict[str, list[Path]], resolution: int, background,
                 batch_size: int) -> list[MetricResult]:
    """CLIP-T and CLIP-I of ``(generated path, prompt)`` pairs; every image, prompt and reference embedded once."""
    gen_emb = torch.cat([scorer.image_embeddings(load_pils([f for f, _ in pairs[i:i + batch_size]], resolution,
                                                            background))
                         for i in range(0, len(pairs), batch_size)])
    texts = sorted({p.text_prompt for _, p in pairs})
    text_emb = dict(zip(texts, scorer.text_embeddings(texts)))
    ref_emb: dict[str, torch.Tensor] = {}
    for _, p in pairs:
        if p.image_name not in ref_emb:
            ref_emb[p.image_name] = scorer.image_embeddings(load_pils(refs[p.image_name], resolution, background))
    names = [f.name for f, _ in pairs]
    cos_t, mean_t, x100 = clip_t_from_embeddings(gen_emb, torch.stack([text_emb[p.text_prompt] for _, p in pairs]))
    per_i, mean_i = clip_i_from_embeddings(gen_emb, [ref_emb[p.image_name] for _, p in pairs])
    n_ref = sum(len(v) for v in ref_emb.values())
    return [
        MetricResult(name="CLIP-T", value=mean_t, model=scorer.model_id, n_images=len(pairs),
                     settings={"similarity": "raw cosine"}, per_image=dict(zip(names, cos_t.tolist())),
                     beside=f"CLIPScore x100 = {x100:.2f} (torchmetrics: 100*max(cos,0))"),
        MetricResult(name="CLIP-I", value=mean_i, model=scorer.model_id, n_images=len(pairs),
                     settings={"similarity": "raw cosine", "n_reference": n_ref},
                     per_image=dict(zip(names, per_i.tolist()))),
    ]
