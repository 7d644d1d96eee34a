"""The generated demo data set: course format, determinism, visible species and actions, safe (re)generation."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.demo.dataset import STAMP_NAME, demo_test_pairs, ensure_demo_dataset, make_demo_dataset
from helpers.demo.species import ACTION_DESCRIPTIONS, ACTIONS, COLOURS, demo_species, species_table

TRAIN_NAME = re.compile(r"^(?P<key>(?P<monster>[^_]+)_(?P<action>[^_]+))_(?P<frame>\d+)\.png$")
OUTLINE = (22, 18, 30)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "demo")


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _train_files(root: Path) -> dict[str, list[int]]:
    """{key: sorted frame numbers} of root/train, asserting every name follows the course pattern."""
    frames: dict[str, list[int]] = {}
    for path in (root / "train").iterdir():
        m = TRAIN_NAME.match(path.name)
        assert m, f"bad train file name {path.name}"
        frames.setdefault(m["key"], []).append(int(m["frame"]))
    return {k: sorted(v) for k, v in frames.items()}


def _rgba(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA" and im.size == (64, 64), f"{path.name}: {im.mode} {im.size}"
        return np.asarray(im)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:] / 255.0
    return rgba[..., :3] * alpha + 255.0 * (1 - alpha)


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------------ the format
def test_full_set_has_the_course_layout_and_counts(full):
    frames = _train_files(full)
    info = _json(full / "train_info.json")
    assert set(frames) == set(info), "every train image key needs a train_info entry and vice versa"
    assert all(f == [0, 1, 2, 3] for f in frames.values())
    species = {k.split("_")[0] for k in frames}
    assert len(species) == 40 and len(frames) == 40 * 4 and sum(map(len, frames.values())) == 640
    for key, entry in info.items():
        assert set(entry) == {"given_description", "action_description"}
        given = entry["given_description"]
        assert len(given) >= 2 and all(isinstance(d, str) and d for d in given)
        assert entry["action_description"] == ACTION_DESCRIPTIONS[key.split("_")[1]]

    test = _json(full / "test.json")
    assert len(test) >= 32
    assert list(test) == [f"{i:04d}" for i in range(len(test))]
    for key, entry in test.items():
        assert set(entry) == {"text_prompt", "image_name"} and entry["image_name"] == f"{key}.png"
        assert (full / "test_reference" / entry["image_name"]).is_file()


def test_smoke_set_is_small_and_in_the_same_format(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo-smoke", smoke=True)
    frames = _train_files(root)
    assert set(frames) == set(_json(root / "train_info.json"))
    assert len({k.split("_")[0] for k in frames}) == 8 and len(frames) == 8 * 4
    assert all(f == [0, 1] for f in frames.values())
    assert 8 <= len(_json(root / "test.json")) <= 32


def test_sprites_are_rgba_64px_on_transparent_background_and_not_clipped(full):
    for path in [*(full / "train").iterdir(), *(full / "test_reference").iterdir()]:
        rgba = _rgba(path)
        alpha = rgba[..., 3]
        assert alpha[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0, f"{path.name}: corners must be transparent"
        ring = np.ones_like(alpha, dtype=bool)
        ring[2:-2, 2:-2] = False
        assert (alpha[ring] < 255).all(), f"{path.name}: the monster touches the border (clipped)"
        opaque = rgba[alpha == 255][:, :3]
        colours, counts = np.unique(opaque, axis=0, return_counts=True)
        main = colours[counts.argmax()]
        assert main.min() < 225, f"{path.name}: main colour {main} is too close to white (alpha goes on white)"


# -------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    a = make_demo_dataset(tmp_path / "a", n_species=8, n_frames=2, seed=3)
    b = make_demo_dataset(tmp_path / "b", n_species=8, n_frames=2, seed=3)
    names = sorted(_files(a))
    assert names == sorted(_files(b)) and len(names) > 64
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert species_table(8, seed=3) != species_table(8, seed=4)


def test_smaller_sets_are_prefixes_of_larger_ones():
    assert demo_species(8) == demo_species(40)[:8]


# ----------------------------------------------------------------------------------- what the pixels show
def test_species_differ_in_colour_and_shape(full):
    """Differently coloured species differ in mean body colour; differently shaped ones in silhouette."""
    by_id = {s.id: s for s in demo_species(40)}
    look = {}
    for sid, sp in by_id.items():
        action = next(a for a in ACTIONS if a != sp.held_out)
        rgba = _rgba(full / "train" / f"{sid}_{action}_0.png").astype(np.float64)
        opaque = rgba[..., 3] == 255
        body = opaque & (np.abs(rgba[..., :3] - OUTLINE).sum(-1) > 0)
        look[sid] = (rgba[body][:, :3].mean(0), opaque)
    assert len({(s.colour, s.shape) for s in by_id.values()}) == 40, "every (colour, shape) pair is unique"
    for s1, s2 in itertools.combinations(by_id.values(), 2):
        (c1, m1), (c2, m2) = look[s1.id], look[s2.id]
        if s1.colour != s2.colour:
            assert np.linalg.norm(c1 - c2) > 20, f"{s1.colour} {s1.shape} vs {s2.colour} {s2.shape}"
        if s1.shape != s2.shape:
            assert (m1 & m2).sum() / (m1 | m2).sum() < 0.9, f"{s1.shape} vs {s2.shape} silhouettes"


def test_action_changes_the_pose_more_than_frames_within_an_action(full):
    frames = _train_files(full)
    for sid in sorted({k.split("_")[0] for k in frames}):
        imgs = {k.split("_")[1]: [_on_white(_rgba(full / "train" / f"{k}_{f}.png")) for f in v]
                for k, v in frames.items() if k.startswith(sid + "_")}
        within = [np.abs(x - y).mean() for fs in imgs.values() for x, y in itertools.combinations(fs, 2)]
        between = [np.abs(x - y).mean() for a, b in itertools.combinations(imgs, 2) for x in imgs[a] for y in imgs[b]]
        assert min(within) > 0, f"{sid}: the frames of an action must differ (animation)"
        assert np.mean(between) > 1.25 * np.mean(within), f"{sid}: actions barely differ"


# ------------------------------------------------------------------------------------- texts and hold-out
def test_held_out_pairs_are_in_test_json_and_not_in_train(full):
    species = demo_species(40)
    info = _json(full / "train_info.json")
    test = _json(full / "test.json")
    assert {s.held_out for s in species} == set(ACTIONS), "the held-out action rotates over all actions"
    pairs = demo_test_pairs(full)
    assert set(pairs) == set(test)
    for sp in species:
        key = f"{sp.id}_{sp.held_out}"
        assert key not in info and not list((full / "train").glob(f"{key}_*.png"))
        assert key in pairs.values(), f"held-out pair {key} missing from test.json"
    seen = [k for k in pairs.values() if k in info]
    assert seen, "test.json should also ask for some pairs seen in training"
    assert demo_test_pairs(full.parent) is None, "not a demo set"
    by_id = {s.id: s for s in species}
    for key, pair in pairs.items():
        sp, action = by_id[pair.split("_")[0]], pair.split("_")[1]
        assert test[key]["text_prompt"] in {f"{d} {ACTION_DESCRIPTIONS[action]}" for d in sp.descriptions}


def test_descriptions_name_colour_and_shape_in_several_phrasings():
    table = species_table()
    assert len(table) == 40 and {"id", "colour", "shape", "features", "held_out", "descriptions"} <= set(table[0])
    for row in table:
        assert "_" not in row["id"] and row["colour"] in COLOURS
        assert len(set(row["descriptions"])) >= 2
        for d in row["descriptions"]:
            assert row["colour"] in d.lower() and row["shape"] in d.lower(), d
    assert len(ACTION_DESCRIPTIONS) == len(set(ACTION_DESCRIPTIONS.values())) == 5


# ----------------------------------------------------------------------------------- ensure_demo_dataset
def test_ensure_reuses_an_up_to_date_set_without_rewriting(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", smoke=True)
    before = _files(root)
    assert ensure_demo_dataset(tmp_path / "demo", smoke=True) == root
    assert _files(root) == before, "an up-to-date set must not be rewritten"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"], "no temporary folders left behind"


def test_ensure_regenerates_an_outdated_or_damaged_set_and_keeps_the_vae(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", smoke=True)
    good = {n: (root / n).read_bytes() for n in _files(root)}
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text("{}")
    stamp = _json(root / STAMP_NAME)
    stamp["version"] = -1
    (root / STAMP_NAME).write_text(json.dumps(stamp))
    (root / "train" / "stale.png").write_bytes(b"")
    ensure_demo_dataset(root, smoke=True)
    assert {n: (root / n).read_bytes() for n in _files(root) if not n.startswith("vae/")} == good
    assert (root / "vae" / "config.json").read_text() == "{}", "the demo VAE next to the data must survive"

    next(iter((root / "train").iterdir())).unlink()  # a damaged set (same stamp, a file missing)
    ensure_demo_dataset(root, smoke=True)
    assert len(list((root / "train").iterdir())) == _json(root / STAMP_NAME)["n_train_images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_ensure_switches_between_smoke_and_full_sets(tmp_path, monkeypatch):
    monkeypatch.setattr("helpers.demo.dataset.FULL", {"n_species": 9, "n_frames": 3})  # keep the test fast
    root = ensure_demo_dataset(tmp_path / "demo", smoke=True)
    ensure_demo_dataset(root, smoke=False)
    assert _json(root / STAMP_NAME)["params"] == {"n_species": 9, "n_frames": 3, "seed": 0, "size": 64}
    assert len(list((root / "train").iterdir())) == 9 * 4 * 3


def test_ensure_refuses_a_folder_that_is_not_a_demo_set(tmp_path):
    foreign = tmp_path / "hw6"
    foreign.mkdir()
    (foreign / "train_info.json").write_text("{}")
    with pytest.raises(FileExistsError, match=re.escape(str(foreign))):
        ensure_demo_dataset(foreign, smoke=True)
    assert [p.name for p in foreign.iterdir()] == ["train_info.json"], "a foreign folder is never touched"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ensure_demo_dataset(empty, smoke=True) / STAMP_NAME).is_file(), "an empty folder may be used"
    with pytest.raises(FileExistsError):
        make_demo_dataset(empty)
