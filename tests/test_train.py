"""helpers.training: accumulation, exact resume, atomic saves, EMA, faults, refusals, the command line.

Most tests train the "tiny" UNet preset on a small in-memory LatentCache made from random tensors (8x8x4 latents);
one builds a real cache from a tiny generated data set with the tiny BERT + VAE of conftest and runs the command
line with sampling on.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import checkpoints
from helpers.frozen.cache import LatentCache
from helpers.training import LiveLossPlot
from helpers.training.run_folder import read_metrics, sample_grids
from helpers.training import NonFiniteLossError, RunFolderError, TrainConfig, TrainEvent, train

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")  # the tiny UNet is faster so, and a shared machine does not thrash


# --------------------------------------------------------------------------------------------------- fixtures
def make_cache(n: int = 8, channels: int = 4, side: int = 8, hidden: int = 32, n_captions: int = 5,
               seed: int = 0) -> LatentCache:
    """A LatentCache of ``n`` structured latents (smooth patterns, small std) and random caption embeddings."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    freq = torch.rand(n, channels, 1, 1, generator=g) * 3 + 0.5
    phase = torch.rand(n, channels, 1, 1, generator=g) * 6.28
    mean = 2 * torch.sin(freq * (xx + yy) + phase)  # raw latents; scaled by 0.5 -> std ~ 0.7
    std = torch.full_like(mean, 0.02)
    captions = [""] + [f"caption {i}" for i in range(n_captions - 1)]
    ids = torch.tensor([[1 + i % (n_captions - 1), 1 + (i + 1) % (n_captions - 1)] for i in range(n)])
    return LatentCache(
        path=Path("in-memory"), keys=[f"k{i}" for i in range(n)], image_names=[f"{i}.png" for i in range(n)],
        captions=captions, empty_index=0, caption_ids=ids, caption_counts=(ids >= 0).sum(1), mean=mean.half(),
        std=std.half(), mean_flip=mean.flip(-1).half(), std_flip=std.flip(-1).half(),
        text_emb=torch.randn(n_captions, 77, hidden, generator=g).half(), scaling_factor=0.5, meta={})


@pytest.fixture(scope="module")
def cache() -> LatentCache:
    return make_cache()


def config(tmp_path: Path, name: str = "run", **overrides) -> TrainConfig:
    base = dict(run_name=name, run_dir=str(tmp_path / name), unet_preset="tiny", batch_size=4, grad_accum=1,
                max_steps=4, lr=1e-3, warmup_steps=1, eval_freq=0, save_freq=100, log_every=1, device="cpu",
                mixed_precision="no", ema=True, ema_decay=0.999, seed=0)
    base.update(overrides)
    return TrainConfig(**base)


def model_weights(state_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(state_dir / "model.safetensors"))


def unet_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], exact: bool = True, atol: float = 0.0):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), f"{k} differs (max {float((a[k] - b[k]).abs().max()):.3g})"
        else:
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


def stop_at(step: int):
    """A callback that raises KeyboardInterrupt (like Ctrl-C) once ``step`` is done."""
    def callback(event: TrainEvent):
        if event.kind == "log" and event.step == step:
            raise KeyboardInterrupt
    return callback


# --------------------------------------------------------------------------------------------------- the loop
def test_gradient_accumulation_matches_one_big_batch(tmp_path, cache):
    # 4 micro-batches of 2 == one batch of 8: the loop draws the whole global batch (indices, flips, caption
    # dropout, noise, timesteps) at once from its generator, so both runs see exactly the same samples.
    common = dict(max_steps=3, ema=False, lr_schedule="constant", save_freq=3)
    small = train(config(tmp_path, "accum", batch_size=2, grad_accum=4, **common), cache=cache)
    big = train(config(tmp_path, "big", batch_size=8, grad_accum=1, **common), cache=cache)
    assert small.step == big.step == 3
    for a, b in zip(small.losses, big.losses):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    # float sums in another order: equal to ~1e-7 per step, far below one AdamW step (lr = 1e-3)
    assert_same(model_weights(small.state), model_weights(big.state), exact=False, atol=2e-5)


def test_resume_is_bitwise_exact(tmp_path, cache):
    kwargs = dict(max_steps=6, save_freq=4, batch_size=4, grad_accum=2)
    full = train(config(tmp_path, "full", **kwargs), cache=cache)
    first = train(config(tmp_path, "split", **kwargs), cache=cache, callback=stop_at(3))
    assert first.interrupted and first.step == 3
    assert [s for s, _ in checkpoints.list_checkpoints(first.run_dir, "state")] == [3]
    second = train(config(tmp_path, "split", resume="latest", **kwargs), cache=cache)
    assert second.start_step == 3 and second.step == 6 and second.finished and not second.interrupted
    assert second.losses == full.losses[3:]  # the same batches, noise and timesteps, bit for bit
    assert_same(model_weights(full.state), model_weights(second.state))  # raw weights
    assert_same(unet_weights(full.checkpoint), unet_weights(second.checkpoint))  # EMA weights
    assert_same(load_file(str(full.state / "optimizer.safetensors")),
                load_file(str(second.state / "optimizer.safetensors")))
    # metrics.jsonl holds each step once
    assert [r["step"] for r in read_metrics(second.run_dir)] == [1, 2, 3, 4, 5, 6]


def test_an_interrupted_save_is_never_resumed_from(tmp_path, cache, monkeypatch):
    cfg = config(tmp_path, "crash", max_steps=4, save_freq=2)
    real_save_tree = checkpoints.store.save_tree

    def failing_save_tree(folder, name, obj):
        if name == "ema" and "state_4" in folder.name:
            raise OSError("No space left on device (simulated, mid-save)")
        return real_save_tree(folder, name, obj)

    monkeypatch.setattr(checkpoints.store, "save_tree", failing_save_tree)
    with pytest.raises(OSError, match="simulated"):
        train(cfg, cache=cache)
    monkeypatch.setattr(checkpoints.store, "save_tree", real_save_tree)
    run = Path(cfg.run_dir)
    assert checkpoints.latest_state(run) == run / "ckpt" / "state_2"
    assert not (run / "ckpt" / "state_4").exists()
    # a hard kill leaves the temporary folder behind: resume must ignore it and clean it up
    leftover = run / "ckpt" / ".tmp-state_4-123-deadbeef"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half a file")
    resumed = train(config(tmp_path, "crash", max_steps=4, save_freq=2, resume="latest"), cache=cache)
    assert resumed.start_step == 2 and resumed.step == 4
    assert not leftover.exists()
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [2, 4]
    assert [s for s, _ in checkpoints.list_checkpoints(run, "unet")] == [2, 4]


def test_resume_skips_a_damaged_state_and_only_two_states_are_kept(tmp_path, cache, capsys):
    """Default keep_states=2 (every UNet kept); bytes flipped in the newest state: 'latest' names the file, resumes
    from the newest intact state, says how many steps are trained again, and ends where a clean run ends."""
    kwargs = dict(max_steps=6, save_freq=2)
    clean = train(config(tmp_path, "clean", **kwargs), cache=cache)
    run = train(config(tmp_path, "flip", max_steps=6, save_freq=2), cache=cache).run_dir
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [4, 6]  # state_2 pruned
    assert [s for s, _ in checkpoints.list_checkpoints(run, "unet")] == [2, 4, 6]
    weights = run / "ckpt" / "state_6" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 64])
    weights.write_bytes(bytes(data))
    checkpoints.integrity.forget()
    capsys.readouterr()
    resumed = train(config(tmp_path, "flip", resume="latest", **kwargs), cache=cache)
    said = capsys.readouterr().out
    assert "state_6/model.safetensors differs from the sha256 digest" in said and "steps 5..6 (2 steps)" in said
    assert resumed.start_step == 4 and resumed.step == 6
    assert (run / "ckpt" / "damaged-state_6").is_dir()
    assert_same(model_weights(clean.state), model_weights(resumed.state))


def test_ema_follows_its_formula(tmp_path, cache):
    from diffusers.training_utils import EMAModel

    cfg = config(tmp_path, "ema", max_steps=2, save_freq=1, ema_decay=0.999, ema_warmup=True, ema_power=0.75)
    result = train(cfg, cache=cache)
    run = result.run_dir / "ckpt"
    ema1, ema2 = unet_weights(run / "unet_1"), unet_weights(run / "unet_2")
    raw1, raw2 = model_weights(run / "state_1"), model_weights(run / "state_2")
    probe = EMAModel([torch.nn.Parameter(torch.zeros(1))], decay=0.999, use_ema_warmup=True, power=0.75)
    d1, d2 = probe.get_decay(1), probe.get_decay(2)
    assert d1 == 0.0 and 0 < d2 < 0.999
    assert d2 == pytest.approx(1 - (1 + 1) ** -0.75)
    for k in raw1:
        assert torch.equal(ema1[k], raw1[k])  # decay 0 at the first step: the EMA is the weights
        torch.testing.assert_close(ema2[k], d2 * ema1[k] + (1 - d2) * raw2[k], atol=1e-6, rtol=0)
    saved = json.loads((run / "state_2" / "ema.json").read_text())
    assert saved["optimization_step"] == 2


def test_loss_falls_when_overfitting_a_few_latents(tmp_path, cache):
    cfg = config(tmp_path, "overfit", batch_size=8, max_steps=60, lr=2e-3, warmup_steps=5, ema=False,
                 caption_dropout=0.0, save_freq=1000, log_every=10)
    result = train(cfg, cache=cache)
    first, last = result.losses[:10], result.losses[-10:]
    assert sum(last) / 10 < 0.6 * sum(first) / 10, (first, last)
    assert result.step == 60 and result.finished


def test_ctrl_c_saves_a_checkpoint_and_returns(tmp_path, cache):
    def ctrl_c(event: TrainEvent):
        if event.kind == "log" and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Jupyter's "interrupt kernel" sends

    before = signal.getsignal(signal.SIGINT)
    result = train(config(tmp_path, "sigint", max_steps=50, save_freq=100), cache=cache, callback=ctrl_c)
    assert result.interrupted and not result.finished and result.step == 2
    assert result.state == result.run_dir / "ckpt" / "state_2" and result.checkpoint.name == "unet_2"
    assert signal.getsignal(signal.SIGINT) is before  # the loop gives the handler back
    resumed = train(config(tmp_path, "sigint", max_steps=3, save_freq=100, resume="latest"), cache=cache)
    assert resumed.start_step == 2 and resumed.step == 3


class PoisonedCache:
    """A cache whose batches become NaN from the ``bad_call``-th on."""

    def __init__(self, cache: LatentCache, bad_call: int):
        self.cache, self.bad_call, self.calls = cache, bad_call, 0
        self.n_images, self.latent_shape, self.text_emb = cache.n_images, cache.latent_shape, cache.text_emb

    def batch(self, indices, generator, **kwargs):
        self.calls += 1
        latents, text = self.cache.batch(indices, generator, **kwargs)
        if self.calls >= self.bad_call:
            latents = latents * float("nan")
        return latents, text


def test_a_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, cache):
    cfg = config(tmp_path, "nan", max_steps=6, save_freq=2)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*state_2"):
        train(cfg, cache=PoisonedCache(cache, bad_call=3))
    run = Path(cfg.run_dir)
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [2]
    assert [s for s, _ in checkpoints.list_checkpoints(run, "unet")] == [2]
    weights = model_weights(run / "ckpt" / "state_2")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_second_run_into_the_same_folder_refuses(tmp_path, cache):
    train(config(tmp_path, "once", max_steps=2, save_freq=2), cache=cache)
    with pytest.raises(RunFolderError, match="resume='latest'"):
        train(config(tmp_path, "once", max_steps=2), cache=cache)
    with pytest.raises(RunFolderError, match=r"lr: checkpoint 0\.001, now 0\.01"):
        train(config(tmp_path, "once", max_steps=3, lr=1e-2, resume="latest"), cache=cache)
    # a finished run re-run with resume='latest' just reports it (what a notebook re-run does)
    again = train(config(tmp_path, "once", max_steps=2, resume="latest"), cache=cache)
    assert again.step == 2 and again.finished and again.losses == []
    assert again.checkpoint.name == "unet_2"


# --------------------------------------------------------------------------------------------------- config
def test_config_json_roundtrip_and_profile_defaults(tmp_path):
    from helpers.profiles import Profile

    def profile(name, smoke):
        return Profile(name=name, smoke=smoke, reason="test", data_dir=tmp_path / "data", outputs_dir=tmp_path / "out",
                       resolution=256 if name == "course" else 64, text_encoder="te", vae="vae",
                       vae_subfolder=None, unet_preset="tiny" if smoke else ("reference" if name == "course" else "demo"),
                       device="cpu")

    course = TrainConfig.for_profile(profile("course", False))
    assert (course.eval_freq, course.save_freq, course.unet_preset, course.resolution) == (500, 500, "reference", 256)
    demo = TrainConfig.for_profile(profile("demo", False), run_name="x", lr=1e-4)
    assert demo.unet_preset == "demo" and demo.max_steps <= 1000 and demo.lr == 1e-4
    assert demo.prediction_type == "v_prediction" and course.prediction_type == "epsilon"
    adopted = TrainConfig.for_profile(profile("demo", False))  # the recipe study's winner (benchmarks/RESULTS.md)
    assert (adopted.lr, adopted.timestep_sampling) == (2e-3, "logit_normal") and course.timestep_sampling == "uniform"
    assert demo.run_dir == str(tmp_path / "out" / "x")
    smoke = TrainConfig.for_profile(profile("demo", True))
    assert smoke.max_steps <= 10 and smoke.eval_freq <= 5 and smoke.run_dir.endswith("main-smoke")
    path = demo.save(tmp_path / "c.json")
    assert TrainConfig.load(path) == demo
    with pytest.raises(ValueError, match="Unknown TrainConfig field"):
        TrainConfig.from_dict({**demo.to_dict(), "learning_rate": 1})
    with pytest.raises(ValueError, match="prediction_type"):
        TrainConfig(prediction_type="x0").validate()
    assert demo.differences(TrainConfig.from_dict({**demo.to_dict(), "max_steps": 9, "eval_freq": 7})) == {}
    assert set(demo.differences({**demo.to_dict(), "snr_gamma": None, "batch_size": 3})) == {"snr_gamma",
                                                                                            "batch_size"}


def test_v_prediction_and_bf16_autocast_run(tmp_path, cache):
    result = train(config(tmp_path, "v", max_steps=2, prediction_type="v_prediction", mixed_precision="bf16",
                          snr_gamma=5.0, save_freq=2), cache=cache)
    assert result.step == 2 and all(math.isfinite(x) for x in result.losses)
    sched = json.loads((result.checkpoint / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "v_prediction"


def test_sample_grids_use_the_configs_sampler_and_need_the_frozen_models(tmp_path, tiny_bert_dir, tiny_vae_dir,
                                                                         monkeypatch):
    import helpers.training.loop as T
    from conftest import TINY_BERT_HIDDEN, make_frozen

    used = []
    real = T.sampling_scheduler
    monkeypatch.setattr(T, "sampling_scheduler", lambda name, config: used.append(name) or real(name, config))
    cache = make_cache(hidden=TINY_BERT_HIDDEN)
    frozen = make_frozen(tiny_bert_dir, tiny_vae_dir)
    kwargs = dict(max_steps=2, eval_freq=2, sample_steps=2, sample_prompts=["a red slime", "a blue bird"],
                  sample_scheduler="dpm++")
    result = train(config(tmp_path, "grids", report_to="tensorboard", **kwargs), cache, frozen)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(result.run_dir / "logs" / "grids"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("samples")] == [0, 2]  # the grids, also in TensorBoard
    assert used == ["dpm++"] and [s for s, _ in sample_grids(result.run_dir)] == [0, 2] == [
        int(p.stem.split("_")[1]) for p in result.samples]
    without = train(config(tmp_path, "no-grids", **kwargs), cache)  # no frozen models: no grids
    assert without.finished and sample_grids(without.run_dir) == [] and used == ["dpm++"]
    with pytest.raises(ValueError, match="sample_scheduler must be one of ddim, dpm"):
        TrainConfig(sample_scheduler="plms").validate()


def test_live_loss_plot_handles_events(tmp_path):
    from PIL import Image

    plot = LiveLossPlot(every=2)
    for step in range(1, 6):
        plot(TrainEvent("log", step, 5, metrics={"loss": 1.0 / step, "lr": 1e-4}))
    plot(TrainEvent("sample", 5, 5, image=Image.new("RGB", (8, 8)), path=tmp_path / "x.png"))
    plot(TrainEvent("end", 5, 5))
    fig = plot.figure()
    assert len(fig.axes) == 2 and plot.steps == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------------------------------- real cache + CLI
def build_tiny_cache(root: Path, text_encoder_dir: Path, vae_dir: Path) -> tuple[Path, "object"]:
    """A real cache: 8 generated sprites (2 species x 4 actions) at 32 px, tiny BERT + tiny VAE (16x16 latents)."""
    from helpers.frozen.cache import build_cache
    from helpers.data import load_train_set
    from helpers.demo.dataset import make_demo_dataset
    from helpers.frozen import FrozenModels, load_text_encoder, load_vae
    from helpers.profiles import Profile

    data = make_demo_dataset(root / "data", n_species=2, n_frames=1, size=32)
    profile = Profile(name="demo", smoke=True, reason="test", data_dir=data, outputs_dir=root / "outputs",
                      resolution=32, text_encoder=str(text_encoder_dir), vae=str(vae_dir), vae_subfolder=None,
                      unet_preset="tiny", device="cpu")
    frozen = FrozenModels(load_text_encoder(text_encoder_dir), load_vae(vae_dir), profile)
    folder = build_cache(load_train_set(data, verbose=False, progress=False), frozen, profile)
    return folder, profile


def test_command_line_with_a_real_cache_and_sample_grids(tmp_path, tiny_bert_dir, tiny_vae_dir):
    from diffusers import UNet2DConditionModel

    cache_dir, profile = build_tiny_cache(tmp_path, tiny_bert_dir, tiny_vae_dir)
    cfg = TrainConfig.for_profile(profile, max_steps=3, batch_size=4, eval_freq=2, save_freq=2, sample_steps=2,
                                  sample_prompts=["a red slime", "a blue bird"], mixed_precision="no",
                                  cache_dir=str(cache_dir), device="cpu")
    path = cfg.save(tmp_path / "config.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "helpers.training", "--config", str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = Path(cfg.run_dir)
    assert [s for s, _ in sample_grids(run)] == [0, 2]
    assert [s for s, _ in checkpoints.list_checkpoints(run, "unet")] == [2, 3]
    unet = UNet2DConditionModel.from_pretrained(run / "ckpt" / "unet_3")
    assert unet.config.cross_attention_dim == 48 and unet.config.sample_size == 16
    meta = checkpoints.read_meta(run / "ckpt" / "unet_3")
    assert meta["step"] == 3 and meta["ema"] is True and meta["resolution"] == 32
    assert TrainConfig.load(run / "train_config.json") == cfg
    # a second start of the same command refuses instead of mixing runs; --resume latest reports it finished
    again = subprocess.run([sys.executable, "-m", "helpers.training", "--config", str(path)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "resume='latest'" in again.stderr


def test_default_sample_prompts_come_from_the_captions_without_a_test_json(tmp_path):
    """An imagefolder (no test.json) still gets fixed sample prompts: its distinct non-empty captions, spread."""
    from PIL import Image

    from helpers.profiles import resolve_profile
    from helpers.training.config import default_sample_prompts

    (tmp_path / "imgs").mkdir()
    lines = []
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
        lines.append(json.dumps({"file_name": f"imgs/{i}.png", "text": f"a red thing number {i}"}))
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    P = resolve_profile("demo", True, tmp_path, tmp_path / "out", verbose=False)
    assert default_sample_prompts(P, 3) == ["a red thing number 0", "a red thing number 2", "a red thing number 4"]
    assert TrainConfig.for_profile(P).sample_prompts == default_sample_prompts(P, 4)


# --------------------------------------------------------------------------------------------------- speed levers
def test_deferred_checks_train_exactly_like_checking_every_step(tmp_path, cache):
    # check_every_step=False (the CUDA default) reads loss and grad norm back only at log/sample/save steps: the
    # same steps, losses and weights as reading every step.
    kwargs = dict(max_steps=7, save_freq=4, log_every=3, grad_accum=2)
    every = train(config(tmp_path, "every", check_every_step=True, **kwargs), cache=cache)
    deferred = train(config(tmp_path, "deferred", check_every_step=False, **kwargs), cache=cache)
    assert deferred.losses == every.losses and len(deferred.losses) == 7
    assert_same(model_weights(every.state), model_weights(deferred.state))
    logged = read_metrics(deferred.run_dir)
    assert [r["step"] for r in logged] == [3, 6, 7]
    assert [r["grad_norm"] for r in logged] == [r["grad_norm"] for r in read_metrics(every.run_dir)]


def test_a_deferred_check_stops_at_the_next_check_and_saves_nothing_after_the_bad_step(tmp_path, cache):
    # checks at log steps (every 10) and before every save (every 3): the NaN of step 5 is found before the save
    # of step 6, which is not written
    cfg = config(tmp_path, "nan-deferred", max_steps=12, save_freq=3, log_every=10, check_every_step=False)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 5 .*Found at step 6.*steps 4\.\.6 were "
                                                 r"applied.*state_3") as err:
        train(cfg, cache=PoisonedCache(cache, bad_call=5))
    assert err.value.what == "loss"
    run = Path(cfg.run_dir)
    assert [s for s, _ in checkpoints.list_checkpoints(run, "state")] == [3]
    assert [s for s, _ in checkpoints.list_checkpoints(run, "unet")] == [3]
    assert read_metrics(run) == []


def test_channels_last_trains_resumes_exactly_and_saves_loadable_checkpoints(tmp_path, cache):
    from diffusers import UNet2DConditionModel

    kwargs = dict(max_steps=4, save_freq=2, channels_last=True)
    full = train(config(tmp_path, "cl-full", **kwargs), cache=cache)
    assert full.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    first = train(config(tmp_path, "cl-split", **kwargs), cache=cache, callback=stop_at(2))
    second = train(config(tmp_path, "cl-split", resume="latest", **kwargs), cache=cache)
    assert first.step == 2 and second.losses == full.losses[2:]
    assert_same(model_weights(full.state), model_weights(second.state))
    plain = train(config(tmp_path, "plain", max_steps=4, save_freq=2, channels_last=False), cache=cache)
    assert plain.unet.conv_in.weight.is_contiguous()
    # the same maths in another memory order: equal up to float rounding
    assert_same(model_weights(plain.state), model_weights(full.state), exact=False, atol=1e-4)
    unet = UNet2DConditionModel.from_pretrained(full.checkpoint)
    assert_same(unet.state_dict(), unet_weights(full.checkpoint))


def test_a_cache_on_the_device_draws_the_same_batches_and_needs_a_latent_cache(tmp_path, cache):
    moved = cache.to("cpu", torch.bfloat16)
    assert moved.mean.dtype == torch.bfloat16 and cache.mean.dtype == torch.float16  # a copy, the original kept
    assert moved.nbytes == cache.nbytes < cache.to("cpu", torch.float32).nbytes  # 2 bytes per value in both
    assert moved.device == torch.device("cpu") and moved.captions is cache.captions and moved.caption_ids.dtype == \
        torch.long
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = cache.batch(torch.arange(8), g1), cache.to("cpu").batch(torch.arange(8), g2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    on = train(config(tmp_path, "on", max_steps=3, save_freq=3, cache_on_device=True), cache=cache)
    off = train(config(tmp_path, "off", max_steps=3, save_freq=3, cache_on_device=False), cache=cache)
    assert on.losses == off.losses  # on a CPU the cache already is where the step runs
    with pytest.raises(TypeError, match="cache_on_device=True needs a helpers.frozen.cache.LatentCache"):
        train(config(tmp_path, "poisoned", max_steps=1, cache_on_device=True), cache=PoisonedCache(cache, 9))


def test_a_resume_refuses_a_data_generator_of_another_device(tmp_path, cache):
    from helpers.training.loop import _restore_data_generator

    gen = torch.Generator().manual_seed(0)
    cuda_like_state = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state: seed and offset
    with pytest.raises(RunFolderError, match=r"drawn on a GPU; this run draws them on cpu.*cache_on_device=True"):
        _restore_data_generator(gen, cuda_like_state, tmp_path / "state_2")
    state = torch.Generator().manual_seed(5).get_state()
    _restore_data_generator(gen, state, tmp_path / "state_2")
    assert torch.equal(gen.get_state(), state)


def test_compile_warms_up_without_touching_the_run(tmp_path, cache, monkeypatch):
    # torch.compile itself is exercised on CUDA (tests/test_cuda.py); here it is the identity, so the warm-up pass
    # must leave weights, optimizer, EMA and data order exactly as without it.
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiled.append(model) or model)
    events = []
    with_compile = train(config(tmp_path, "compiled", max_steps=3, save_freq=3, compile=True), cache=cache,
                         callback=events.append)
    without = train(config(tmp_path, "eager", max_steps=3, save_freq=3), cache=cache)
    assert len(compiled) == 1 and with_compile.compile_s is not None and without.compile_s is None
    assert events[0].kind == "start" and events[0].metrics["compile_s"] == with_compile.compile_s
    assert events[0].metrics["speed_levers"]["compile"] is True
    assert with_compile.losses == without.losses
    assert_same(model_weights(with_compile.state), model_weights(without.state))
    assert_same(load_file(str(with_compile.state / "optimizer.safetensors")),
                load_file(str(without.state / "optimizer.safetensors")))


def test_auto_levers_per_device_and_sdpa_attention_everywhere():
    from diffusers.models.attention_processor import AttnProcessor2_0

    from helpers.training import build_train_parts
    from helpers.training.config import resolve_speed_levers
    from helpers.unet import build_unet

    cpu = resolve_speed_levers(TrainConfig(), "cpu", cache_nbytes=10)
    assert (cpu.cache_on_device, cpu.channels_last, cpu.compile, cpu.check_every_step) == (False, False, False, True)
    forced = resolve_speed_levers(TrainConfig(channels_last=True, check_every_step=False, compile=True), "cpu")
    assert (forced.channels_last, forced.check_every_step, forced.compile) == (True, False, True)
    # diffusers' scaled_dot_product_attention processor (flash attention on a GPU) in every attention layer
    tiny = build_train_parts(TrainConfig(unet_preset="tiny"), (4, 8, 8), 32, "cpu").unet
    reference = build_unet("reference", cross_attention_dim=512, sample_size=32, device="meta")
    for unet in (tiny, reference):
        kinds = {type(p).__name__ for p in unet.attn_processors.values()}
        assert unet.attn_processors and all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values()), \
            kinds


def test_the_loop_uses_the_configs_timestep_sampling_and_loss_weighting(tmp_path, cache, monkeypatch):
    """train() draws its timesteps as config.timestep_sampling says (and weights as loss_weighting says)."""
    from helpers.training import losses

    seen = []
    real = losses.sample_timesteps

    def spy(*args, **kwargs):
        seen.append(kwargs.get("sampling"))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "sample_timesteps", spy)
    base = dict(max_steps=2, save_freq=2)
    uniform = train(config(tmp_path, "u", **base), cache=cache)
    ln = train(config(tmp_path, "ln", timestep_sampling="logit_normal", **base), cache=cache)
    plain = train(config(tmp_path, "plain", loss_weighting="none", **base), cache=cache)
    assert seen == ["uniform"] * 2 + ["logit_normal"] * 2 + ["uniform"] * 2
    assert uniform.losses != ln.losses and uniform.losses != plain.losses


# --------------------------------------------------------------------------------------------------- TensorBoard
def tensorboard_scalars(run_dir: Path, run_name: str, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir / "logs" / run_name), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_logs_the_curves_under_the_run_folder_and_a_resume_continues_them(tmp_path, cache):
    def crash_at_3(event: TrainEvent):
        if event.kind == "log" and event.step == 3:
            raise RuntimeError("power cut")
    kwargs = dict(max_steps=5, save_freq=2, report_to="tensorboard")
    with pytest.raises(RuntimeError, match="power cut"):
        train(config(tmp_path, "tb", **kwargs), cache=cache, callback=crash_at_3)
    run = tmp_path / "tb"
    assert sorted(p.name for p in (run / "ckpt").glob("state_*")) == ["state_2"]
    first = tensorboard_scalars(run, "tb", "train/loss")
    assert [s for s, _ in first] == [1, 2, 3]  # step 3 was logged before the crash, after the last state
    resumed = train(config(tmp_path, "tb", resume="latest", **kwargs), cache=cache)
    assert len(list((run / "logs" / "tb").glob("events.out.tfevents.*"))) == 2  # one file per session
    loss = tensorboard_scalars(run, "tb", "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5]  # the crashed session's step 3 is purged, not doubled
    metrics = {r["step"]: r for r in read_metrics(run)}
    for step, value in loss:
        assert value == pytest.approx(metrics[step]["loss"], rel=1e-6)
    assert [s for s, _ in tensorboard_scalars(run, "tb", "train/lr")] == [1, 2, 3, 4, 5]
    assert resumed.finished


def test_report_to_is_validated_and_a_missing_tensorboard_fails_at_once(tmp_path, cache, monkeypatch):
    with pytest.raises(ValueError, match="report_to"):
        config(tmp_path, "bad", report_to="wandb").validate()
    from helpers.training import tracking
    find_spec = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
        train(config(tmp_path, "missing", report_to="tensorboard"), cache=cache)
    assert not (tmp_path / "missing").exists()  # nothing was written before the refusal


def test_a_budget_is_measured_without_touching_the_run(tmp_path, cache):
    """measure_budget times real steps of the config on its own parts: epochs and minutes follow from them, a budget
    in minutes becomes steps, and the run trained afterwards is bit for bit the one trained without measuring."""
    from helpers.training.budget import Budget, measure_budget

    plain = train(config(tmp_path, "b"), cache)
    cfg = config(tmp_path, "measured", max_steps=40)
    budget = measure_budget(cfg, cache, "cpu", n_steps=2)
    assert budget.steps == 40 and budget.global_batch == 4 and budget.n_images == cache.n_images
    assert budget.epochs == pytest.approx(40 * 4 / cache.n_images) and budget.seconds_per_step > 0
    assert "40 steps x 4 images" in str(budget) and "epochs" in str(budget)
    fixed = Budget(steps=800, global_batch=16, n_images=640, seconds_per_step=0.25, timed_steps=3)
    assert fixed.minutes == pytest.approx(800 * 0.25 / 60) and fixed.steps_for(minutes=10) == 2400
    with pytest.raises(ValueError):
        fixed.steps_for(minutes=0)
    measured = train(config(tmp_path, "a"), cache)
    assert not (tmp_path / "measured").exists()  # measuring writes nothing
    assert_same(unet_weights(measured.checkpoint), unet_weights(plain.checkpoint))


def test_the_demo_budget_grows_with_the_data_and_never_below_800_steps():
    """DEMO_EPOCHS passes over the cached images (the outside-set study), 800 steps at least (the demo set), sample
    grids and checkpoints four times a run; an explicit max_steps and the smoke profile win."""
    from types import SimpleNamespace

    from helpers.training.config import DEMO_EPOCHS

    demo = SimpleNamespace(name="demo", smoke=False, data_dir=Path("data/demo"), resolution=64, text_encoder="t",
                           vae="v", vae_subfolder=None, unet_preset="demo", device="cpu", crop_to_content=False,
                           image_column="image", caption_column="text", run_dir=lambda name: Path("/tmp") / name)
    kw = dict(sample_prompts=["a red slime"])
    assert TrainConfig.for_profile(demo, **kw).max_steps == 800
    assert TrainConfig.for_profile(demo, n_images=608, **kw).max_steps == 800
    big = TrainConfig.for_profile(demo, n_images=2818, **kw)
    assert big.max_steps == math.ceil(DEMO_EPOCHS * 2818 / 16) and big.eval_freq == big.save_freq == big.max_steps // 4
    assert TrainConfig.for_profile(demo, n_images=2818, max_steps=100, **kw).max_steps == 100
    smoke = SimpleNamespace(**{**vars(demo), "smoke": True})
    assert TrainConfig.for_profile(smoke, n_images=2818, **kw).max_steps == 6
