"""helpers.frozen: tiny CLIP/BERT/VAE folders loaded through the same from_pretrained path as the course models."""

from __future__ import annotations

import json
import shutil
import warnings
from types import SimpleNamespace

import pytest
import torch

from helpers import frozen
from helpers.frozen import (FrozenModels, ModelLoadError, decode_latents, encode_images, load_text_encoder, load_vae,
                            parameter_count, scaling_factor)

from conftest import TINY_BERT_HIDDEN, TINY_CLIP_HIDDEN, TINY_VAE_SCALING

LONG_PROMPT = "a big red dragon with wings and a long tail " * 10  # well over 77 tokens for both tokenizers


@pytest.fixture(scope="module")
def clip(tiny_clip_dir):
    return load_text_encoder(tiny_clip_dir)


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return load_text_encoder(tiny_bert_dir)


@pytest.fixture(scope="module")
def vae(tiny_vae_dir):
    return load_vae(tiny_vae_dir)


def _assert_frozen(module: torch.nn.Module) -> None:
    assert not module.training
    assert all(not p.requires_grad for p in module.parameters())
    assert parameter_count(module, trainable_only=True) == 0
    assert parameter_count(module) > 0


# --------------------------------------------------------------------------------------------- text encoders
def test_clip_loads_frozen(clip, tiny_clip_dir):
    assert clip.kind == "clip"
    assert clip.hidden_size == TINY_CLIP_HIDDEN
    assert clip.max_length == 77
    assert type(clip.model).__name__ == "CLIPTextModel"  # text tower of a full CLIPModel folder
    assert type(clip.tokenizer).__name__ == "CLIPTokenizer"
    assert clip.model_id == str(tiny_clip_dir)
    _assert_frozen(clip.model)


def test_clip_text_model_folder(tiny_clip_text_dir):
    te = load_text_encoder(tiny_clip_text_dir)
    assert te.kind == "clip" and te.hidden_size == TINY_CLIP_HIDDEN
    assert te.encode(["a cat"]).shape == (1, 77, TINY_CLIP_HIDDEN)


def test_bert_loads_frozen(bert):
    assert bert.kind == "bert"
    assert bert.hidden_size == TINY_BERT_HIDDEN
    assert bert.max_length == 77  # even though the model has 128 positions
    assert bert.model.config.max_position_embeddings > 77
    _assert_frozen(bert.model)


@pytest.mark.parametrize("name", ["clip", "bert"])
def test_encode_shapes_and_empty_prompt(name, request):
    te = request.getfixturevalue(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short prompts: no warning at all
        emb = te.encode(["", "a red dragon with wings", "A tiny blue slime, pixel art."], batch_size=2)
    assert emb.shape == (3, 77, te.hidden_size)
    assert emb.dtype == torch.float32 and not emb.requires_grad
    assert torch.isfinite(emb).all()
    # batching does not change the result; "" is a real (unconditional) embedding, not zeros
    one = te.encode([""])
    assert torch.allclose(one[0], emb[0], atol=1e-5)
    assert one.abs().sum() > 0
    assert te.encode([]).shape == (0, 77, te.hidden_size)


@pytest.mark.parametrize("name", ["clip", "bert"])
def test_truncation_warning_names_the_prompt(name, request):
    te = request.getfixturevalue(name)
    n_long = te.token_lengths([LONG_PROMPT])[0]
    assert n_long > 77
    with pytest.warns(UserWarning) as record:
        emb = te.encode(["short one", LONG_PROMPT])
    assert emb.shape == (2, 77, te.hidden_size)
    messages = [str(w.message) for w in record if "truncated" in str(w.message)]
    assert len(messages) == 1
    assert LONG_PROMPT[:40] in messages[0] and f"{n_long} tokens" in messages[0]
    assert "short one" not in messages[0]
    emb2, truncated = te.encode_with_report(["short one", LONG_PROMPT])
    assert truncated == [(LONG_PROMPT, n_long)]
    assert torch.allclose(emb, emb2)


def test_token_lengths(clip, bert):
    # CLIP: <|startoftext|> + words + <|endoftext|>; the tiny BPE knows these words whole
    assert clip.token_lengths(["", "a red dragon"]) == [2, 5]
    assert bert.token_lengths(["", "a red dragon"]) == [2, 5]  # [CLS] ... [SEP]
    assert clip.token_lengths("a cat") == [4]
    long = clip.token_lengths([LONG_PROMPT])[0]
    assert long == 2 + 10 * 10  # untruncated


def test_clip_padding_does_not_change_prompt_tokens(clip):
    # causal CLIP: positions of the prompt do not see the padding, so the prefix is the same in any batch
    a = clip.encode(["a red dragon"])
    b = clip.encode(["a red dragon", LONG_PROMPT[:100]])
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-5)


# --------------------------------------------------------------------------------------------- VAE
def test_vae_loads_frozen(vae):
    assert type(vae).__name__ == "AutoencoderKL"
    assert scaling_factor(vae) == pytest.approx(TINY_VAE_SCALING)
    _assert_frozen(vae)


def test_vae_subfolder(tiny_vae_dir_with_subfolder):
    v = load_vae(tiny_vae_dir_with_subfolder, subfolder="vae")
    assert type(v).__name__ == "AutoencoderKL"
    _assert_frozen(v)
    with pytest.raises(ModelLoadError, match="subfolder='vae'"):
        load_vae(tiny_vae_dir_with_subfolder)  # the root has no config.json: the error says what to pass


def test_encode_decode_round_trip(vae):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    mean, std = encode_images(vae, images)
    assert mean.shape == std.shape == (2, 4, 16, 16)
    assert mean.dtype == std.dtype == torch.float32 and (std > 0).all()
    assert frozen.latent_shape(vae, 32) == (4, 16, 16) and frozen.downsample_factor(vae) == 2
    out = decode_latents(vae, mean * scaling_factor(vae))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    # decode_latents divides by the scaling factor: same as decoding the raw latents directly
    with torch.no_grad():
        direct = vae.decode(mean).sample.clamp(-1, 1)
    assert torch.allclose(out, direct, atol=1e-5)


def test_encode_images_rejects_wrong_shape(vae):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        encode_images(vae, torch.zeros(3, 32, 32))


# --------------------------------------------------------------------------------------------- errors
def test_error_for_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="no config.json") as info:
        load_text_encoder(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_vae(tmp_path)


def test_error_for_missing_folder(tmp_path):
    missing = tmp_path / "nowhere" / "vae"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_vae(missing)
    assert str(missing) in str(info.value)


def test_error_for_vae_folder_that_is_not_an_autoencoder(tiny_clip_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="not an AutoencoderKL") as info:
        load_vae(tiny_clip_dir)
    assert "CLIPModel" in str(info.value)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelLoadError, match="UNet2DConditionModel, not an AutoencoderKL"):
        load_vae(tmp_path)


def test_error_for_unreachable_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_id = "workbook-tests/no-such-model-offline"
    with pytest.raises(ModelLoadError) as info:
        load_text_encoder(model_id)
    msg = str(info.value)
    assert model_id in msg and "HF cache" in msg and "profile_name='demo'" in msg
    with pytest.raises(ModelLoadError, match="no-such-model-offline.*subfolder 'vae'"):
        load_vae(model_id, subfolder="vae")


def test_text_encoder_from_sd_style_folder(tiny_clip_text_dir, tmp_path):
    # a Stable Diffusion folder: text_encoder/ and tokenizer/
    shutil.copytree(tiny_clip_text_dir, tmp_path / "text_encoder")
    shutil.copytree(tiny_clip_text_dir, tmp_path / "tokenizer")
    te = load_text_encoder(tmp_path, subfolder="text_encoder")
    assert te.kind == "clip" and te.encode([""]).shape == (1, 77, TINY_CLIP_HIDDEN)


# --------------------------------------------------------------------------------------------- FrozenModels
def test_load_frozen_models_from_profile(tiny_bert_dir, tiny_vae_dir_with_subfolder, tmp_path):
    profile = SimpleNamespace(name="course", smoke=True, text_encoder=str(tiny_bert_dir),
                              vae=str(tiny_vae_dir_with_subfolder), vae_subfolder="vae", device="cpu",
                              resolution=32, data_dir=tmp_path, prepare_vae=lambda: None)
    fm = frozen.load_frozen_models(profile)
    assert isinstance(fm, FrozenModels)
    assert fm.cross_attention_dim == TINY_BERT_HIDDEN
    assert fm.latent_shape == (4, 16, 16)
    assert fm.scaling_factor == pytest.approx(TINY_VAE_SCALING)
    assert str(tiny_bert_dir) in fm.summary() and "scaling_factor 0.5" in fm.summary()
