"""helpers: the small library the workbook's notebooks import (one idea per module).

Setup and data: ``paths`` (where things live, atomic files and folders), ``profiles`` (course / demo / auto,
smoke, scale and data parameters), ``hub`` (a quick "can this model load offline?" check), ``data`` (records,
the readers of every source, the data check), ``hf_datasets`` (Hugging Face ``datasets`` sources, copied once as
an imagefolder), ``images`` (reading image files like training does), ``errors`` (``DataError``), ``demo_data``
(the offline sprite set) and ``sprites`` (its rasteriser), ``plots``.
Frozen models: ``frozen`` (CLIP/BERT text encoders and the VAE), ``demo_vae`` (the demo stack's small VAE, trained
on the data at hand), ``cache`` (latents and text embeddings computed once).
Training: ``unet`` (reference config, presets), ``unet_costs`` (parameters, FLOPs, memory, shapes), ``schedule``
(the one noise schedule), ``losses`` (the diffusion loss, min-SNR weights), ``train_config`` (TrainConfig),
``train_parts`` / ``train`` (one optimizer step, and the loop), ``train_cli`` (its command line), ``run_folder``
(one trainer per run, resume policy, metrics.jsonl), ``checkpoints`` (saving, loading, picking), ``colour_check``
(does a sample follow the prompt's colour?).
Generation and scoring: ``sampling`` (batched classifier-free guidance), ``widgets``, ``split`` (held-out keys),
``submission``, ``scores`` (what a score is), ``frechet`` (FID and the latent stand-in), ``clip_scores`` (CLIP-T,
CLIP-I), ``judge`` (the demo's offline judge), ``metrics`` (scoring a folder, sweeps). ``notebooks`` runs the
chapters headless (``make run``, the tests).

Conventions shared by the modules:

- image tensors are float32 ``[B, 3, H, W]`` in [-1, 1]; PIL images are RGB (alpha composited on white);
- "raw" latents are the VAE's latent-distribution mean/std; "scaled" latents (what the UNet sees) are
  raw x ``vae.config.scaling_factor``;
- text embeddings are the encoder's last hidden state ``[B, 77, D]`` (padded to 77 tokens, truncation reported);
  the UNet gets no attention mask, as in Stable Diffusion; the unconditional embedding is the encoding of "";
- bad input raises ``helpers.errors.DataError`` (a ``ValueError``) naming the file and the fix;
- weights are read and written with safetensors, everything else as JSON: no pickle.
"""

__version__ = "0.1.0"
