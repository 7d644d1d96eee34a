"""benchmarks/outside_sets.py, its pure parts: caption and key rules, drawing, the course-format writer (no network)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.data import load_train_set, make_caption, read_test_prompts, split_key

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "outside_sets.py"


@pytest.fixture(scope="module")
def osets():
    spec = importlib.util.spec_from_file_location("outside_sets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["outside_sets"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("outside_sets", None)


def test_icon_captions_come_from_the_name(osets):
    assert osets.icon_phrase("mdi.account-circle") == "account circle"
    assert osets.icon_phrase("airplane-tilt") == "airplane tilt"
    assert osets.icon_descriptions("mdi.account-circle", "red") == ("A red icon of an account circle.",
                                                                     "Red account circle icon.")
    assert osets.with_article("folders") == "folders"  # a plural: no article
    assert osets.with_article("arrows out line horizontal") == "arrows out line horizontal"
    assert osets.with_article("compass") == "a compass" and osets.with_article("bus stop") == "a bus stop"
    assert osets.with_article("user circle") == "a user circle" and osets.with_article("hourglass") == "an hourglass"
    assert osets.with_article("eye") == "an eye" and osets.with_article("cat") == "a cat"
    assert osets.icon_descriptions("ph.cake", "orange")[0] == "An orange icon of a cake."  # not "A orange"
    with pytest.raises(ValueError):
        osets.icon_phrase("mdi.--")


def test_glyph_captions_are_unicode_names(osets):
    assert osets.glyph_descriptions("A", "red") == ("A red glyph of LATIN CAPITAL LETTER A.",
                                                    "The character LATIN CAPITAL LETTER A in red.")
    assert osets.glyph_descriptions("\u03b1", "blue")[0] == "A blue glyph of GREEK SMALL LETTER ALPHA."
    with pytest.raises(ValueError, match="no Unicode name"):
        osets.glyph_descriptions("\x00", "red")
    assert osets.is_emoji(ord("\u2600")) and osets.is_emoji(ord("\u00a9")) and osets.is_emoji(0x1F600)
    assert not osets.is_emoji(ord("A")) and not osets.is_emoji(ord("7")) and not osets.is_emoji(ord("\u2192"))
    assert osets.block_of(ord("A")) == "Basic Latin" and osets.block_of(0x0416) == "Cyrillic"
    assert osets.block_of(0x2600) is None  # Miscellaneous Symbols: left out (emoji)


def test_keys_split_back_into_monster_and_action(osets):
    assert osets.glyph_monster("A") == "u0041" and osets.glyph_monster("\U0001d55a") == "u1d55a"
    assert osets.make_key("u0041", "bold") == "u0041_bold"
    for monster, action in [("u0041", "bold"), ("arrow-u-up-left", "thin"), ("m_2", "fill")]:
        assert split_key(osets.make_key(monster, action)) == (monster, action)
    for monster, action in [("cat", "light_bold"), ("", "bold"), ("cat", "")]:
        with pytest.raises(ValueError):
            osets.make_key(monster, action)
    colour = osets.colour_of("u0041", 0)
    assert colour in osets.PALETTE and colour == osets.colour_of("u0041", 0)
    assert all(c in osets.COLOURS for c in osets.PALETTE)


def test_look_alike_actions_are_dropped(osets):
    a, b = np.zeros((4, 4), np.uint8), np.eye(4, dtype=np.uint8)
    assert osets.distinct_actions({"sans": a, "serif": b, "oblique": a.copy(), "bold": b * 2}) == [
        "sans", "serif", "bold"]
    take = osets.take(["x", "y", "z"], {"x": ["a", "b"], "y": ["a"], "z": ["a", "b", "c"]}.__getitem__, 5)
    assert take == [("x", ["a", "b"]), ("z", ["a", "b", "c"])]  # y has one action only: skipped


def test_drawing_keeps_the_ink_inside_and_on_white(osets):
    ink = Image.new("L", (100, 20), 255)
    placed = np.asarray(osets.place(ink, 32, 2, top=None))
    rows, cols = np.nonzero(placed)
    assert placed.shape == (32, 32) and cols.min() >= 2 and cols.max() <= 29 and rows.min() >= 2
    fonts = osets.glyph_fonts()
    picture = osets.draw_text_char(fonts["bold"], "A", 32, "red")
    alpha = np.asarray(picture)[..., 3]
    assert picture.mode == "RGBA" and picture.size == (32, 32) and (alpha >= 128).sum() > 20
    assert np.asarray(picture)[alpha > 0][:, :3].tolist()[0] == list(osets.COLOURS["red"])
    cols = np.nonzero(alpha.any(axis=0))[0]
    assert abs((cols.min() + cols.max()) / 2 - 15.5) <= 1  # centred


def _fake(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGBA", (16, 16), colour + (255,))


def test_course_writer_round_trips_through_the_reader(osets, tmp_path):
    item = osets.Item
    items = [item("cat", "thin", ("A red icon of a cat.", "Red cat icon."), "The icon is drawn with thin lines.",
                  partial(_fake, (200, 0, 0))),
             item("cat", "bold", ("A red icon of a cat.", "Red cat icon."), "The icon is drawn with bold lines.",
                  partial(_fake, (150, 0, 0))),
             item("dog", "fill", ("A blue icon of a dog.",), "The icon is filled in solid.", partial(_fake, (0, 0, 200)))]
    held = osets.choose_test(items, 1, seed=0)
    assert len(held) == 1 and held[0].monster == "cat"  # only cat has a second action to keep in train
    root = tmp_path / "set"
    pairs = osets.write_course_set(root, items, held, seed=0)
    assert pairs == {"0000": held[0].key}
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(
        f"{it.key}_0.png" for it in items if it is not held[0])
    train = load_train_set(root, verbose=False, progress=False)
    assert train.report.ok and len(train) == 2 and held[0].key not in train.keys()
    dog = next(e for e in train.examples if e.key == "dog_fill")
    assert dog.captions == (make_caption("A blue icon of a dog.", "The icon is filled in solid."),)
    info = json.loads((root / "train_info.json").read_text(encoding="utf-8"))
    assert info["dog_fill"] == {"given_description": ["A blue icon of a dog."],
                                "action_description": "The icon is filled in solid."}
    (prompt,) = read_test_prompts(root / "test.json")
    assert prompt.text_prompt in held[0].captions and (root / "test_reference" / prompt.image_name).is_file()
    with pytest.raises(osets.SetError, match="cannot hold out 2"):
        osets.choose_test(items, 2, seed=0)


def test_a_failed_download_says_what_failed_and_what_to_do(osets, tmp_path, monkeypatch):
    def fail(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for qtawesome==1.4.2")

    monkeypatch.setattr(osets.subprocess, "run", fail)
    with pytest.raises(osets.SetError) as err:
        osets.pip_download("qtawesome", "1.4.2", tmp_path / "_downloads")
    message = str(err.value)
    assert "pip download qtawesome==1.4.2 failed" in message and "No matching distribution" in message
    assert "--sets glyphs" in message
