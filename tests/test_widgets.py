"""helpers.generation.widgets: callbacks driven from Python (setting .value / clicking) exactly as the browser drives them."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny_unet, make_frozen, save_checkpoint
from PIL import Image

from helpers.generation import TextToImage
from helpers.generation.widgets import (CheckpointPicker, GenerationPanel, ImageCache, PromptSliderDemo, guidance_sweep_demo,
                             lerp_embeddings, png_bytes, prompt_blend_demo)

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeTTI:
    """Stands in for TextToImage: records calls; the image's colour encodes the arguments."""

    def __init__(self):
        self.calls = []

    def encode(self, prompts):
        return torch.stack([torch.full((77, 4), float(len(p))) for p in prompts])

    def generate(self, prompts, seeds=None, **kw):
        self.calls.append(("generate", list(prompts), list(seeds), kw))
        v = int(kw["guidance_scale"] * 10) % 256
        return [Image.new("RGB", (8, 8), (v, seeds[0] % 256, 0)) for _ in prompts]

    def generate_from_embeddings(self, emb, seeds=None, **kw):
        self.calls.append(("embeddings", emb.clone(), list(seeds), kw))
        return [Image.new("RGB", (8, 8), (int(emb.mean() * 10) % 256, 0, 0))]


def test_image_cache_makes_each_value_once():
    made = []
    cache = ImageCache(lambda v: made.append(v) or Image.new("RGB", (4, 4), (int(v * 100), 0, 0)))
    a, status = cache.get(0.3)
    assert status.startswith("generated in") and status.endswith(" s")
    b, status = cache.get(0.1 + 0.2)  # 0.30000000000000004: the same slider position
    assert (b, status) == (a, "cached") and made == [0.3]
    assert cache.get(0.5)[0] != a and len(cache) == 2 and 0.5 in cache


def test_moving_the_guidance_slider_generates_with_that_scale():
    tti = FakeTTI()
    demo = guidance_sweep_demo(tti, "a red slime", seed=4, steps=3)
    first = demo.show()
    assert tti.calls[-1][3]["guidance_scale"] == 7.5 and tti.calls[-1][2] == [4]
    demo.slider.value = 3.0  # what the browser does when the handle moves
    assert tti.calls[-1][3]["guidance_scale"] == 3.0 and tti.calls[-1][3]["steps"] == 3
    assert demo.image.value != first and demo.image.value == png_bytes(tti.generate(["x"], [4], guidance_scale=3.0)[0])
    assert demo.status.value.endswith(" s") and "generated in" in demo.status.value
    n = len(tti.calls)
    demo.slider.value = 7.5  # back: instant, from the cache
    assert len(tti.calls) == n and demo.image.value == first and demo.status.value.endswith("cached")


def test_prompt_blend_lerps_the_two_embeddings_with_a_fixed_seed():
    tti = FakeTTI()
    demo = prompt_blend_demo(tti, "ab", "abcdef", seed=9, guidance_scale=5.0, steps=2)
    demo.slider.value = 0.5
    kind, emb, seeds, kw = tti.calls[-1]
    assert kind == "embeddings" and seeds == [9] and kw["guidance_scale"] == 5.0
    torch.testing.assert_close(emb, torch.full((1, 77, 4), 4.0))  # halfway between 2 and 6 characters
    assert demo.slider.min == 0.0 and demo.slider.max == 1.0
    demo.slider.value = 1.0
    torch.testing.assert_close(tti.calls[-1][1], torch.full((1, 77, 4), 6.0))
    n = len(tti.calls)
    demo.slider.value = 0.5
    assert len(tti.calls) == n and demo.status.value.endswith("cached")
    torch.testing.assert_close(lerp_embeddings(torch.zeros(2), torch.ones(2), 0.25), torch.full((2,), 0.25))


def test_a_failing_generation_is_shown_not_lost():
    def boom(value):
        raise RuntimeError("out of memory")

    demo = guidance_sweep_demo(FakeTTI(), "x")
    demo.cache.make = boom
    assert demo.show(2.0) is None
    assert "RuntimeError: out of memory" in demo.status.value and demo.errors


# --------------------------------------------------------------------------------------------------- with a run
@pytest.fixture(scope="module")
def frozen(tiny_clip_dir, tiny_vae_dir):
    return make_frozen(tiny_clip_dir, tiny_vae_dir)


@pytest.fixture()
def run_dir(tmp_path, tiny_unet):
    run = tmp_path / "outputs" / "main"
    for step in (200, 50):
        save_checkpoint(run, step, tiny_unet)
    save_checkpoint(tmp_path / "outputs" / "other", 999, tiny_unet)  # another run: never listed
    (run / "ckpt" / "state_200").mkdir()
    return run


def test_picker_lists_exactly_the_runs_checkpoints_and_refresh_finds_new_ones(run_dir, tiny_unet):
    picker = CheckpointPicker(run_dir)
    assert [v for _, v in picker.dropdown.options] == [str(run_dir / "ckpt" / n) for n in ("unet_50", "unet_200")]
    assert picker.value == run_dir / "ckpt" / "unet_200"  # the latest is selected
    picker.dropdown.value = str(run_dir / "ckpt" / "unet_50")
    save_checkpoint(run_dir, 1000, tiny_unet)
    assert len(picker.dropdown.options) == 2  # not before Refresh
    picker.refresh_button.click()
    assert [label for label, _ in picker.dropdown.options] == \
        ["step 50  (unet_50)", "step 200  (unet_200)", "step 1000  (unet_1000)"]
    assert picker.value == run_dir / "ckpt" / "unet_50"  # the selection stays


def test_picker_names_a_damaged_checkpoint_and_never_offers_it(tmp_path, tiny_unet):
    from helpers.checkpoints import integrity

    for step in (10, 20):
        save_checkpoint(tmp_path, step, tiny_unet)
    (tmp_path / "ckpt" / "unet_20" / "config.json").write_text("{}")  # changed after it was written
    integrity.forget()
    picker = CheckpointPicker(tmp_path)
    assert [v for _, v in picker.dropdown.options] == [str(tmp_path / "ckpt" / "unet_10")]
    assert picker.value == tmp_path / "ckpt" / "unet_10"
    assert "unet_20: damaged" in picker.damaged.value and "config.json" in picker.damaged.value


def test_picker_of_a_run_without_checkpoints(tmp_path, frozen):
    panel = GenerationPanel(tmp_path / "nothing", frozen)
    assert panel.picker.dropdown.options == () and panel.picker.value is None
    assert "run notebook 04 first" in panel.status.value
    assert panel.generate() is None


def test_panel_generates_with_the_slider_scale_and_the_picked_checkpoint(run_dir, frozen):
    loaded, calls = [], []

    def loader(folder, frozen_models):
        loaded.append(folder.name)
        tti = TextToImage.from_checkpoint(folder, frozen_models)
        real = tti.generate

        def generate(prompts, seeds=None, **kw):
            calls.append(kw["guidance_scale"])
            return real(prompts, seeds, **kw)

        tti.generate = generate
        return tti

    panel = GenerationPanel(run_dir, frozen, prompt="a blue ghost", seed=3, steps=2, loader=loader)
    panel.button.click()
    first = panel.image.value
    assert first[:4] == b"\x89PNG" and calls == [7.5] and loaded == ["unet_200"]
    panel.guidance.value = 2.0  # moving the slider regenerates with that scale
    assert calls == [7.5, 2.0] and panel.last_call["guidance_scale"] == 2.0
    assert panel.image.value != first and "generated in" in panel.status.value
    panel.picker.dropdown.value = str(run_dir / "ckpt" / "unet_50")
    panel.button.click()
    assert loaded == ["unet_200", "unet_50"] and panel.last_call["checkpoint"].endswith("unet_50")


def test_prompt_slider_demo_with_a_real_tiny_model(tmp_path, frozen):
    ckpt = save_checkpoint(tmp_path / "run", 1, build_tiny_unet())
    tti = TextToImage.from_checkpoint(ckpt, frozen)
    demo = PromptSliderDemo(tti, "a red slime", "a blue ghost", seed=1, steps=2)
    demo.show()
    before = demo.guidance.image.value
    demo.guidance.slider.value = 1.0
    assert demo.guidance.image.value != before
    demo.blend.slider.value = 1.0
    assert len(demo.blend.cache) == 2 and not demo.blend.errors and not demo.guidance.errors
