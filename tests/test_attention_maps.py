"""helpers.attention_maps: cross-attention maps recorded during one generation, without changing it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_frozen

from helpers.generation.attention_maps import (AttentionMaps, AttentionRecorder, RecordingProcessor, cross_attention_maps,
                                    plot_attention_maps)
from helpers.generation import TextToImage
from helpers.schedule import default_scheduler_config
from helpers.unet import build_unet

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a red slime monster with golden wings"
STEPS = 3


def _tti(text_dir, vae_dir) -> TextToImage:
    """The tiny preset with cross-attention at both levels (8x8 and 4x4 latents) and in the mid block."""
    frozen = make_frozen(text_dir, vae_dir)
    unet = build_unet("tiny", cross_attention_dim=frozen.text_encoder.hidden_size, sample_size=8, seed=0,
                      down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))
    return TextToImage(unet, frozen, default_scheduler_config())


@pytest.fixture(scope="module")
def tti_clip(tiny_clip_dir, tiny_vae_dir) -> TextToImage:
    return _tti(tiny_clip_dir, tiny_vae_dir)


@pytest.fixture(scope="module")
def tti_bert(tiny_bert_dir, tiny_vae_dir) -> TextToImage:
    return _tti(tiny_bert_dir, tiny_vae_dir)


def _expected_tokens(text_encoder, prompt: str) -> list[str]:
    tok = text_encoder.tokenizer
    ids = [i for i in tok(prompt)["input_ids"] if i not in tok.all_special_ids]
    return [t.removesuffix("</w>") for t in tok.convert_ids_to_tokens(ids)]


@pytest.mark.parametrize("encoder", ["clip", "bert"])
def test_maps_shape_tokens_and_scale(request, encoder):
    tti = request.getfixturevalue(f"tti_{encoder}")
    result = cross_attention_maps(tti, PROMPT, seed=1, guidance_scale=4.0, steps=STEPS)
    assert isinstance(result, AttentionMaps)
    assert result.tokens == _expected_tokens(tti.text_encoder, PROMPT)
    assert result.positions == list(range(1, len(result.tokens) + 1))  # after the start token
    n = len(result.tokens)
    assert result.maps.shape == (n, 8, 8) and result.maps.dtype == torch.float32
    assert torch.isfinite(result.maps).all() and (result.maps >= 0).all()
    # at every pixel the probabilities over all 77 positions sum to 1 (prompt tokens + start/end/padding)
    torch.testing.assert_close(result.maps.sum(0) + result.other, torch.ones(8, 8))
    assert set(result.by_resolution) == {(8, 8), (4, 4)}
    assert all(m.shape == (n, *hw) for hw, m in result.by_resolution.items())
    words, word_maps = result.words()
    assert words == ["a", "red", "slime", "monster", "with", "golden", "wings"]
    assert word_maps.shape == (len(words), 8, 8)
    torch.testing.assert_close(word_maps.sum(0), result.maps.sum(0))
    if encoder == "bert":  # MiniLM's WordPiece splits "slime": the pieces keep their marker, words() merges them
        assert result.tokens[2:4] == ["slim", "##e"]
        torch.testing.assert_close(word_maps[2], result.maps[2] + result.maps[3])
    assert result.image.size == (16, 16)


def test_size_and_plot(tti_clip):
    result = cross_attention_maps(tti_clip, PROMPT, steps=2, size=20)
    assert result.maps.shape == (len(result.tokens), 20, 20)
    assert (result.maps >= 0).all() and torch.isfinite(result.maps).all()
    fig = plot_attention_maps(result, ncols=4)
    assert len([ax for ax in fig.axes if ax.images]) == 1 + len(result.words()[0])
    assert [ax.get_title().split(" (")[0] for ax in fig.axes if ax.images][:3] == ["image", "a", "red"]


@pytest.mark.parametrize("guidance", [4.0, 1.0])
def test_recording_changes_nothing(tti_clip, guidance):
    unet = tti_clip.unet
    before = unet.attn_processors
    emb = tti_clip.encode([PROMPT])
    plain = tti_clip.generate_latents(emb, [3], guidance_scale=guidance, steps=STEPS, batch_size=1, progress=False)
    result = cross_attention_maps(tti_clip, PROMPT, seed=3, guidance_scale=guidance, steps=STEPS)
    assert torch.equal(result.latents, plain)
    image = tti_clip.generate(PROMPT, [3], guidance_scale=guidance, steps=STEPS, progress=False)[0]
    assert np.array_equal(np.asarray(result.image), np.asarray(image))
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def test_only_cross_attention_is_wrapped_while_recording(tti_clip):
    unet = tti_clip.unet
    before = unet.attn_processors
    seen: list[dict] = []
    handle = unet.conv_out.register_forward_hook(lambda *_: seen.append(unet.attn_processors))
    try:
        cross_attention_maps(tti_clip, PROMPT, steps=2)
    finally:
        handle.remove()
    during = seen[0]
    assert len(seen) == 2 and during.keys() == before.keys()
    for name, proc in during.items():
        if ".attn1." in name:
            assert proc is before[name]  # self-attention keeps its processor object (and its fast kernel)
        else:
            assert ".attn2." in name and isinstance(proc, RecordingProcessor) and proc.original is before[name]


def test_processors_restored_after_an_exception_inside_generation(tti_clip):
    unet = tti_clip.unet
    before = unet.attn_processors
    calls = []

    def fail_on_second_step(*_):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom inside generation")

    handle = unet.conv_out.register_forward_hook(fail_on_second_step)
    try:
        with pytest.raises(RuntimeError, match="boom inside generation"):
            cross_attention_maps(tti_clip, PROMPT, steps=STEPS)
    finally:
        handle.remove()
    after = unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert not any(isinstance(p, RecordingProcessor) for p in after.values())


def test_the_processor_records_the_conditional_half_exactly():
    """One cross-attention layer on a [uncond, cond] batch: the output is the wrapped processor's, bit for bit, and
    the recorded map is diffusers' own attention probabilities of the SECOND half, averaged over heads."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=6, heads=2, dim_head=4).eval()
    original = AttnProcessor2_0()
    attn.set_processor(original)
    hidden, text = torch.randn(2, 12, 8), torch.randn(2, 5, 6)  # a 3x4 grid of pixels, 5 text tokens
    with torch.no_grad():
        want = attn(hidden, encoder_hidden_states=text)
        recorder = AttentionRecorder((6, 8), guided=True)
        attn.set_processor(RecordingProcessor(original, recorder))
        got = attn(hidden, encoder_hidden_states=text)
        q = attn.head_to_batch_dim(attn.to_q(hidden[1:]))
        k = attn.head_to_batch_dim(attn.to_k(text[1:]))
        probs = attn.get_attention_scores(q, k)  # [heads, 12, 5] of the conditional half
        q0 = attn.head_to_batch_dim(attn.to_q(hidden[:1]))
        uncond = attn.get_attention_scores(q0, attn.head_to_batch_dim(attn.to_k(text[:1])))
    assert torch.equal(got, want)
    assert list(recorder.sums) == [(3, 4)] and recorder.counts == {(3, 4): 1}
    expected = probs.mean(0).T.reshape(5, 3, 4)
    torch.testing.assert_close(recorder.sums[(3, 4)], expected)
    assert (uncond.mean(0).T.reshape(5, 3, 4) - expected).abs().max() > 1e-3  # the halves can be told apart
