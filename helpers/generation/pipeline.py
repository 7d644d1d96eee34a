"""Export a trained checkpoint as a standard diffusers ``StableDiffusionPipeline`` folder, and load one back."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from helpers.paths import atomic_folder

from .text_to_image import TextToImage, quiet

# diffusers' pipeline classes are imported inside the two functions: importing them loads transformers' image
# processors (seconds, and notices about torchvision) that nothing else in the workbook needs.

__all__ = ["export_pipeline", "load_pipeline"]


def load_pipeline(folder: str | Path, device: str | torch.device | None = None):
    """``DiffusionPipeline.from_pretrained(folder)`` without the load reports (for a folder of
    :func:`export_pipeline`, whose BERT-like text encoder makes diffusers log an expected-type notice)."""
    with quiet():
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
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds files. Pass overwrite=True to replace it, or choose "
                              "another folder.")
    with quiet():
        from diffusers import DDIMScheduler, StableDiffusionPipeline

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
        with quiet():
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
