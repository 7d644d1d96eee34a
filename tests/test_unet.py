"""helpers.unet: the reference config, presets, summary (params / FLOPs / memory) and the shape check."""

from __future__ import annotations

import pytest
import torch

from helpers import unet as U
from helpers.unet import costs as C


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run ~10x faster on one thread when the 2 CPU cores are shared (no OpenMP barrier waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_reference_config_exact():
    cfg = U.reference_config()
    assert cfg["sample_size"] == 32 and cfg["in_channels"] == 4 and cfg["out_channels"] == 4
    assert cfg["block_out_channels"] == [256, 384, 512, 768] and cfg["layers_per_block"] == 2
    assert cfg["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert cfg["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert cfg["cross_attention_dim"] == 512 and cfg["attention_head_dim"] == 16
    assert U.reference_config(384)["cross_attention_dim"] == 384


def test_reference_parameter_count():
    ref = U.build_unet("reference", cross_attention_dim=512, sample_size=32, device="meta")
    n = U.parameter_count(ref)
    assert n == U.REFERENCE_PARAMETERS == 241_363_972
    assert round(n / 1e6, 2) == 241.36
    # cross-attention width follows the text encoder (MiniLM: 384): only the k/v projections change
    assert U.parameter_count(U.build_unet("reference", cross_attention_dim=384, sample_size=32,
                                          device="meta")) == 239_692_804


def test_presets_and_validation():
    assert set(U.PRESETS) == {"reference", "demo", "tiny"}
    demo = U.unet_config("demo", cross_attention_dim=384, sample_size=16)
    assert demo["cross_attention_dim"] == 384 and demo["sample_size"] == 16
    assert demo["down_block_types"][0] == "DownBlock2D"  # no attention at the highest resolution
    with pytest.raises(ValueError):
        U.unet_config("huge", cross_attention_dim=8, sample_size=16)
    with pytest.raises(ValueError):
        U.unet_config("demo", cross_attention_dim=8, sample_size=18)  # not divisible by 4
    with pytest.raises(ValueError):
        U.unet_config("tiny", cross_attention_dim=8, sample_size=16, block_out_channels=(30, 60))  # GroupNorm(8)
    over = U.unet_config("demo", cross_attention_dim=8, sample_size=16, layers_per_block=1, in_channels=8)
    assert over["layers_per_block"] == 1 and over["in_channels"] == over["out_channels"] == 8


def test_build_seeded_and_global_rng_untouched():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = U.build_unet("tiny", cross_attention_dim=16, sample_size=8, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    b = U.build_unet("tiny", cross_attention_dim=16, sample_size=8, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_shape_check_tiny_and_meta():
    unet = U.build_unet("tiny", cross_attention_dim=24, sample_size=16, seed=0)
    check = C.shape_check(unet, batch_size=3, seq_len=77, verbose=False)
    assert check.ok and check.output == (3, 4, 16, 16)
    assert check.inputs["encoder_hidden_states"] == (3, 77, 24)
    assert dict((b, o) for b, _, o in check.blocks)["down_blocks.0"] == (3, 32, 8, 8)
    assert "the prediction, noise ε or v" in str(check)
    ref = U.build_unet("reference", cross_attention_dim=512, sample_size=32, device="meta")
    assert C.shape_check(ref, verbose=False).output == (2, 4, 32, 32)


def test_summary_tiny_rows_flops_memory():
    unet = U.build_unet("tiny", cross_attention_dim=32, sample_size=16, seed=0)
    s2 = C.summary(unet, batch_size=2)
    s4 = C.summary(unet, batch_size=4)
    names = [r["block"] for r in s2.rows]
    assert names[:2] == ["conv_in", "time_embedding"] and names[-1] == "conv_out"
    assert "mid_block" in names and "down_blocks.1" in names and "up_blocks.1" in names
    assert sum(r["params"] for r in s2.rows) == s2.total_params == U.parameter_count(unet)
    assert s2.forward_flops > 0 and s4.forward_flops == 2 * s2.forward_flops  # linear in the batch
    assert sum(r["gflops"] for r in s2.rows) == pytest.approx(s2.forward_gflops, rel=1e-6)
    m = s2.memory
    assert m["weights"] == 4 * s2.total_params and m["adamw_states"] == 8 * s2.trainable_params
    assert m["total"] == sum(v for k, v in m.items() if k != "total")
    assert s4.memory["activations"] == pytest.approx(2 * m["activations"], rel=0.02)
    assert "<table" in s2._repr_html_() and "GFLOPs" in str(s2)
    down1 = next(r for r in s2.rows if r["block"] == "down_blocks.1")
    assert down1["attention"] and down1["resolution"] == "8×8" and down1["channels"] == "32→64"
    bf16 = C.summary(unet, batch_size=2, dtype=torch.bfloat16)
    assert bf16.memory["activations"] < 0.6 * m["activations"] and bf16.memory["weights"] == m["weights"]


def test_activation_estimate_matches_real_cpu_forward():
    """The meta-device count equals what autograd really keeps on CPU (fused SDPA) within a few percent."""
    unet = U.build_unet("tiny", cross_attention_dim=32, sample_size=16, seed=0).train()
    inputs = C._dummy_inputs(unet, 2, 77, "cpu", torch.float32)
    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    kept = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            kept[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        unet(*inputs)
    real = sum(kept.values())
    assert C.summary(unet, batch_size=2).memory["activations"] == pytest.approx(real, rel=0.1)


def test_summary_reference_on_meta():
    ref = U.build_unet("reference", cross_attention_dim=512, sample_size=32, device="meta")
    s = C.summary(ref, batch_size=1)
    assert s.total_params == U.REFERENCE_PARAMETERS
    rows = {r["block"]: r for r in s.rows}
    assert rows["down_blocks.3"]["type"] == "DownBlock2D" and not rows["down_blocks.3"]["attention"]
    assert rows["down_blocks.0"]["attention"] and rows["down_blocks.0"]["resolution"] == "32×32"
    assert 50 < s.forward_gflops < 100  # ~71 GFLOPs per 32x32x4 latent
    assert s.memory["weights"] == 4 * U.REFERENCE_PARAMETERS


def test_text_hidden_size(tiny_clip_dir, tiny_bert_dir):
    from helpers.profiles import demo_text_encoder_path

    assert U.text_hidden_size(str(tiny_clip_dir)) == 32
    assert U.text_hidden_size(str(tiny_bert_dir)) == 48
    assert U.text_hidden_size(demo_text_encoder_path()) == 384
    assert U.text_hidden_size("openai/clip-vit-base-patch32") == 512  # offline: known id


def test_attention_costs():
    rows = {r["side"]: r for r in C.attention_costs(sizes=(32, 16), channels=256)}
    assert rows[32]["tokens"] == 1024 and rows[32]["self_scores"] == 1_048_576
    assert rows[16]["tokens"] == 256 and rows[16]["self_scores"] == 65_536
    assert rows[32]["self_attn_gflops"] == pytest.approx(16 * rows[16]["self_attn_gflops"])


def test_build_for_profile_and_plot(tiny_vae_dir, tiny_bert_dir, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from helpers.profiles import Profile

    prof = Profile(name="demo", smoke=True, reason="test", data_dir=tmp_path, outputs_dir=tmp_path, resolution=32,
                   text_encoder=str(tiny_bert_dir), vae=str(tiny_vae_dir), vae_subfolder=None, unet_preset="tiny",
                   device="cpu")
    assert prof.latent_shape() == (4, 16, 16)  # the tiny VAE halves 32 px once
    unet = U.build_for_profile(prof, device="meta")
    assert unet.config.cross_attention_dim == 48 and unet.config.sample_size == 16
    fig = C.plot_blocks({"tiny": C.summary(unet)}, what="gflops")
    assert len(fig.axes) == 1
