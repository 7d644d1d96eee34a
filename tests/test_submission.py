"""helpers.submission: export (names, sizes, seeds, never mixing), verify, zip, contact sheet; bad test.json."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
import torch
from torch import nn

from helpers.data import DataError, TestPrompt, read_test_prompts
from helpers.submission import (contact_sheet, export_submission, regenerate_one, seed_for, verify_submission,
                                zip_submission)


class SeedPainter:
    """A test double for helpers.generation.TextToImage: draws a deterministic image from each seed (and the prompt)."""

    def __init__(self, size: int = 16):
        self.size = size
        self.calls = []

    def generate(self, prompts, seeds, *, guidance_scale=7.5, steps=50, scheduler="ddim", batch_size=8,
                 progress=True):
        self.calls.append(dict(prompts=list(prompts), seeds=list(seeds), guidance_scale=guidance_scale, steps=steps,
                               scheduler=scheduler, batch_size=batch_size))
        out = []
        for p, s in zip(prompts, seeds):
            rng = np.random.default_rng([s, len(p), int(guidance_scale * 10)])
            out.append(Image.fromarray(rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)))
        return out


def write_test_json(path: Path, n: int = 5) -> Path:
    data = {f"mon{i}_WALK": {"text_prompt": f"a monster {i} walking", "image_name": f"img_{i}.png"}
            for i in range(n)}
    path.write_text(json.dumps(data))
    return path


def test_export_writes_one_png_per_prompt_seeded_by_key(tmp_path):
    test_json = write_test_json(tmp_path / "test.json")
    tti = SeedPainter(16)
    out = export_submission(tti, test_json, tmp_path / "submission", size=16, guidance_scale=3.0, steps=15,
                            scheduler="dpm++", seed=0, batch_size=4, progress=False)
    prompts = read_test_prompts(test_json)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.image_name for p in prompts)
    assert tti.calls[0]["seeds"] == [seed_for(p.key, 0) for p in prompts]
    assert tti.calls[0]["scheduler"] == "dpm++" and tti.calls[0]["steps"] == 15 and tti.calls[0]["batch_size"] == 4
    report = verify_submission(out, test_json, 16)
    assert report.ok and report.n_found == 5, report.summary()
    manifest = json.loads((tmp_path / "submission.json").read_text())
    assert manifest["images"]["img_3.png"]["seed"] == seed_for("mon3_WALK", 0) and manifest["guidance_scale"] == 3.0
    # one image regenerated alone equals the exported one
    one = regenerate_one(tti, prompts[3], seed=0, guidance_scale=3.0, steps=15, scheduler="dpm++")
    with Image.open(out / "img_3.png") as im:
        assert np.array_equal(np.asarray(im), np.asarray(one))
    # re-running with overwrite regenerates identical files
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    export_submission(tti, prompts, out, size=16, guidance_scale=3.0, steps=15, scheduler="dpm++", overwrite=True,
                      progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # the seed depends on the key and the base seed, not the position
    assert seed_for("mon3_WALK", 0) == seed_for("mon3_WALK", 0) != seed_for("mon3_WALK", 1)
    reordered = list(reversed(prompts))
    tti2 = SeedPainter(16)
    export_submission(tti2, reordered, tmp_path / "sub2", size=16, progress=False)
    assert tti2.calls[0]["seeds"] == [seed_for(p.key, 0) for p in reordered]


def test_export_never_mixes_with_an_existing_submission(tmp_path):
    test_json = write_test_json(tmp_path / "test.json", 3)
    out = tmp_path / "submission"
    out.mkdir()
    (out / "old_image.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_submission(SeedPainter(), test_json, out, size=16, progress=False)
    assert [p.name for p in out.iterdir()] == ["old_image.png"]  # untouched
    export_submission(SeedPainter(), test_json, out, size=16, overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["img_0.png", "img_1.png", "img_2.png"]  # old one gone
    # overwrite only replaces a folder of images
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_submission(SeedPainter(), test_json, out, size=16, overwrite=True, progress=False)
    # an empty existing folder is fine; no temporary folders are left behind
    (tmp_path / "empty").mkdir()
    export_submission(SeedPainter(), test_json, tmp_path / "empty", size=16, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_generation_leaves_no_partial_submission(tmp_path):
    class Broken(SeedPainter):
        def generate(self, *a, **k):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        export_submission(Broken(), write_test_json(tmp_path / "t.json"), tmp_path / "sub", size=16, progress=False)
    assert not (tmp_path / "sub").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_images_of_another_size_are_resized_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="resized"):
        out = export_submission(SeedPainter(8), write_test_json(tmp_path / "t.json", 2), tmp_path / "s", size=16,
                                progress=False)
    assert verify_submission(out, tmp_path / "t.json", 16).ok


@pytest.mark.parametrize("content, match", [
    ("{not json", "t.json"),
    ("{}", "no prompts"),
    ('{"a": {"image_name": "a.png"}}', "text_prompt"),
    ('{"a": {"text_prompt": "x"}}', "image_name"),
    ('{"a": {"text_prompt": "x", "image_name": "same.png"}, "b": {"text_prompt": "y", "image_name": "same.png"}}',
     "same.png"),
])
def test_bad_test_json_is_rejected_through_the_export(tmp_path, content, match):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(DataError, match=match):
        export_submission(SeedPainter(), tmp_path / "t.json", tmp_path / "s", size=16, progress=False)
    assert not (tmp_path / "s").exists()


def test_bad_prompt_lists_are_rejected(tmp_path):
    with pytest.raises(DataError, match="no prompts"):
        export_submission(SeedPainter(), [], tmp_path / "s", size=16)
    dup = [TestPrompt("a", "x", "n.png"), TestPrompt("b", "y", "n.png")]
    with pytest.raises(DataError, match="n.png"):
        export_submission(SeedPainter(), dup, tmp_path / "s", size=16)
    with pytest.raises(DataError, match="plain file name"):
        export_submission(SeedPainter(), [TestPrompt("a", "x", "../n.png")], tmp_path / "s", size=16)


def test_verify_names_every_bad_file(tmp_path):
    test_json = write_test_json(tmp_path / "test.json", 4)
    out = export_submission(SeedPainter(), test_json, tmp_path / "sub", size=16, progress=False)
    (out / "img_0.png").unlink()
    Image.new("RGB", (8, 8)).save(out / "img_1.png")
    Image.new("RGBA", (16, 16)).save(out / "img_2.png")
    (out / "img_3.png").write_bytes(b"not a png")
    (out / "stray.png").write_bytes(b"")
    report = verify_submission(out, test_json, 16)
    assert not report.ok and report.missing == ["img_0.png"] and report.extra == ["stray.png"]
    text = report.summary()
    for needle in ("img_0.png", "img_1.png: size 8x8", "img_2.png: mode RGBA", "img_3.png: unreadable", "stray.png"):
        assert needle in text
    with pytest.raises(DataError, match="img_1.png"):
        report.raise_if_bad()


def test_zip_and_contact_sheet(tmp_path):
    test_json = write_test_json(tmp_path / "test.json", 5)
    out = export_submission(SeedPainter(), test_json, tmp_path / "submission", size=16, progress=False)
    z = zip_submission(out)
    assert z == tmp_path / "submission.zip"
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == [f"img_{i}.png" for i in range(5)]
        assert zf.read("img_2.png") == (out / "img_2.png").read_bytes()
    first = z.read_bytes()
    assert zip_submission(out).read_bytes() == first  # deterministic
    sheet = contact_sheet(out, test_json, n=3, ncols=3)
    assert isinstance(sheet, Image.Image) and sheet.width >= 3 * 16
    with pytest.raises(FileNotFoundError):
        zip_submission(tmp_path / "nothing")


def test_sweep_generates_and_scores_each_value(tmp_path, monkeypatch):
    """metrics.sweep over guidance scales with the test double and a tiny pluggable extractor."""
    from types import SimpleNamespace

    from helpers.submission import frechet, metrics

    prompts = read_test_prompts(write_test_json(tmp_path / "test.json", 4))
    refdir = tmp_path / "ref"
    refdir.mkdir()
    refmap = {}
    for i, p in enumerate(prompts):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(refdir / f"r{i}.png")
        refmap[p.image_name] = [refdir / f"r{i}.png"]
    profile = SimpleNamespace(name="demo", resolution=16, background=(255, 255, 255), device="cpu", vae="none",
                              vae_subfolder=None)

    class Mean(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    monkeypatch.setattr(frechet, "inception_problem", lambda: "offline")
    res = metrics.sweep([1.0, 3.0], prompts, refmap, profile, out_dir=tmp_path / "sweep", tti=SeedPainter(16),
                        steps=2, score_kwargs=dict(fid_extractor=Mean(), compute_clip=False, compute_vae_fd=False))
    assert [f.name for f in res.folders] == ["guidance_scale_1.0", "guidance_scale_3.0"]
    assert all(verify_submission(f, prompts, 16).ok for f in res.folders)
    assert all(r[0].value is not None for r in res.results) and res.figure is not None
    assert res.best(res.results[0][0].name) in (1.0, 3.0)


def test_prompts_from_jsonl_and_text_files(tmp_path):
    """Any prompts file: test.json, JSONL ({"text"} or {"text_prompt", "image_name"}) or one prompt a line; image
    names are made up where there are none, and the export uses them."""
    from helpers.submission import read_prompts

    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"text": "a red slime"}\n\n{"text_prompt": "a blue bat", "image_name": "bat.png"}\n')
    assert [(p.key, p.text_prompt, p.image_name) for p in read_prompts(jsonl)] == [
        ("prompt_0000", "a red slime", "prompt_0000.png"), ("bat", "a blue bat", "bat.png")]
    text = tmp_path / "prompts.txt"
    text.write_text("a red slime\n\n  a green golem  \n")
    assert [(p.key, p.text_prompt, p.image_name) for p in read_prompts(text)] == [
        ("prompt_0000", "a red slime", "prompt_0000.png"), ("prompt_0001", "a green golem", "prompt_0001.png")]
    test_json = write_test_json(tmp_path / "test.json", n=2)
    assert read_prompts(test_json) == read_test_prompts(test_json)
    out = export_submission(SeedPainter(8), text, tmp_path / "sub", size=8, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["prompt_0000.png", "prompt_0001.png"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "ok"}\n{"text": "a", \n', r"prompts.jsonl, line 2, column \d+: malformed JSON"),
    ('{"text": "ok"}\n["a list"]\n', r"prompts.jsonl, line 2: expected a JSON object, got list"),
    ('{"caption": "wrong key"}\n', r"prompts.jsonl, line 1: no prompt \('text' or 'text_prompt'"),
    ('{"text": "a", "image_name": 3}\n', r"prompts.jsonl, line 1: 'image_name' must be a string"),
    ('{"text": "a", "image_name": "a.jpg"}\n', r"'a.jpg'; submissions are PNG files"),
    ('{"text": "a", "image_name": "x.png"}\n{"text": "b", "image_name": "x.png"}\n', "appears twice"),
    ("\n\n", r"prompts.jsonl: no prompts to generate"),
])
def test_bad_jsonl_prompts_name_the_file_and_line(tmp_path, content, message):
    from helpers.submission import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_prompts(path)


def test_bad_prompt_files_are_named(tmp_path):
    from helpers.submission import read_prompts

    with pytest.raises(DataError, match=r"missing.txt: no such prompts file"):
        read_prompts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match=r"empty.txt: no prompts to generate"):
        read_prompts(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 monster\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt: not UTF-8 text"):
        read_prompts(latin)


class ReferencePainter:
    """A test double that paints each prompt's reference image, plus noise that grows with |guidance - best|."""

    def __init__(self, references: dict, best_guidance: float, scale: float):
        self.references, self.best_guidance, self.scale = references, best_guidance, scale
        self.calls: list[tuple[float, str, int]] = []

    def generate(self, prompts, seeds, *, guidance_scale=7.5, steps=50, scheduler="ddim", batch_size=8,
                 progress=True):
        self.calls.append((guidance_scale, scheduler, steps))
        out = []
        for p, s in zip(prompts, seeds):
            ref = np.asarray(Image.open(self.references[p]), dtype=np.float64)
            noise = np.random.default_rng(s).normal(0, 1, ref.shape)
            amount = self.scale * (abs(guidance_scale - self.best_guidance) + 0.1)
            out.append(Image.fromarray(np.clip(ref + amount * noise, 0, 255).astype(np.uint8)))
        return out


def test_pick_settings_ranks_candidates_by_the_profiles_judge(tmp_path, monkeypatch):
    """Two checkpoints x two guidance scales: the pick is the checkpoint and guidance whose images are closest to
    the references, by a (lower is better) Fréchet distance; the table marks it and as_dict records every value."""
    from types import SimpleNamespace

    from helpers.submission import frechet, metrics

    prompts = read_test_prompts(write_test_json(tmp_path / "test.json", 6))
    refdir = tmp_path / "ref"
    refdir.mkdir()
    refmap, by_prompt = {}, {}
    for i, p in enumerate(prompts):
        arr = np.zeros((16, 16, 3), np.uint8)
        arr[:, : 2 + 2 * i] = (30 * i, 200 - 20 * i, 90)
        Image.fromarray(arr).save(refdir / f"r{i}.png")
        refmap[p.image_name], by_prompt[p.text_prompt] = [refdir / f"r{i}.png"], refdir / f"r{i}.png"
    profile = SimpleNamespace(name="demo", resolution=16, background=(255, 255, 255), device="cpu", vae="none",
                              vae_subfolder=None)
    painters = {"good": ReferencePainter(by_prompt, 3.0, 5.0), "bad": ReferencePainter(by_prompt, 3.0, 60.0)}

    class Mean(nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    monkeypatch.setattr(frechet, "inception_problem", lambda: "offline")
    settings = [metrics.Setting(Path(c), g, "ddim", 4) for c in ("bad", "good") for g in (1.0, 3.0)]
    pick = metrics.pick_settings(settings, prompts, refmap, profile, make_tti=lambda c: painters[str(c)],
                                 out_dir=tmp_path / "pick", score_kwargs=dict(fid_extractor=Mean(),
                                                                              compute_clip=False, compute_vae_fd=False))
    assert pick.metric == "Fréchet distance (custom features)" and not pick.higher_is_better
    assert pick.best == metrics.Setting(Path("good"), 3.0, "ddim", 4)
    assert "best (marked *) by Fréchet distance" in pick.table() and pick.table().count("\n*") == 1
    record = pick.as_dict()
    assert record["best"]["guidance_scale"] == 3.0 and len(record["candidates"]) == 4
    assert all(verify_submission(f, prompts, 16).ok for f in pick.folders)

    # the next search re-uses what the first one scored: its winner is not generated again
    calls = len(painters["good"].calls)
    samplers = [pick.best, metrics.Setting(Path("good"), 3.0, "dpm++", 4)]
    again = metrics.pick_settings(samplers, prompts, refmap, profile, make_tti=lambda c: painters[str(c)],
                                  out_dir=tmp_path / "pick2", reuse=[pick], score_kwargs=dict(
                                      fid_extractor=Mean(), compute_clip=False, compute_vae_fd=False))
    assert painters["good"].calls[calls:] == [(3.0, "dpm++", 4)] and again.reused == [True, False]
    assert again.folders[0] == pick.folders[pick.best_index] and again.value(0) == pick.value(pick.best_index)
    assert "good g3 ddim-4 (scored before)" in again.table()
    # ... but only from the same prompts and seed: another seed generates everything
    other = metrics.pick_settings(samplers[:1], prompts, refmap, profile, make_tti=lambda c: painters[str(c)],
                                  out_dir=tmp_path / "pick3", reuse=[pick], seed=1, score_kwargs=dict(
                                      fid_extractor=Mean(), compute_clip=False, compute_vae_fd=False))
    assert other.reused == [False] and painters["good"].calls[-1] == (3.0, "ddim", 4)


def test_pick_metric_prefers_the_demo_judge_then_fid_then_clip():
    from helpers.submission import metrics
    from helpers.submission.scores import MetricResult

    def res(*names_values):
        return [MetricResult(n, v, "m", 4) if v is not None else MetricResult.skip(n, "offline")
                for n, v in names_values]

    species = metrics.PICK_METRICS[0]
    assert metrics.pick_metric(res(("FID", 80.0), (species, 0.5), ("CLIP-I", 0.7))) == species
    assert metrics.pick_metric(res(("FID", None), ("CLIP-T", 0.3), ("CLIP-I", 0.7))) == "CLIP-I"
    assert metrics.pick_metric(res(("FID", None), ("latent FD", 3.0))) == "latent FD"
    assert metrics.pick_metric(res(("FID", None))) is None
    nothing = metrics.SettingsPick(None, [metrics.Setting(Path("a"), 3.0), metrics.Setting(Path("b"), 1.0)],
                                   [res(("FID", None)), res(("FID", None))], [Path("x"), Path("y")])
    assert nothing.best.checkpoint == Path("a") and "every metric was skipped (skipped: offline)" in nothing.table()
