"""helpers.checkpoints: exact resume (AdamW, EMA, LR schedule, RNG), safetensors-only UNet folders, atomic saves."""

from __future__ import annotations

import errno
import json
import math
import pickle
import random
import shutil
from pathlib import Path

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
    real = ck.store.write_json

    def crash_at_marker(path, data):
        if path.name == ck.MARKER_NAME:
            raise KeyboardInterrupt  # e.g. Ctrl-C right before the marker
        real(path, data)

    monkeypatch.setattr(ck.store, "write_json", crash_at_marker)
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
    removed = ck.prune(tmp_path, keep_states=2, keep_unets=2)
    assert sorted(p.name for p in removed) == ["state_10", "state_5"]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [15, 20]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet")] == [20]
    ck.prune(tmp_path, keep_states=1, keep_unets=1)
    assert ck.latest_state(tmp_path).name == "state_20"
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [20]
    with pytest.raises(ValueError):
        ck.prune(tmp_path, keep_states=0)
    assert ck.list_checkpoints(tmp_path / "nothing", "state") == [] and ck.latest_state(tmp_path / "nothing") is None


def test_load_state_mismatches(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = ck.save_state(tmp_path, 1, model=model)
    with pytest.raises(ck.CheckpointError):
        ck.load_state(path, model=torch.nn.Linear(3, 2))
    with pytest.raises(ck.CheckpointError):
        ck.load_state(path, model=model, optimizer=torch.optim.AdamW(model.parameters()))


# --------------------------------------------------------------------------------------------------- integrity (#18)
def _flip(path, n=64):
    """Flip ``n`` bytes in the middle of ``path`` (same size), then forget this process's verdicts, as the new
    process of a resume or of a notebook would."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))
    ck.integrity.forget()


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    ck.integrity.forget()


def _two_states(tmp_path):
    """state_1 and state_2 of a tiny UNet trained with AdamW + EMA; returns the weights saved at step 1."""
    torch.manual_seed(0)
    unet = _unet()
    opt, sched, ema = _objects(unet)
    gen = torch.Generator().manual_seed(1)
    _train(unet, opt, sched, ema, 1, gen)
    ck.save_state(tmp_path, 1, model=unet, optimizer=opt, lr_scheduler=sched, ema=ema, extra={"step": 1})
    ck.save_unet(tmp_path, 1, unet, meta={}, ema=ema)
    at_1 = _weights(unet)
    _train(unet, opt, sched, ema, 1, gen)
    ck.save_state(tmp_path, 2, model=unet, optimizer=opt, lr_scheduler=sched, ema=ema, extra={"step": 2})
    ck.save_unet(tmp_path, 2, unet, meta={}, ema=ema)
    return at_1


def _load(path, **kw):
    unet = _unet(seed=5)
    opt, sched, ema = _objects(unet)
    return unet, ck.load_state(path, model=unet, optimizer=opt, lr_scheduler=sched, ema=ema, **kw)


def test_markers_record_a_digest_of_every_file(tmp_path):
    from diffusers import UNet2DConditionModel

    _two_states(tmp_path)
    for kind in ("state", "unet"):
        path = tmp_path / "ckpt" / f"{kind}_2"
        marker = json.loads((path / ck.MARKER_NAME).read_text())
        files = sorted(p.name for p in path.iterdir() if p.name != ck.MARKER_NAME)
        assert sorted(marker["digests"]) == files and marker["hash"] == "sha256"
        for name, d in marker["digests"].items():
            assert d["bytes"] == (path / name).stat().st_size and d["sha256"] == ck.file_digest(path / name)
        ck.integrity.forget()
        status = ck.verify_checkpoint(path)
        assert status.ok and not status.note and not status.problem
    UNet2DConditionModel.from_pretrained(tmp_path / "ckpt" / "unet_2")  # the marker does not disturb diffusers


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_state_resume_falls_back_naming_the_file(tmp_path, damage, capsys):
    at_1 = _two_states(tmp_path)
    bad = tmp_path / "ckpt" / "state_2" / "model.safetensors"
    (_flip if damage == "flip" else _truncate)(bad)
    with pytest.raises(ck.CheckpointDamagedError, match=r"state_2/model\.safetensors") as err:
        _load(tmp_path / "ckpt" / "state_2")
    assert ("differs from the sha256 digest" if damage == "flip" else "is truncated") in str(err.value)
    assert isinstance(err.value, ck.CheckpointError)
    path, skipped = ck.latest_intact_state(tmp_path)
    assert path.name == "state_1" and [p.name for p, _ in skipped] == ["state_2"]
    assert ck.resume_state(tmp_path) == tmp_path / "ckpt" / "state_1"
    out = capsys.readouterr().out
    assert "state_2/model.safetensors" in out and "state_1" in out and "(1 steps)" in out
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [1]  # state_2 set aside
    assert (tmp_path / "ckpt" / "damaged-state_2").is_dir()
    unet, extra = _load(path)
    assert extra == {"step": 1} and all(torch.equal(v, at_1[k]) for k, v in unet.state_dict().items())


def test_truncated_file_without_verification_names_it(tmp_path):
    _two_states(tmp_path)
    bad = tmp_path / "ckpt" / "state_2" / "optimizer.safetensors"
    _truncate(bad, 0.3)
    assert "optimizer.safetensors is truncated" in ck.verify_checkpoint(bad.parent).problem
    with pytest.raises(ck.CheckpointDamagedError, match=r"state_2/optimizer\.safetensors cannot be read"):
        _load(bad.parent, verify=False)  # safetensors' own error becomes a message naming the file


def test_no_intact_state_stops_with_what_to_do(tmp_path):
    _two_states(tmp_path)
    _flip(tmp_path / "ckpt" / "state_1" / "ema.safetensors")
    _truncate(tmp_path / "ckpt" / "state_2" / "model.safetensors")
    with pytest.raises(ck.CheckpointDamagedError, match="No intact training state") as err:
        ck.resume_state(tmp_path)
    assert "state_1/ema.safetensors" in str(err.value) and "state_2/model.safetensors" in str(err.value)
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [1, 2]  # nothing moved


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_unet_is_refused_and_listed(tmp_path, damage, capsys):
    _two_states(tmp_path)
    bad = tmp_path / "ckpt" / "unet_2" / "diffusion_pytorch_model.safetensors"
    (_flip if damage == "flip" else _truncate)(bad)
    with pytest.raises(ck.CheckpointDamagedError, match=r"unet_2/diffusion_pytorch_model\.safetensors"):
        ck.check_unet_checkpoint(bad.parent)
    with pytest.raises(ck.CheckpointDamagedError, match=r"unet_2/diffusion_pytorch_model\.safetensors"):
        ck.require_checkpoint(tmp_path, "ckpt/unet_2")
    assert ck.require_checkpoint(tmp_path) == tmp_path / "ckpt" / "unet_1"  # "latest" never picks a damaged one
    assert "unet_2/diffusion_pytorch_model.safetensors" in capsys.readouterr().out
    statuses = {p.name: st for _, p, st in ck.checkpoint_statuses(tmp_path)}
    assert statuses["unet_1"].ok and not statuses["unet_2"].ok
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet", verify=True)] == [1]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet")] == [1, 2]


def test_checkpoints_without_digests_still_load(tmp_path, capsys):
    from diffusers import UNet2DConditionModel

    at_1 = _two_states(tmp_path)
    state, unet_dir = tmp_path / "ckpt" / "state_1", tmp_path / "ckpt" / "unet_1"
    marker = json.loads((state / ck.MARKER_NAME).read_text())
    for key in ("digests", "hash", "kind"):
        marker.pop(key)
    (state / ck.MARKER_NAME).write_text(json.dumps({**marker, "format": "helpers.checkpoints/1"}))
    (unet_dir / ck.MARKER_NAME).unlink()  # UNet folders had no marker
    ck.integrity.forget()
    unet, extra = _load(state)
    assert extra == {"step": 1} and all(torch.equal(v, at_1[k]) for k, v in unet.state_dict().items())
    assert ck.is_complete(unet_dir) and ck.check_unet_checkpoint(unet_dir).ok
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all("written before checkpoints recorded digests" in line for line in out)
    UNet2DConditionModel.from_pretrained(unet_dir)
    _truncate(state / "model.safetensors")  # without digests, the headers still catch a truncated file
    assert not ck.verify_checkpoint(state).ok


def _enospc_part_way():
    def write(path, tensors):
        path.write_bytes(b"\0" * 1000)  # part of the file made it to the disk
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return write


def test_enospc_during_state_save(tmp_path, monkeypatch):
    model = torch.nn.Linear(4, 4)
    first = ck.save_state(tmp_path, 1, model=model)
    monkeypatch.setattr(ck.store, "save_tensors", _enospc_part_way())
    with pytest.raises(ck.CheckpointWriteError) as err:
        ck.save_state(tmp_path, 2, model=model)
    monkeypatch.undo()
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert "state_2" in msg and "the disk is full" in msg and "Nothing partial was left" in msg
    assert f"resume from {first}" in msg and "keep_states" in msg
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state_1"]  # no partial folder
    assert ck.resume_state(tmp_path) == first
    ck.load_state(first, model=model)


def test_disk_errors_during_unet_save(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    unet = _unet()
    ck.save_state(tmp_path, 1, model=torch.nn.Linear(2, 2))

    def full(folder, **kwargs):
        (Path(folder) / "config.json").write_text("{}")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(unet, "save_pretrained", full)
    with pytest.raises(ck.CheckpointWriteError, match=r"unet_2 failed: the disk is full") as err:
        ck.save_unet(tmp_path, 2, unet, meta={}, resume_hint="Resume from state_1.")
    assert err.value.errno == errno.ENOSPC and str(err.value).endswith("Resume from state_1.")

    def io_error(folder, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(unet, "save_pretrained", io_error)
    with pytest.raises(ck.CheckpointWriteError, match="Input/output error"):
        ck.save_unet(tmp_path, 2, unet, meta={})
    monkeypatch.setattr(unet, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(PermissionError("no")))
    with pytest.raises(PermissionError):  # not a disk error: unchanged
        ck.save_unet(tmp_path, 2, unet, meta={})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["state_1"]


def test_free_space_checked_before_a_save(tmp_path, monkeypatch):
    unet = _unet()
    opt, sched, ema = _objects(unet)
    real = shutil.disk_usage
    monkeypatch.setattr(ck.integrity.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    with pytest.raises(ck.InsufficientSpaceError) as err:
        ck.save_state(tmp_path, 1, model=unet, optimizer=opt, ema=ema)
    msg = str(err.value)
    weights = sum(v.numel() * v.element_size() for v in unet.state_dict().values())
    needed = float(msg.split("needs about ")[1].split(" MB")[0]) * 1e6
    assert needed >= 3 * weights  # model + two AdamW moments + EMA: about 4 x the weights
    assert "1.0 MB free" in msg and str(tmp_path) in msg and "keep_states" in msg and "run_dir" in msg
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, ck.CheckpointWriteError)
    with pytest.raises(ck.InsufficientSpaceError, match="unet_1"):
        ck.save_unet(tmp_path, 1, unet, meta={})
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").iterdir())


def test_prune_keeps_two_states_and_every_unet_by_default(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (1, 2, 3, 4):
        ck.save_state(tmp_path, step, model=model, rng=False)
        ck.save_unet(tmp_path, step, _unet(), meta={})
        ck.prune(tmp_path)  # the loop: after the new state is complete
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "state")] == [3, 4]
    assert [s for s, _ in ck.list_checkpoints(tmp_path, "unet")] == [1, 2, 3, 4]
    ck.save_state(tmp_path, 5, model=model, rng=False)
    _flip(tmp_path / "ckpt" / "state_4" / "model.safetensors", 4)
    _flip(tmp_path / "ckpt" / "state_5" / "model.safetensors", 4)
    removed = ck.prune(tmp_path, keep_states=2, keep_unets=3)
    assert sorted(p.name for p in removed) == ["unet_1"]  # state_3: the newest intact one, what a resume needs
    assert ck.latest_intact_state(tmp_path)[0].name == "state_3"
    ck.save_state(tmp_path, 6, model=model, rng=False)
    assert sorted(p.name for p in ck.prune(tmp_path, keep_states=1)) == ["state_3", "state_4", "state_5"]
    with pytest.raises(ValueError):
        ck.prune(tmp_path, keep_states=0)
