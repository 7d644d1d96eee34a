"""helpers.data.split: a seeded, deterministic held-out split with test.json-style prompts and reference images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data import DataError, load_train_set, read_test_prompts
from helpers.data.images import load_image
from helpers.data.split import choose_heldout, holdout_split, load_split


def make_course_data(root: Path, n_monsters: int = 10, actions=("walk", "jump"), frames: int = 2,
                     size: int = 24) -> Path:
    """A small data set in the course format (RGBA sprites on a transparent background)."""
    (root / "train").mkdir(parents=True, exist_ok=True)
    info = {}
    rng = np.random.default_rng(0)
    for m in range(n_monsters):
        for a in actions:
            key = f"mon{m:02d}_{a.upper()}"
            info[key] = {"given_description": [f"a small monster number {m}", f"creature {m} pixel art"],
                         "action_description": f"is {a}ing"}
            for f in range(frames):
                arr = np.zeros((size, size, 4), np.uint8)
                arr[4:-4, 4:-4, :3] = rng.integers(0, 256, 3, dtype=np.uint8)
                arr[4:-4, 4:-4, 3] = 255
                Image.fromarray(arr, "RGBA").save(root / "train" / f"{key}_{f}.png")
    (root / "train_info.json").write_text(json.dumps(info))
    return root


@pytest.fixture()
def train_set(tmp_path):
    return load_train_set(make_course_data(tmp_path / "data"), verbose=False, progress=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_split_is_deterministic_disjoint_and_complete(train_set, tmp_path):
    split = holdout_split(train_set, out_dir=tmp_path / "heldout", resolution=16, fraction=0.1, seed=3)
    keys = set(train_set.keys())
    assert len(split.heldout_keys) == 2  # round(0.1 * 20)
    assert set(split.heldout_keys).isdisjoint(split.train_keys)
    assert set(split.heldout_keys) | set(split.train_keys) == keys
    assert {e.key for e in split.train_set.examples} == set(split.train_keys)
    assert len(split.train_set) == len(train_set) - 2 * 2  # 2 frames per held-out key

    prompts = read_test_prompts(split.prompts_path)  # the course's test.json format, validated
    assert [p.key for p in prompts] == split.heldout_keys
    assert all(p.image_name == f"{p.key}.png" for p in prompts)
    info = json.loads((train_set.root / "train_info.json").read_text())
    for p in prompts:
        assert p.text_prompt == next(e for e in train_set.examples if e.key == p.key).captions[0]
        assert info[p.key]["action_description"] in p.text_prompt

    # every real image of every held-out key is in the reference folder, read like training (white bg, 16 px)
    for key in split.heldout_keys:
        originals = sorted(e.path for e in train_set.examples if e.key == key)
        refs = split.reference_map[f"{key}.png"]
        assert len(refs) == len(originals) == 2
        for orig, ref in zip(originals, refs):
            assert ref.parent == split.reference_dir and ref.name == orig.stem + ".png"
            with Image.open(ref) as im:
                assert im.mode == "RGB" and im.size == (16, 16) and im.getpixel((0, 0)) == (255, 255, 255)
                assert np.array_equal(np.asarray(im), np.asarray(load_image(orig, 16)))
    assert sorted(p.name for p in split.reference_dir.iterdir()) == sorted(
        r.name for v in split.reference_map.values() for r in v)

    # re-running gives the same files (reused, not rewritten) and the same split
    before = _files(split.out_dir)
    mtimes = {p: p.stat().st_mtime_ns for p in split.out_dir.rglob("*")}
    again = holdout_split(train_set, out_dir=tmp_path / "heldout", resolution=16, fraction=0.1, seed=3)
    assert again.heldout_keys == split.heldout_keys and _files(again.out_dir) == before
    assert {p: p.stat().st_mtime_ns for p in split.out_dir.rglob("*")} == mtimes
    # a fresh folder with the same inputs is byte-identical
    other = holdout_split(train_set, out_dir=tmp_path / "heldout2", resolution=16, fraction=0.1, seed=3)
    assert _files(other.out_dir) == before
    # load_split reads it back
    loaded = load_split(tmp_path / "heldout")
    assert loaded.heldout_keys == split.heldout_keys and loaded.reference_map == split.reference_map
    assert loaded.resolution == 16 and loaded.seed == 3


def test_changed_settings_rebuild_the_split(train_set, tmp_path):
    """A new resolution re-prepares the references (same keys: no warning); new held-out keys warn."""
    import warnings

    a = holdout_split(train_set, out_dir=tmp_path / "h", resolution=16, fraction=0.1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = holdout_split(train_set, out_dir=tmp_path / "h", resolution=8, fraction=0.1, seed=0)
    assert b.resolution == 8 and a.heldout_keys == b.heldout_keys
    with Image.open(next(iter(b.reference_map.values()))[0]) as im:
        assert im.size == (8, 8)
    with pytest.warns(UserWarning, match="rebuilding"):
        c = holdout_split(train_set, out_dir=tmp_path / "h", resolution=8, fraction=0.2, seed=0)
    assert set(c.heldout_keys) != set(a.heldout_keys)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_references_are_prepared_like_training_images(train_set, tmp_path):
    """crop_to_content=True: the references are cropped to their content (as training images then are), recorded in
    split.json; switching it re-prepares them."""
    plain = holdout_split(train_set, out_dir=tmp_path / "h", resolution=16, fraction=0.1, seed=0)
    plain_bytes = {p.name: p.read_bytes() for v in plain.reference_map.values() for p in v}
    cropped = holdout_split(train_set, out_dir=tmp_path / "h", resolution=16, fraction=0.1, seed=0,
                            crop_to_content=True)
    assert json.loads((cropped.out_dir / "split.json").read_text())["crop_to_content"] is True
    originals = {e.path.stem: e.path for e in train_set.examples}
    for refs in cropped.reference_map.values():
        for ref in refs:
            with Image.open(ref) as im:
                want = load_image(originals[ref.stem], 16, crop_to_content=True)
                assert np.array_equal(np.asarray(im), np.asarray(want))
            assert ref.read_bytes() != plain_bytes[ref.name]  # the white border is gone


def test_choose_heldout():
    keys = [f"k{i}" for i in range(40)]
    a = choose_heldout(keys, 0.05, seed=0)
    assert a == choose_heldout(list(reversed(keys)) + keys, 0.05, seed=0)  # order and duplicates don't matter
    assert len(a) == 2 and a == sorted(a)
    assert choose_heldout(keys, 0.05, seed=1) != a
    assert len(choose_heldout(["a", "b"], 0.01)) == 1  # at least one, at most n - 1
    with pytest.raises(DataError):
        choose_heldout(["only"], 0.5)
    with pytest.raises(ValueError):
        choose_heldout(keys, 1.0)


def test_load_split_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="no held-out split"):
        load_split(tmp_path / "nothing")


def test_split_status_reads_the_runs_cache(train_set, tmp_path):
    from helpers.data.split import split_status

    split = holdout_split(train_set, out_dir=tmp_path / "h", resolution=8, fraction=0.1)
    run = tmp_path / "run"
    run.mkdir()
    assert split_status(split, run)[0] == "unknown"
    (run / "train_config.json").write_text(json.dumps({"cache_dir": None}))
    assert split_status(split, run)[0] == "unknown"
    cache = tmp_path / "cache"
    cache.mkdir()
    (run / "train_config.json").write_text(json.dumps({"cache_dir": str(cache)}))
    (cache / "index.json").write_text(json.dumps({"keys": [e.key for e in split.train_set.examples]}))
    assert split_status(split, run)[0] == "excluded"
    (cache / "index.json").write_text(json.dumps({"keys": [e.key for e in train_set.examples]}))
    status, why = split_status(split, run)
    assert status == "included" and "optimistic" in why


def test_imagefolder_keys_with_folders_give_plain_image_names(tmp_path):
    """An imagefolder key is its file_name without the extension (``pics/0003``): the prompt's image_name must still
    be a plain, unique file name (test.json rules), or chapter 06 cannot read the split back."""
    root = tmp_path / "folder"
    lines = []
    for i, sub in enumerate(["pics", "pics", "more", "more", "pics_x"]):
        (root / sub).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / sub / f"{i:04d}.png")
        lines.append(json.dumps({"file_name": f"{sub}/{i:04d}.png", "text": f"picture {i}"}))
    (root / "pics" / "0001.png").rename(root / "pics" / "a.png")
    lines[1] = json.dumps({"file_name": "pics/a.png", "text": "picture a"})
    Image.new("RGB", (8, 8)).save(root / "pics_a.png")  # pics/a and pics_a would both become pics_a.png
    lines.append(json.dumps({"file_name": "pics_a.png", "text": "picture b"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    train_set = load_train_set(root, verbose=False, progress=False)
    split = holdout_split(train_set, out_dir=tmp_path / "h", resolution=8, fraction=0.8, seed=0)
    prompts = read_test_prompts(split.prompts_path)  # validates: plain, unique .png names
    assert len(prompts) == 5 and all("/" not in p.image_name for p in prompts)
    assert {p.key for p in prompts} <= set(train_set.keys()) and any("/" in p.key for p in prompts)
    from helpers.data.split import _unique_name

    used: set[str] = set()
    assert [_unique_name(k, used) for k in ("pics/a", "pics_a", ".hidden", "a b")] == [
        "pics_a.png", "pics_a-2.png", "hidden.png", "a_b.png"]
