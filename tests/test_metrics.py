"""helpers.submission.frechet, helpers.submission.clip_scores, helpers.submission.metrics: Fréchet distance, FID with a pluggable extractor, CLIP-T/CLIP-I
(tiny real CLIPModel), skips, folder scoring."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from helpers.submission import clip_scores, frechet, metrics, scores
from helpers.data import TestPrompt
from helpers.frozen.hub import hub_problem
from helpers.submission.scores import MetricResult


def _scipy_fd(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _gaussian(rng, n, f, shift=0.0):
    a = rng.normal(size=(f, f))
    return rng.normal(size=(n, f)) @ a + shift


# --------------------------------------------------------------------------------------------------- Fréchet
def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    for f in (1, 3, 8, 20):
        x, y = _gaussian(rng, 300, f), _gaussian(rng, 250, f, shift=0.5)
        mu1, s1 = frechet.feature_stats(x)
        mu2, s2 = frechet.feature_stats(y)
        assert s1.shape == (f, f) and mu1.dtype == np.float64
        assert frechet.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), abs=1e-6,
                                                                           rel=1e-9)


def test_frechet_distance_identical_sets_is_zero_and_singular_covariances_work():
    rng = np.random.default_rng(1)
    x = _gaussian(rng, 100, 10)
    assert frechet.frechet_distance_features(x, x.copy()) == pytest.approx(0.0, abs=1e-6)
    # fewer samples than features: rank-deficient covariances (tiny negative eigenvalues) still give a real number
    small = rng.normal(size=(5, 12))
    value = frechet.frechet_distance_features(small, small)
    assert np.isfinite(value) and value == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_shifted_means_equal_covariance_is_squared_shift():
    rng = np.random.default_rng(2)
    s = np.cov(_gaussian(rng, 200, 6), rowvar=False)
    mu = rng.normal(size=6)
    shift = np.array([0.5, -1.0, 2.0, 0.0, 0.1, 3.0])
    assert frechet.frechet_distance(mu, s, mu + shift, s) == pytest.approx(float(shift @ shift), abs=1e-6)


def test_frechet_distance_rejects_bad_shapes_and_stats_need_two_samples():
    with pytest.raises(ValueError, match="shape"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet.feature_stats(np.zeros((1, 4)))


# --------------------------------------------------------------------------------------------------- CLIP maths
def test_clip_t_and_clip_i_on_hand_made_embeddings():
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    txt = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    cos, mean, x100 = clip_scores.clip_t_from_embeddings(img, txt)
    assert cos.tolist() == pytest.approx([1.0, 0.0, -1.0])
    assert mean == pytest.approx(0.0)  # raw cosine: the course's CLIP-T
    assert x100 == pytest.approx(100 * (1.0 + 0.0 + 0.0) / 3)  # torchmetrics CLIPScore: 100*max(cos, 0)
    gen = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    refs = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0.0, 3.0])]  # 2 references, then 1
    per, clip_i = clip_scores.clip_i_from_embeddings(gen, refs)
    assert per.tolist() == pytest.approx([0.5, 1.0])  # mean over the references of the cosine
    assert clip_i == pytest.approx(0.75)
    with pytest.raises(ValueError):
        clip_scores.clip_i_from_embeddings(gen, refs[:1])


# --------------------------------------------------------------------------------------------------- image folders
def _write_images(folder: Path, n: int, seed: int, *, rgba: bool = False, size: int = 16) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, size=(size, size, 4 if rgba else 3), dtype=np.uint8)
        p = folder / f"img_{i:03d}.png"
        Image.fromarray(arr, "RGBA" if rgba else "RGB").save(p)
        paths.append(p)
    return paths


class MeanColour(nn.Module):
    """A tiny feature extractor: per-channel mean and std of the image ([B,3,H,W] -> [B,6])."""

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_fid_with_a_pluggable_extractor(tmp_path):
    gen = _write_images(tmp_path / "gen", 12, 0)
    ref = _write_images(tmp_path / "ref", 15, 1)
    with pytest.warns(UserWarning, match="biased"):
        res = frechet.fid(tmp_path / "gen", tmp_path / "ref", feature_extractor=MeanColour(), resolution=8,
                          batch_size=5)
    assert not res.skipped and res.value >= 0 and res.n_images == 12 and res.model == "MeanColour"
    assert res.settings["resolution"] == 8 and res.settings["n_reference"] == 15 and "antialias" in res.settings
    assert "small N" in res.note and res.higher_is_better is False
    # the same number as computing the features by hand (images read like training: load_image at 8 px)
    from helpers.data.images import load_image, pil_to_tensor

    feats = [MeanColour()(torch.stack([pil_to_tensor(load_image(p, 8)) for p in ps])) for ps in (gen, ref)]
    assert res.value == pytest.approx(frechet.frechet_distance_features(*feats), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same = frechet.fid(gen, gen, feature_extractor=MeanColour(), resolution=8)
    assert same.value == pytest.approx(0.0, abs=1e-6)


def test_images_are_read_like_training_alpha_on_white(tmp_path):
    folder = tmp_path / "rgba"
    folder.mkdir()
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(folder / "a.png")  # fully transparent -> white
    batch = scores.load_tensors([folder / "a.png"], 4, (255, 255, 255))
    assert batch.shape == (1, 3, 4, 4) and torch.allclose(batch, torch.ones_like(batch))


def test_fid_default_is_skipped_without_a_number_when_inception_is_unavailable(tmp_path, monkeypatch):
    _write_images(tmp_path / "gen", 3, 0)
    _write_images(tmp_path / "ref", 3, 1)
    monkeypatch.setattr(frechet, "inception_problem", lambda: "torch-fidelity is not installed")
    res = frechet.fid(tmp_path / "gen", tmp_path / "ref", resolution=8)
    assert res.skipped and res.value is None and res.note.startswith("skipped: torch-fidelity")
    assert "skipped" in metrics.metrics_table([res])


def test_inception_problem_names_torch_fidelity_when_missing():
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if _TORCH_FIDELITY_AVAILABLE:
        pytest.skip("torch-fidelity is installed here")
    assert "torch-fidelity" in frechet.inception_problem()


def test_vae_frechet_distance_uses_the_latent_features(tmp_path, tiny_vae_dir):
    from helpers.frozen import load_vae

    vae = load_vae(tiny_vae_dir)
    _write_images(tmp_path / "gen", 6, 0, size=32)
    _write_images(tmp_path / "ref", 7, 1, size=32, rgba=True)
    res = frechet.vae_frechet_distance(tmp_path / "gen", tmp_path / "ref", vae, resolution=32)
    assert res.name == "Fréchet distance in demo-VAE latent space — not FID"
    assert res.value is not None and res.value >= 0 and res.settings["features"] == 4 * 4 * 4 + 4
    assert "not FID" in res.note and res.settings["pool"] == 4
    feats = frechet.VAELatentFeatures(vae, pool=2)(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, 20)


# --------------------------------------------------------------------------------------------------- CLIP models
def test_clip_t_and_clip_i_with_a_tiny_real_clip(tiny_clip_dir):
    scorer = clip_scores.load_clip(str(tiny_clip_dir))
    imgs = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    prompts = ["a red monster", "a green slime", "a blue ghost"]
    t = clip_scores.clip_t(imgs, prompts, clip=scorer, names=["a.png", "b.png", "c.png"])
    img_emb, txt_emb = scorer.image_embeddings(imgs), scorer.text_embeddings(prompts)
    expected = torch.nn.functional.cosine_similarity(img_emb, txt_emb).double()
    assert t.value == pytest.approx(float(expected.mean()), abs=1e-5) and -1 <= t.value <= 1
    assert t.per_image["b.png"] == pytest.approx(float(expected[1]), abs=1e-5)
    assert "CLIPScore x100" in t.beside and t.model == str(tiny_clip_dir)
    refs = [[imgs[0]], [imgs[1], imgs[0]], [imgs[2]]]
    i = clip_scores.clip_i(imgs, refs, clip=scorer)
    assert i.per_image["0"] == pytest.approx(1.0, abs=1e-5) and i.per_image["2"] == pytest.approx(1.0, abs=1e-5)
    cos_10 = float(torch.nn.functional.cosine_similarity(img_emb[1:2], img_emb[0:1]))
    assert i.per_image["1"] == pytest.approx((1.0 + cos_10) / 2, abs=1e-5)
    worst, best = i.worst_best(1)
    assert worst[0][0] == "1" and best[0][1] == pytest.approx(1.0, abs=1e-5)


def test_clip_metrics_are_skipped_when_the_model_cannot_load(tmp_path, monkeypatch):
    res = clip_scores.clip_t([Image.new("RGB", (8, 8))], ["x"], clip=str(tmp_path / "no-such-clip"))
    assert res.skipped and res.note.startswith("skipped:") and res.value is None
    # a hub id that is not in the HF cache, offline: skipped at once (no retries), saying why
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub_problem.cache_clear()
    res = clip_scores.clip_i([Image.new("RGB", (8, 8))], [[Image.new("RGB", (8, 8))]], clip="nobody/no-such-clip")
    assert res.skipped and "not in the Hugging Face cache" in res.note and res.model == "nobody/no-such-clip"
    hub_problem.cache_clear()


def test_reference_folder_named_like_the_prompts(tmp_path):
    """The course layout (and the demo's test_reference/): one reference per prompt, named by its image_name."""
    refs = tmp_path / "test_reference"
    refs.mkdir()
    prompts = [TestPrompt("0", "a", "0000.png"), TestPrompt("1", "b", "0001.png")]
    for p in prompts:
        Image.new("RGB", (4, 4)).save(refs / p.image_name)
    assert metrics.load_reference_map(refs, prompts) == {"0000.png": [refs / "0000.png"],
                                                         "0001.png": [refs / "0001.png"]}


def _score_fixture(tmp_path: Path):
    gen = tmp_path / "gen"
    gen.mkdir()
    ref = tmp_path / "ref"
    _write_images(ref, 6, 3, size=32, rgba=True)
    prompts, refmap = [], {}
    rng = np.random.default_rng(0)
    for i in range(3):
        name = f"m{i}_walk.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(gen / name)
        prompts.append(TestPrompt(key=f"m{i}_walk", text_prompt=f"a red monster walking {i}", image_name=name))
        refmap[name] = [f"ref/img_{2 * i:03d}.png", f"ref/img_{2 * i + 1:03d}.png"]
    (tmp_path / "reference_map.json").write_text(json.dumps(refmap))
    return gen, prompts


def test_score_folder_computes_what_it_can_and_skips_the_rest(tmp_path, tiny_clip_dir, tiny_vae_dir,
                                                              monkeypatch):
    from types import SimpleNamespace

    from helpers.frozen import load_vae

    gen, prompts = _score_fixture(tmp_path)
    profile = SimpleNamespace(name="demo", resolution=32, background=(255, 255, 255), device="cpu",
                              vae=str(tiny_vae_dir), vae_subfolder=None)
    monkeypatch.setattr(frechet, "inception_problem", lambda: "no Inception weights offline")
    results = metrics.score_folder(gen, prompts, tmp_path, profile, clip_model=str(tiny_clip_dir),
                                   vae=load_vae(tiny_vae_dir))
    by = {r.name: r for r in results}
    assert by["FID"].skipped and "no Inception" in by["FID"].note
    assert not by["CLIP-T"].skipped and not by["CLIP-I"].skipped and by["CLIP-I"].settings["n_reference"] == 6
    assert not by[frechet.VAE_FD_NAME].skipped
    table = metrics.metrics_table(results)
    assert "FID" in table and "skipped" in table and "not FID" in table and "CLIPScore x100" in table
    # without any CLIP model: clearly skipped, no number
    results = metrics.score_folder(gen, prompts, tmp_path, profile, clip_model=str(tmp_path / "nothing"),
                                   compute_fid=False, compute_vae_fd=False)
    assert [r.name for r in results] == ["CLIP-T", "CLIP-I"] and all(r.skipped for r in results)
    # a missing generated image is an error naming it
    (gen / "m1_walk.png").unlink()
    from helpers.data import DataError

    with pytest.raises(DataError, match="m1_walk.png"):
        metrics.score_folder(gen, prompts, tmp_path, profile, compute_clip=False, compute_vae_fd=False)


class ColourTTI:
    """A test double for helpers.generation.TextToImage: a flat colour from each seed (deterministic)."""

    def generate(self, prompts, seeds, *, guidance_scale=7.5, steps=50, scheduler="ddim", batch_size=8,
                 progress=True):
        return [Image.new("RGB", (32, 32), tuple(int(v) for v in np.random.default_rng(s).integers(0, 256, 3)))
                for s in seeds]


def test_generate_for_scoring_extra_images_are_scored_too(tmp_path, tiny_clip_dir, monkeypatch):
    from types import SimpleNamespace

    from helpers.submission import seed_for

    _, prompts = _score_fixture(tmp_path)
    out = metrics.generate_for_scoring(ColourTTI(), prompts, tmp_path / "scoring", size=32, images_per_prompt=3,
                                       progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"m{i}_walk.png" for i in range(3)] + [f"m{i}_walk__{k}.png" for i in range(3)
                                                                     for k in (1, 2)])
    assert [f.name for f in metrics.generated_files(out, prompts[1])] == ["m1_walk.png", "m1_walk__1.png",
                                                                          "m1_walk__2.png"]
    # image 0 is the submission's image of that key (same seed rule)
    with Image.open(out / "m1_walk.png") as im:
        assert im.getpixel((0, 0)) == ColourTTI().generate(["x"], [seed_for("m1_walk", 0)])[0].getpixel((0, 0))
    profile = SimpleNamespace(name="demo", resolution=32, background=(255, 255, 255), device="cpu", vae="none",
                              vae_subfolder=None)
    monkeypatch.setattr(frechet, "inception_problem", lambda: "offline")
    results = metrics.score_folder(out, prompts, tmp_path, profile, clip_model=str(tiny_clip_dir),
                                   fid_extractor=MeanColour(), compute_vae_fd=True)
    by = {r.name: r for r in results}
    assert by["CLIP-T"].n_images == 9 and len(by["CLIP-I"].per_image) == 9
    assert by["Fréchet distance (custom features)"].n_images == 9
    assert by[frechet.VAE_FD_NAME].skipped and "cannot load the VAE" in by[frechet.VAE_FD_NAME].note
    fig = metrics.examples_figure(by["CLIP-I"], out, prompts, reference=tmp_path, k=2)
    # 3 prompts of 3 images: 2 in the worst row, the one left in the best row, each beside its reference
    assert len(fig.axes) == (2 + 1) * 2
    shown = [ax.texts[0].get_text().split(" · ")[1] for ax in fig.axes if " · " in ax.texts[0].get_text()]
    assert len(shown) == 3 and len(set(shown)) == 3  # no prompt twice
    with pytest.raises(ValueError):
        metrics.examples_figure(MetricResult.skip("FID", "offline"), out, prompts)


def test_metric_result_table_and_sweep_plot():
    rs = [[MetricResult("CLIP-T", 0.2 + 0.01 * g, "clip", 4), MetricResult.skip("FID", "offline"),
           MetricResult("FD", 10.0 - g, "vae", 4, higher_is_better=False)] for g in (1.0, 3.0, 7.5)]
    fig = metrics.plot_sweep("guidance_scale", [1.0, 3.0, 7.5], rs)
    assert len(fig.axes) == 2  # the skipped metric gets no panel
    sr = metrics.SweepResult("guidance_scale", [1.0, 3.0, 7.5], rs, [], fig)
    assert sr.best("CLIP-T") == 7.5 and sr.best("FD") == 7.5 and sr.best("FID") is None
    assert "skipped" in sr.table()


# --------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_offline_frechet_distance_is_lower_for_a_trained_checkpoint(tmp_path, one_thread):
    """The demo pipeline end to end: the smoke demo data set, a demo VAE trained briefly by helpers.demo.vae (at
    32 px to keep the test short), the real MiniLM text encoder, a held-out split, a latent cache without the
    held-out keys and the tiny UNet trained through helpers.training. The Fréchet distance in demo-VAE latent space of
    the held-out generations (8 per prompt) is lower after training than with the untrained (initial) UNet."""
    import time

    from helpers.frozen.cache import build_cache, load_cache
    from helpers.data import load_train_set
    from helpers.demo.dataset import ensure_demo_dataset
    from helpers.demo.vae import train_demo_vae
    from helpers.frozen import load_frozen_models
    from helpers.profiles import resolve_profile, with_overrides
    from helpers.generation import TextToImage
    from helpers.schedule import default_scheduler_config
    from helpers.data.split import holdout_split, split_status
    from helpers.training import TrainConfig, train
    from helpers.unet import build_unet

    t0 = time.perf_counter()
    res = 32
    data = ensure_demo_dataset(tmp_path / "data", smoke=True)
    vae_dir = train_demo_vae(data, tmp_path / "vae", steps=VAE_STEPS, batch_size=16, num_threads=1, resolution=res,
                             progress=False, smoke=True)
    P = resolve_profile("demo", True, data, tmp_path / "outputs", device="cpu", verbose=False)
    P = with_overrides(P, resolution=res, vae=str(vae_dir))
    frozen = load_frozen_models(P)
    train_set = load_train_set(P.data_dir, verbose=False, progress=False)
    run_dir = P.run_dir("fd")
    split = holdout_split(train_set, out_dir=run_dir / "heldout", resolution=res, fraction=0.25)
    cache_dir = build_cache(split.train_set, frozen, P)
    config = TrainConfig.for_profile(P, run_name="fd", cache_dir=str(cache_dir), max_steps=UNET_STEPS, batch_size=16,
                                     lr=1e-3, warmup_steps=10, eval_freq=0, save_freq=UNET_STEPS, log_every=50,
                                     ema=False, sample_at_start=False)
    result = train(config, load_cache(cache_dir), frozen)
    assert result.finished and result.checkpoint is not None
    assert split_status(split, run_dir)[0] == "excluded"
    t_train = time.perf_counter() - t0

    untrained = build_unet(P.unet_preset, cross_attention_dim=frozen.text_encoder.hidden_size,
                           sample_size=frozen.latent_shape[-1], seed=config.seed)
    models = {"trained": TextToImage.from_checkpoint(result.checkpoint, frozen),
              "untrained": TextToImage(untrained, frozen, default_scheduler_config())}
    fd = {}
    for name, tti in models.items():
        folder = metrics.generate_for_scoring(tti, split.prompts_path, tmp_path / name, size=res,
                                              images_per_prompt=8, guidance_scale=3.0, steps=10, progress=False)
        (r,) = metrics.score_folder(folder, split.prompts_path, split.reference_map, P, vae=frozen.vae,
                                    compute_fid=False, compute_clip=False)
        assert r.name == frechet.VAE_FD_NAME and r.n_images == 8 * len(split.heldout_keys)
        fd[name] = r.value
    print(f"Fréchet distance in demo-VAE latent space: {fd} (models {t_train:.0f} s, "
          f"total {time.perf_counter() - t0:.0f} s)")
    assert fd["trained"] < fd["untrained"], fd


VAE_STEPS, UNET_STEPS = 120, 150  # measured margin: see the report of the metrics helper


def test_examples_pick_one_image_per_prompt_and_say_the_verdict(tmp_path):
    """A prompt never appears in both rows (or twice in one), and a 1/0 score is written as a verdict."""
    prompts = [TestPrompt(f"m{i}_walk", f"prompt {i}", f"m{i}_walk.png") for i in range(4)]
    per_image = {}
    for i, p in enumerate(prompts):
        for k in range(3):
            name = p.image_name if k == 0 else f"m{i}_walk__{k}.png"
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name)
            per_image[name] = float(k == 0 or i == 3)  # image 0 of every prompt right; all of prompt 3 right
    result = MetricResult(name="adherence", value=0.5, model="m", n_images=12, per_image=per_image)
    worst, best = metrics._distinct_prompts(result, {n: prompts[int(n[1])] for n in per_image}, k=2)
    assert [s for _, s in worst] == [0.0, 0.0] and [s for _, s in best] == [1.0, 1.0]
    owners = [n.split("_")[0] for n, _ in worst + best]
    assert len(set(owners)) == 4
    fig = metrics.examples_figure(result, tmp_path, prompts, k=2)
    texts = [ax.texts[0].get_text() for ax in fig.axes]
    assert sum("judged wrong" in t for t in texts) == 2 and sum("judged right" in t for t in texts) == 2


def test_scores_are_printed_with_the_digits_their_sample_supports():
    """32 images: a share moves in steps of 0.03, so two decimals; a full test set's cosine gets three."""
    assert scores.format_score(0.40625, 32) == "0.41"
    assert scores.format_score(0.29871, 1063) == "0.299"
    assert scores.format_score(102.8221, 32) == "102.8"
    assert scores.format_score(None, 32) == "skipped"
    table = scores.metrics_table([MetricResult(name="adherence", value=0.40625, model="judge", n_images=32)])
    assert "0.41" in table and "0.4062" not in table
