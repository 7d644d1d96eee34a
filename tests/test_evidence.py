"""helpers.submission.evidence and the settings pick: a candidate replaces the incumbent only beyond the noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.submission import MetricResult, Setting
from helpers.submission.evidence import paired_bootstrap, per_prompt
from helpers.submission.metrics import SettingsPick


def judged(hits: np.ndarray, name: str = "species adherence") -> list[MetricResult]:
    """A fake judge's result: 1/0 per image, as the demo judge reports it."""
    per_image = {f"test_{i}.png": float(h) for i, h in enumerate(hits)}
    return [MetricResult(name=name, value=float(np.mean(hits)), model="fake judge", n_images=len(hits),
                         per_image=per_image)]


def pick(results: list[list[MetricResult]], metric: str = "species adherence") -> SettingsPick:
    settings = [Setting(Path("ckpt/unet_800"), g) for g in (3.0, 6.0)[:len(results)]]
    return SettingsPick(metric=metric, settings=settings, results=results, folders=[Path("a"), Path("b")])


def test_a_lead_of_two_images_in_32_keeps_the_incumbent():
    rng = np.random.default_rng(0)
    base = (rng.random(32) < 0.6).astype(float)
    other = rng.permutation(base)  # the same rate, other images: noise only
    flip = np.flatnonzero(other == 0)[:2]
    other[flip] = 1.0  # two more hits: the candidate leads by 2/32
    p = pick([judged(base), judged(other)])
    assert p.value(1) - p.value(0) == pytest.approx(2 / 32)
    assert p.leader_index == 1 and p.best_index == 0 and p.best.guidance_scale == 3.0
    diff = p.difference(1)
    assert diff.low < 0 < diff.high and diff.n == 32
    assert "keeping the incumbent" in p.table() and "one or two images" in p.table()


def test_a_real_gain_replaces_the_incumbent():
    rng = np.random.default_rng(1)
    p = pick([judged((rng.random(32) < 0.3).astype(float)), judged((rng.random(32) < 0.95).astype(float))])
    assert p.best_index == 1 and p.difference(1).beyond_noise()
    assert "beyond the noise of 32 prompts" in p.table()
    assert p.as_dict()["candidates"][1]["vs_incumbent"]["low"] > 0


def test_a_metric_without_per_image_scores_has_no_interval():
    fid = [[MetricResult(name="FID", value=v, model="inception", n_images=32, higher_is_better=False)]
           for v in (80.0, 70.0)]
    p = pick(fid, metric="FID")
    assert p.difference(1) is None and p.best_index == 1  # lower FID wins by value
    assert "no interval" in p.table()


def test_paired_bootstrap_counts_prompts_not_images():
    a = {"k1__0.png": 1.0, "k1__1.png": 0.0, "k2__0.png": 1.0, "k2__1.png": 1.0, "k3.png": 0.0}
    assert per_prompt(a) == {"k1": 0.5, "k2": 1.0, "k3": 0.0}
    b = {"k1.png": 0.5, "k2.png": 0.0, "k3.png": 0.0}
    diff = paired_bootstrap(a, b, n_boot=500)
    assert diff.n == 3 and diff.mean == pytest.approx(1 / 3) and diff.low <= diff.mean <= diff.high
    assert paired_bootstrap({"x.png": 1.0}, {"x.png": 0.0}) is None  # one prompt: nothing to resample


def test_a_tie_keeps_the_incumbent_and_the_table_marks_it():
    same = judged(np.ones(8))
    p = SettingsPick(metric="species adherence", settings=[Setting(Path("u"), g) for g in (1.0, 3.0)],
                     results=[same, same], folders=[Path("a"), Path("b")], incumbent=1)
    assert p.leader_index == 1 == p.best_index
    assert any(line.startswith("*=") and "g3" in line for line in p.table().splitlines())
