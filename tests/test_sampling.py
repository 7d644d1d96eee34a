"""helpers.generation: batched CFG, per-image seeds, checkpoints -> images, pipeline export."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_BERT_HIDDEN, build_tiny_unet, make_frozen, save_checkpoint

from helpers.data import DataError
from helpers.checkpoints import latest_unet, list_checkpoints
from helpers.generation import TextToImage, decode_to_pil, export_pipeline, sample_latents
from helpers.schedule import SAMPLER_NAMES, default_scheduler_config, sampling_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")

# The same image alone and inside a batch: the noise and scheduler steps are exactly per image, but batched GEMMs on
# CPU may differ from unbatched ones in the last bits, so compare latents with this tolerance (measured: ~5e-5 with
# latents of magnitude ~50 after 10 steps of guidance 7.5 with a random tiny UNet).
ATOL = 1e-4


@pytest.fixture()
def embeddings():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_an_image_alone_equals_the_same_image_in_a_batch(tiny_unet, embeddings, name):
    cond, uncond = embeddings
    config = default_scheduler_config()
    batch = sample_latents(tiny_unet, sampling_scheduler(name, config), cond, uncond, [11, 22, 33], steps=6,
                           progress=False)
    alone = sample_latents(tiny_unet, sampling_scheduler(name, config), cond[1:2], uncond, [22], steps=6,
                           progress=False)
    chunks = sample_latents(tiny_unet, sampling_scheduler(name, config), cond, uncond, [11, 22, 33], steps=6,
                            progress=False, batch_size=2)
    assert batch.shape == (3, 4, 8, 8)
    torch.testing.assert_close(alone[0], batch[1], atol=ATOL, rtol=0)
    torch.testing.assert_close(chunks, batch, atol=ATOL, rtol=0)
    assert (batch[0] - batch[1]).abs().max() > 0.1  # different seeds, different images


def test_same_seed_same_latents_other_seed_other_latents(tiny_unet, embeddings):
    cond, uncond = embeddings
    s = sampling_scheduler("ddim")
    a = sample_latents(tiny_unet, s, cond[:1], uncond, [5], steps=4, progress=False)
    b = sample_latents(tiny_unet, s, cond[:1], uncond, [5], steps=4, progress=False)
    c = sample_latents(tiny_unet, s, cond[:1], uncond, [6], steps=4, progress=False)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


class CountingUNet(torch.nn.Module):
    """Wraps a UNet and records the batch size of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.config, self.calls = unet, unet.config, []

    def forward(self, x, t, encoder_hidden_states, return_dict=True):
        self.calls.append(x.shape[0])
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict)


def test_cfg_is_one_batched_unet_call_per_step_and_scale_one_skips_uncond(tiny_unet, embeddings):
    cond, uncond = embeddings
    counting = CountingUNet(tiny_unet)
    sample_latents(counting, sampling_scheduler("ddim"), cond, uncond, [1, 2, 3], steps=3, progress=False)
    assert counting.calls == [6, 6, 6]
    counting.calls.clear()
    sample_latents(counting, sampling_scheduler("ddim"), cond, uncond, [1, 2, 3], steps=3, progress=False,
                   guidance_scale=1.0, batch_size=2)
    assert counting.calls == [2, 2, 2, 1, 1, 1]


def test_guidance_scale_one_equals_conditional_only_sampling(tiny_unet, embeddings):
    cond, uncond = embeddings
    s = sampling_scheduler("ddim")
    one = sample_latents(tiny_unet, s, cond[:1], uncond, [3], guidance_scale=1.0, steps=3, progress=False)
    # with uncond == cond, any guidance scale gives the conditional prediction
    same = sample_latents(tiny_unet, s, cond[:1], cond[:1], [3], guidance_scale=5.0, steps=3, progress=False)
    torch.testing.assert_close(one, same, atol=ATOL, rtol=0)


def test_euler_scales_the_initial_noise(tiny_unet, embeddings):
    cond, uncond = embeddings
    # 1 step of Euler from sigma_max: the result is in the scale of the data, not of sigma_max (~14.6) noise
    s = sampling_scheduler("euler")
    out = sample_latents(tiny_unet, s, cond[:1], uncond, [0], guidance_scale=1.0, steps=1, progress=False)
    assert torch.isfinite(out).all()
    assert s.init_noise_sigma > 10


def test_bad_arguments(tiny_unet, embeddings):
    cond, uncond = embeddings
    s = sampling_scheduler("ddim")
    with pytest.raises(ValueError, match="one seed per image"):
        sample_latents(tiny_unet, s, cond, uncond, [1], steps=2, progress=False)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        sample_latents(tiny_unet, s, torch.zeros(1, 77, 16), torch.zeros(1, 77, 16), [1], steps=2, progress=False)


def test_decode_to_pil(tiny_vae_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_vae_dir).eval()
    images = decode_to_pil(vae, torch.randn(3, 4, 8, 8), batch_size=2)
    assert len(images) == 3
    assert all(im.mode == "RGB" and im.size == (16, 16) for im in images)


# --------------------------------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="module")
def frozen_clip(tiny_clip_dir, tiny_vae_dir):
    return make_frozen(tiny_clip_dir, tiny_vae_dir)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, tiny_unet):
    run = tmp_path_factory.mktemp("run") / "main"
    for step in (20, 5, 100):
        save_checkpoint(run, step, tiny_unet)
    (run / "ckpt" / "unet_7").mkdir()  # an interrupted write: no weights -> not listed
    (run / "ckpt" / "state_20").mkdir()
    return run


def test_list_unet_checkpoints_sorted_by_step(clip_run, tmp_path):
    assert [(s, p.name) for s, p in list_checkpoints(clip_run, "unet")] == \
        [(5, "unet_5"), (20, "unet_20"), (100, "unet_100")]
    assert latest_unet(clip_run).name == "unet_100"
    assert list_checkpoints(tmp_path, "unet") == [] and latest_unet(tmp_path) is None


def test_generate_is_seeded_per_image(clip_run, frozen_clip):
    tti = TextToImage.from_checkpoint(clip_run / "ckpt" / "unet_20", frozen_clip)
    assert tti.step == 20 and tti.scheduler_config == default_scheduler_config()
    prompts = ["a red slime monster", "a blue ghost", "a tiny green dragon"]
    images = tti.generate(prompts, guidance_scale=3.0, steps=3, batch_size=2, progress=False)
    assert [im.size for im in images] == [(16, 16)] * 3 and all(im.mode == "RGB" for im in images)
    alone = tti.generate([prompts[2]], seeds=[2], guidance_scale=3.0, steps=3, progress=False)[0]
    diff = np.abs(np.asarray(alone, dtype=int) - np.asarray(images[2], dtype=int)).max()
    assert diff <= 1  # default seeds are base_seed + index; batched vs alone agree to the last bit of 8-bit pixels
    other = tti.generate([prompts[2]], seeds=[99], guidance_scale=3.0, steps=3, progress=False)[0]
    assert np.abs(np.asarray(other, dtype=int) - np.asarray(images[2], dtype=int)).max() > 1
    with pytest.raises(ValueError, match="one seed per prompt"):
        tti.generate(prompts, seeds=[1], steps=1, progress=False)


def test_foreign_unet_folder_uses_course_schedule_with_warning(tmp_path, frozen_clip, tiny_unet):
    from helpers.schedule import COURSE_SAMPLE_CODE_CONFIG

    tiny_unet.save_pretrained(tmp_path / "my_unet")  # as the course sample code saves it: no scheduler config
    with pytest.warns(UserWarning, match="scheduler_config.json"):
        tti = TextToImage.from_checkpoint(tmp_path / "my_unet", frozen_clip)
    assert tti.scheduler_config == COURSE_SAMPLE_CODE_CONFIG
    assert len(tti.generate("a cat", steps=2, progress=False)) == 1


def test_not_a_unet_folder_errors_name_the_file_and_the_fix(tmp_path, frozen_clip, tiny_vae_dir, clip_run):
    with pytest.raises(DataError, match="does not exist"):
        TextToImage.from_checkpoint(tmp_path / "nope", frozen_clip)
    with pytest.raises(DataError, match="no config.json.*run folder"):
        TextToImage.from_checkpoint(clip_run, frozen_clip)
    with pytest.raises(DataError, match="AutoencoderKL, not a UNet2DConditionModel"):
        TextToImage.from_checkpoint(tiny_vae_dir, frozen_clip)
    with pytest.raises(DataError, match="state_<step>"):
        TextToImage.from_checkpoint(clip_run / "ckpt" / "state_20", frozen_clip)
    broken = tmp_path / "unet_3"
    broken.mkdir()
    (broken / "config.json").write_text((clip_run / "ckpt" / "unet_5" / "config.json").read_text())
    with pytest.raises(DataError, match="no weights"):
        TextToImage.from_checkpoint(broken, frozen_clip)


def test_a_damaged_unet_checkpoint_is_refused_naming_the_file(tmp_path, frozen_clip, tiny_unet):
    from helpers.checkpoints import CheckpointDamagedError, integrity

    ckpt = save_checkpoint(tmp_path / "run", 1, tiny_unet)
    TextToImage.from_checkpoint(ckpt, frozen_clip)  # intact: loads
    weights = ckpt / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])  # in the tensor bytes: the header still parses
    weights.write_bytes(bytes(data))
    integrity.forget()
    with pytest.raises(CheckpointDamagedError, match="diffusion_pytorch_model.safetensors differs from the sha256"):
        TextToImage.from_checkpoint(ckpt, frozen_clip)


def test_mismatched_unet_and_encoders(tmp_path, frozen_clip):
    wrong_cross = save_checkpoint(tmp_path / "a", 1, build_tiny_unet(cross_attention_dim=TINY_BERT_HIDDEN))
    with pytest.raises(DataError, match="cross_attention_dim is 48.*hidden size 32"):
        TextToImage.from_checkpoint(wrong_cross, frozen_clip)
    wrong_c = save_checkpoint(tmp_path / "b", 1, build_tiny_unet(in_channels=8))
    with pytest.raises(DataError, match="in_channels=8 but the VAE has 4 latent channels"):
        TextToImage.from_checkpoint(wrong_c, frozen_clip)


def test_checkpoint_of_another_text_encoder_warns(tmp_path, frozen_clip, tiny_unet):
    ckpt = save_checkpoint(tmp_path / "run", 1, tiny_unet, text_encoder="openai/clip-vit-base-patch32")
    with pytest.warns(UserWarning, match="trained with the text encoder openai/clip-vit-base-patch32"):
        TextToImage.from_checkpoint(ckpt, frozen_clip)


def _pixels(image):
    return np.asarray(image, dtype=int)


@pytest.mark.parametrize("encoder", ["clip", "bert"])
def test_exported_pipeline_loads_and_matches(tmp_path, request, tiny_vae_dir, encoder):
    from diffusers import DiffusionPipeline

    text_dir = request.getfixturevalue(f"tiny_{encoder}_dir")
    frozen = make_frozen(text_dir, tiny_vae_dir)
    unet = build_tiny_unet(cross_attention_dim=frozen.text_encoder.hidden_size)
    ckpt = save_checkpoint(tmp_path / "run", 30, unet, prediction_type="v_prediction")
    out = export_pipeline(ckpt, frozen, tmp_path / "pipe")
    assert (out / "model_index.json").exists() and (out / "README.md").exists()
    with pytest.raises(FileExistsError):
        export_pipeline(ckpt, frozen, out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = DiffusionPipeline.from_pretrained(out)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    prompt = "a small red monster with wings"
    got = pipe(prompt, num_inference_steps=3, guidance_scale=4.0, output_type="pil",
               generator=[torch.Generator().manual_seed(7)]).images[0]
    want = TextToImage.from_checkpoint(ckpt, frozen).generate([prompt], [7], guidance_scale=4.0, steps=3,
                                                               progress=False)[0]
    assert got.size == want.size == (16, 16)
    assert np.abs(_pixels(got) - _pixels(want)).max() <= 1


def test_require_checkpoint_says_run_notebook_04_first(tmp_path, clip_run):
    from helpers.checkpoints import NoCheckpointError, require_checkpoint

    assert require_checkpoint(clip_run).name == "unet_100"
    unet_100 = require_checkpoint(clip_run)
    assert require_checkpoint(clip_run, unet_100) == unet_100  # a folder as it is
    assert require_checkpoint(clip_run, "ckpt/unet_100") == clip_run / "ckpt" / "unet_100"  # relative to the run
    with pytest.raises(NoCheckpointError, match=r"No checkpoint folder ckpt/unet_3 .*pick one of \[.*'unet_100'\]"):
        require_checkpoint(clip_run, "ckpt/unet_3")
    with pytest.raises(NoCheckpointError, match="run notebook 04 .*first") as err:
        require_checkpoint(tmp_path / "main-smoke")
    assert err.value._render_traceback_() == [str(err.value)]  # a notebook shows the message, not a traceback


def _guided_by_hand(unet, scheduler, cond, uncond, seed, guidance_scale, steps):
    """Classifier-free guidance written out with TWO separate UNet calls per step (the course sample code's loop)."""
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    with torch.inference_mode():
        for t in scheduler.timesteps:
            x = scheduler.scale_model_input(latents, t)
            eps_uncond = unet(x, t, encoder_hidden_states=uncond).sample
            eps_cond = unet(x, t, encoder_hidden_states=cond).sample
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
    return latents


def test_guidance_moves_away_from_the_unconditional_half(tiny_unet, embeddings):
    """The batched call must put "" first and the prompt second, and apply eps_u + g (eps_c - eps_u): swapping the
    halves (or inverting the formula) gives eps_c + g (eps_u - eps_c), which this reference does not match."""
    cond, uncond = embeddings
    cond = cond[:1] * 3.0  # far from the unconditional embedding: the two halves predict clearly different noise
    expected = _guided_by_hand(tiny_unet, sampling_scheduler("ddim"), cond, uncond, 7, 4.0, 3)
    got = sample_latents(tiny_unet, sampling_scheduler("ddim"), cond, uncond, [7], guidance_scale=4.0, steps=3,
                         progress=False)
    swapped = _guided_by_hand(tiny_unet, sampling_scheduler("ddim"), uncond, cond, 7, 4.0, 3)
    assert (expected - swapped).abs().max() > 100 * ATOL  # the test can tell the two apart
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
