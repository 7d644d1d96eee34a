"""helpers.checkpoints: exact resume (AdamW, EMA, LR schedule, RNG), safetensors-only UNet folders, atomic saves."""

from __future__ import annotations

import json
import math
import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from helpers import checkpoints as ck
from helpers.unet import build_unet

HIDDEN = 32
SIZE = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread (conftest)


def _unet(seed=0):
    return build_unet("tiny", cross_attention_dim=HIDDEN, sample_size=SIZE, seed=seed)


def _objects(unet, variant="default", ema=True):
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    kwargs = {"foreach": True} if variant == "foreach" else {"fused": True} if variant == "fused" else {}
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-2, **kwargs)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=20)
    ema_model = EMAModel(unet.parameters(), decay=0.9, use_ema_warmup=True, power=0.75) if ema else None
    return opt, sched, ema_model


def _train(unet, opt, sched, ema, steps, gen):
    """A few real steps; noise from the global RNG *and* a loop generator, so both must be restored."""
    unet.train()
    for _ in range(steps):
        x = torch.randn(2, 4, SIZE, SIZE)  # global RNG
        t = torch.randint(0, 1000, (2,), generator=gen)
        text = torch.randn(2, 77, HIDDEN, generator=gen)
        loss = (unet(x, t, encoder_hidden_states=text).sample - x).pow(2).mean()
        loss = loss + 1e-3 * float(np.random.rand()) + 1e-3 * random.random()  # numpy/python RNG in the loop too
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(unet.parameters())


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("variant", ["default", "foreach", "fused"])
def test_exact_resume_adamw_ema_lr_rng(tmp_path, variant):
    torch.manual_seed(0)
    unet = _unet()
    try:
        opt, sched, ema = _objects(unet, variant)
    except (RuntimeError, TypeError, ValueError) as err:  # pragma: no cover - fused AdamW missing on this build
        pytest.skip(f"AdamW {variant} unavailable: {err}")
    gen = torch.Generator().manual_seed(1)
    _train(unet, opt, sched, ema, 3, gen)
    path = ck.save_state(tmp_path, 3, model=unet, optimizer=opt, lr_scheduler=sched, ema=ema,
                         extra={"step": 3, "pos": (1, 2)}, generators={"data": gen})
    assert path == tmp_path / "ckpt" / "state_3"
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))

    _train(unet, opt, sched, ema, 3, gen)  # the original run goes on
    expected, expected_ema = _weights(unet), [p.clone() for p in ema.shadow_params]
    expected_lr = sched.get_last_lr()

    torch.manual_seed(123)  # fresh objects with other weights and a moved RNG
    unet2 = _unet(seed=7)
    opt2, sched2, ema2 = _objects(unet2, variant)
    gen2 = torch.Generator().manual_seed(999)
    extra = ck.load_state(path, model=unet2, optimizer=opt2, lr_scheduler=sched2, ema=ema2,
                          generators={"data": gen2})
    assert extra == {"step": 3, "pos": (1, 2)}
    assert ema2.optimization_step == 3 and sched2.last_epoch == 3
    _train(unet2, opt2, sched2, ema2, 3, gen2)

    got = _weights(unet2)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert all(torch.equal(a, b) for a, b in zip(ema2.shadow_params, expected_ema))
    assert sched2.get_last_lr() == expected_lr
    for p, q in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert torch.equal(p["step"], q["step"]) and torch.equal(p["exp_avg_sq"], q["exp_avg_sq"])


def test_optimizer_files_layout(tmp_path):
    unet = _unet()
    opt, sched, _ = _objects(unet, ema=False)
    _train(unet, opt, sched, None, 1, torch.Generator().manual_seed(0))
    path = ck.save_state(tmp_path, 1, model=unet, optimizer=opt, lr_scheduler=sched)
    from safetensors.torch import load_file

    keys = load_file(path / "optimizer.safetensors").keys()
    assert {"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq"} <= set(keys)
    meta = json.loads((path / "optimizer.json").read_text())
    assert meta["param_groups"][0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
    marker = json.loads((path / ck.MARKER_NAME).read_text())
    assert marker["step"] == 1 and "model.safetensors" in marker["files"]
    assert json.loads((path / "lr_scheduler.json").read_text())["last_epoch"] == 1


def test_ema_round_trip(tmp_path):
    from diffusers.training_utils import EMAModel

    model = torch.nn.Linear(3, 2)
    ema = EMAModel(model.parameters(), decay=0.999, min_decay=0.1, update_after_step=2, inv_gamma=2.0)
    for _ in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.step(model.parameters())
    path = ck.save_state(tmp_path, 5, model=model, ema=ema, rng=False)
    model2 = torch.nn.Linear(3, 2)
    ema2 = EMAModel(model2.parameters(), decay=0.5)
    ck.load_state(path, model=model2, ema=ema2)
    for key in ("decay", "min_decay", "optimization_step", "update_after_step", "inv_gamma", "power"):
        assert getattr(ema2, key) == getattr(ema, key)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow_params, ema2.shadow_params))
    with ck.ema_weights(model2, ema2):
        assert torch.equal(model2.weight, ema.shadow_params[0])
    assert torch.equal(model2.weight, model.weight)  # the live weights came back


def test_lr_scheduler_round_trip(tmp_path):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    def make():
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, opt, get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=10)

    model, opt, sched = make()
    for _ in range(4):
        opt.step()
        sched.step()
    path = ck.save_state(tmp_path, 4, model=model, optimizer=opt, lr_scheduler=sched, rng=None)
    model2, opt2, sched2 = make()
    ck.load_state(path, model=model2, optimizer=opt2, lr_scheduler=sched2)
    assert sched2.get_last_lr() == sched.get_last_lr() and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    lrs, lrs2 = [], []
    for s, o, out in ((sched, opt, lrs), (sched2, opt2, lrs2)):
        for _ in range(5):
            o.step()
            s.step()
            out.append(s.get_last_lr()[0])
    assert lrs == lrs2


def test_rng_restored(tmp_path):
    model = torch.nn.Linear(2, 2)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    path = ck.save_state(tmp_path, 0, model=model)
    want = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    ck.load_state(path, model=model)
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(want[0], got[0]) and want[1:] == got[1:]


def test_no_pickle_on_load(tmp_path, monkeypatch):
    unet = _unet()
    opt, sched, ema = _objects(unet)
    path = ck.save_state(tmp_path, 1, model=unet, optimizer=opt, lr_scheduler=sched, ema=ema,
                         extra={"config": {"lr": 1e-3, "sizes": (1, 2), 3: math.inf, "t": torch.arange(3)}})

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    with pytest.warns(UserWarning, match="not restored"):  # lr_scheduler and ema saved but not passed
        extra = ck.load_state(path, model=_unet(1), optimizer=_objects(_unet(1))[0])
    assert extra["config"]["sizes"] == (1, 2) and extra["config"][3] == math.inf
    assert torch.equal(extra["config"]["t"], torch.arange(3))
    with pytest.raises(ck.CheckpointError):
        ck.save_state(tmp_path, 2, model=unet, extra={"bad": object()})
    assert ck.list_checkpoints(tmp_path, "state") == [(1, path)]


def test_save_unet_loads_and_refuses_overwrite(tmp_path):
    from diffusers import UNet2DConditionModel

    from helpers.schedule import default_scheduler_config, load_scheduler_config

    unet = _unet()
    meta = {"ema": False, "profile": "demo", "run_name": "main"}
    cfg = default_scheduler_config()
    path = ck.save_unet(tmp_path, 10, unet, scheduler_config=cfg, meta=meta)
    assert path == tmp_path / "ckpt" / "unet_10"
    files = sorted(p.name for p in path.iterdir())
    assert "diffusion_pytorch_model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    loaded = UNet2DConditionModel.from_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), unet.state_dict().values()))
    assert load_scheduler_config(path)["beta_schedule"] == cfg["beta_schedule"]
    assert ck.read_meta(path) == {**meta, "step": 10}

    with pytest.raises(FileExistsError):
        ck.save_unet(tmp_path, 10, unet, scheduler_config=cfg, meta=meta)
    with torch.no_grad():
        next(unet.parameters()).add_(1.0)
    ck.save_unet(tmp_path, 10, unet, scheduler_config=None, meta=meta, overwrite=True)
    reloaded = UNet2DConditionModel.from_pretrained(path)
    assert torch.equal(next(reloaded.parameters()), next(unet.parameters()))
    assert ck.list_checkpoints(tmp_path, "unet") == [(10, path)]
    assert not [p for p in (tmp_path / "ckpt").iterdir() if p.name.startswith(".")]
    ck.save_state(tmp_path, 4, model=unet)
    with pytest.raises(FileExistsError):
        ck.save_state(tmp_path, 4, model=unet)


def test_save_unet_with_ema(tmp_path):
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    unet = _unet()
    ema = EMAModel(unet.parameters(), decay=0.9)
    live = _weights(unet)
    with torch.no_grad():
        for p in ema.shadow_params:
            p.mul_(0.5)
    path = ck.save_unet(tmp_path, 1, unet, meta={"ema": False}, ema=ema)
    assert ck.read_meta(path)["ema"] is True
    loaded = UNet2DConditionModel.from_pretrained(path)
    assert torch.equal(next(loaded.parameters()), ema.shadow_params[0])
    assert all(torch.equal(v, live[k]) for k, v in unet.state_dict().items())


def test_interrupted_saves_are_never_picked(tmp_path, monkeypatch):
    unet = _unet()
    ck.save_state(tmp_path, 1, model=unet)
    ck.save_unet(tmp_path, 1, unet, meta={})
    real = ck._write_json

    def crash_at_marker(path, data):
        if path.name == ck.MARKER_NAME:
            raise KeyboardInterrupt  # e.g. Ctrl-C right before the marker
        real(path, data)

    monkeypatch.setattr(ck, "_write_json", crash_at_marker)
    with pytest.raises(KeyboardInterrupt):
        ck.save_state(tmp_path, 2, model=unet)
    # a hard kill: the clean-up never runs, a temp folder stays behind
    monkeypatch.setattr(shutil, "rmtree", lambda *args, **kwargs: None)
    with pytest.raises(KeyboardInterrupt):
        ck.save_state(tmp_path, 3, model=unet)

    def crash_in_weights(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(unet, "save_pretrained", crash_in_weights)
    with pytest.raises(OSError):
        ck.save_unet(tmp_path, 3, unet, meta={})
    monkeypatch.undo()

    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [1]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet")] == [1]
    assert ck.latest_state(tmp_path) == tmp_path / "ckpt" / "state_1"
    left = ck.clean_incomplete(tmp_path)
    assert len(left) == 2 and all(p.name.startswith(".tmp-") for p in left)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state_1", "unet_1"]
    # a state folder without its marker (e.g. copied half) is never used
    (tmp_path / "ckpt" / "state_9").mkdir()
    assert ck.latest_state(tmp_path).name == "state_1"
    with pytest.raises(ck.CheckpointError):
        ck.load_state(tmp_path / "ckpt" / "state_9", model=unet)


def test_prune_keeps_newest(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (5, 10, 15, 20):
        ck.save_state(tmp_path, step, model=model, rng=False)
    ck.save_unet(tmp_path, 20, _unet(), meta={})
    (tmp_path / "ckpt" / "unet_3").mkdir()  # incomplete: not counted, not touched
    removed = ck.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["state_10", "state_5"]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [15, 20]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet")] == [20]
    ck.prune(tmp_path, keep_last=1)
    assert ck.latest_state(tmp_path).name == "state_20"
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [20]
    with pytest.raises(ValueError):
        ck.prune(tmp_path, keep_last=0)
    assert ck.list_checkpoints(tmp_path / "nothing", "state") == [] and ck.latest_state(tmp_path / "nothing") is None


def test_load_state_mismatches(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = ck.save_state(tmp_path, 1, model=model)
    with pytest.raises(ck.CheckpointError):
        ck.load_state(path, model=torch.nn.Linear(3, 2))
    with pytest.raises(ck.CheckpointError):
        ck.load_state(path, model=model, optimizer=torch.optim.AdamW(model.parameters()))
