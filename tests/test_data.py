from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import choose_heldout
from helpers.demo.vae import heldout_monsters

from helpers.data import (
    DataError,
    TrainSet,
    check_dataset,
    image_table,
    load_train_set,
    make_caption,
    read_test_prompts,
    split_key,
)
from helpers.data.images import (
    ImageDataset,
    content_bbox,
    crop_content,
    load_image,
    pil_to_tensor,
    resize_square,
    tensor_to_pil,
)

RED_HALF = (255, 0, 0, 128)


# ------------------------------------------------------------------------------------------------ fixtures
def write_course(root: Path, keys=("m1_WALK", "m_2_IDLE"), frames=2, size=16, info=None,
                 color=(0, 0, 255, 255)) -> Path:
    (root / "train").mkdir(parents=True, exist_ok=True)
    for key in keys:
        for f in range(frames):
            Image.new("RGBA", (size, size), color).save(root / "train" / f"{key}_{f}.png")
    if info is None:
        info = {k: {"given_description": [f"{k} given one", f"{k} given two"],
                    "action_description": k.rsplit("_", 1)[1].lower()} for k in keys}
    (root / "train_info.json").write_text(json.dumps(info, indent=1))
    return root


def quiet_load(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_train_set(root, verbose=False, **kw)


def problem(report, kind):
    found = report.of_kind(kind)
    assert found, f"no {kind} problem in {report.table()}"
    return found[0]


def truncated_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path


# ------------------------------------------------------------------------------------------------ captions
def test_make_caption_joins_and_strips():
    assert make_caption("a red blob", "walking left") == "a red blob walking left"
    assert make_caption("  a red blob ", " walking ") == "a red blob walking"
    assert make_caption("", "walking") == "walking"
    # a new sentence after an unpunctuated description gets its full stop (issue #19: "...blue book It belongs...")
    assert make_caption("an emoji of a blue book", "It belongs to the objects category.") == \
        "an emoji of a blue book. It belongs to the objects category."
    assert make_caption("A red slime.", "The monster is walking.") == "A red slime. The monster is walking."
    assert make_caption("A red slime!", "The monster is walking.") == "A red slime! The monster is walking."
    assert make_caption("a red blob", "") == "a red blob"


def test_split_key_splits_at_the_last_underscore():
    assert split_key("m007_attack") == ("m007", "attack")
    assert split_key("m_2_IDLE") == ("m_2", "IDLE")  # the monster ID holds underscores
    assert split_key("boss__fire_breath_WALK") == ("boss__fire_breath", "WALK")
    assert split_key("0001") == ("0001", "")  # an imagefolder key: its own monster, no action


def test_demo_vae_holds_out_whole_monsters_by_the_one_hold_out_rule():
    keys = ["m_2_IDLE", "m_2_WALK", "m_3_IDLE", "m1_WALK"]
    held = heldout_monsters(keys, 0.34, seed=0)
    assert held == set(choose_heldout(["m_2", "m_3", "m1"], 0.34, seed=0)) and len(held) == 1
    assert held <= {"m_2", "m_3", "m1"}  # monster IDs (split at the last "_"), not keys
    assert heldout_monsters(["m1_WALK", "m1_IDLE"], 0.5) == set()  # one monster: nothing to hold out


# ------------------------------------------------------------------------------------------------ course format
def test_course_format_keys_captions_and_splits(tmp_path):
    root = write_course(tmp_path / "d")
    ts = quiet_load(root)
    assert isinstance(ts, TrainSet) and ts.format == "course" and len(ts) == 4
    assert ts.keys() == ["m1_WALK", "m_2_IDLE"]  # the underscore inside the monster ID survives
    ex = [e for e in ts.examples if e.key == "m_2_IDLE"][0]
    assert ex.captions == ("m_2_IDLE given one idle", "m_2_IDLE given two idle")
    assert ex.path.name.startswith("m_2_IDLE_")
    caps = ts.distinct_captions()
    assert caps[0] == "" and caps == sorted(caps) and len(caps) == 5
    held = ts.without_keys(["m1_WALK"])
    assert held.keys() == ["m_2_IDLE"] and len(held) == 2 and len(ts) == 4
    assert held.report is ts.report
    assert "" in held.distinct_captions()
    with pytest.raises(KeyError, match="nope"):
        ts.without_keys(["nope"], strict=True)
    assert ts.report.ok and ts.report.n_examples == 4 and ts.report.n_image_files == 4
    assert set(ts.by_key()) == {"m1_WALK", "m_2_IDLE"}


def test_duplicate_given_descriptions_are_kept_once(tmp_path):
    info = {"m1_WALK": {"given_description": ["blob", "blob", "round"], "action_description": "walk"}}
    ts = quiet_load(write_course(tmp_path, keys=("m1_WALK",), info=info))
    assert ts.examples[0].captions == ("blob walk", "round walk")


def test_image_without_caption_and_caption_without_image(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",))
    Image.new("RGB", (16, 16)).save(root / "train" / "ghost_RUN_0.png")
    info = json.loads((root / "train_info.json").read_text())
    info["m9_JUMP"] = {"given_description": ["x"], "action_description": "jump"}
    (root / "train_info.json").write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="ghost_RUN_0.png") as rec:
        ts = load_train_set(root, verbose=False)
    assert "m9_JUMP" in str(rec[0].message)
    assert len(ts) == 2 and all(e.key == "m1_WALK" for e in ts.examples)
    p = problem(ts.report, "no_caption")
    assert p.path.name == "ghost_RUN_0.png" and p.severity == "skip" and "ghost_RUN" in p.message
    w = problem(ts.report, "no_images")
    assert w.severity == "warning" and "m9_JUMP" in w.message and "train_info.json" in w.message
    assert not ts.report.ok
    assert "ghost_RUN_0.png" in ts.report.summary()


@pytest.mark.parametrize("kind,maker", [
    ("unreadable", lambda p: p.write_text("this is not a png")),
    ("empty_file", lambda p: p.write_bytes(b"")),
    ("truncated", truncated_png),
    ("too_large", lambda p: Image.new("1", (4100, 4100)).save(p)),  # > 4096 x 4096 pixels, a tiny file
])
def test_unusable_images_are_skipped_with_report_naming_the_file(tmp_path, kind, maker):
    root = write_course(tmp_path, keys=("m1_WALK",))
    bad = root / "train" / "m1_WALK_7.png"
    maker(bad)
    with pytest.warns(UserWarning, match="m1_WALK_7.png"):
        ts = load_train_set(root, verbose=False)
    assert len(ts) == 2 and bad not in [e.path for e in ts.examples]
    p = problem(ts.report, kind)
    assert p.path == bad and p.severity == "skip" and "m1_WALK_7.png" in p.message
    assert ts.report.skipped == [bad]
    assert any(row["file"] == "train/m1_WALK_7.png" and row["kind"] == kind for row in ts.report.table())
    with pytest.raises(DataError, match="m1_WALK_7.png"):
        load_image(bad, 16)


def test_decompression_bomb_warning_becomes_a_report(tmp_path, monkeypatch):
    root = write_course(tmp_path, keys=("m1_WALK",), frames=1, size=8)  # 64 pixels: fine
    Image.new("RGB", (12, 12)).save(root / "train" / "m1_WALK_5.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 144 pixels: PIL warns (it raises above 200)
    report = check_dataset(root)
    big = [p for p in report.of_kind("too_large")]
    assert [p.path.name for p in big] == ["m1_WALK_5.png"]


def test_check_false_lists_without_opening(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",))
    bad = root / "train" / "m1_WALK_9.png"
    bad.write_bytes(b"")
    ts = quiet_load(root, check=False)
    assert len(ts) == 3 and not ts.report.checked_images
    with pytest.raises(DataError, match="0 bytes"):
        load_image(bad, 16)


def test_non_image_files_are_listed_as_notes(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",))
    (root / "train" / "notes.txt").write_text("hi")
    (root / "train" / "sub").mkdir()
    ts = quiet_load(root)
    ignored = sorted(p.path.name for p in ts.report.of_kind("ignored"))
    assert ignored == ["notes.txt", "sub"] and ts.report.ok


# ------------------------------------------------------------------------------------------------ JSON errors
def test_malformed_train_info_reports_line_and_column(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",))
    (root / "train_info.json").write_text('{\n "m1_WALK": {\n  "given_description": ["a"]\n  "action_description": "w"}}')
    with pytest.raises(DataError) as err:
        load_train_set(root, verbose=False)
    msg = str(err.value)
    assert "train_info.json" in msg and "line 4, column 3" in msg


@pytest.mark.parametrize("info,needle", [
    ({"m1_WALK": {"given_description": "a blob", "action_description": "walk"}}, "must be a list"),
    ({"m1_WALK": {"given_description": [], "action_description": "walk"}}, "empty list"),
    ({"m1_WALK": {"given_description": ["a", 3], "action_description": "walk"}}, "non-string"),
    ({"m1_WALK": {"given_description": ["a"]}}, "'action_description' is missing"),
    ({"m1_WALK": {"action_description": "walk"}}, "'given_description' is missing"),
    ({"m1_WALK": {"given_description": ["a"], "action_description": ["walk"]}}, "must be a string"),
    ({"m1_WALK": "a blob walking"}, "expected an object"),
    ([1, 2], "expected a JSON object"),
    ({}, "empty"),
])
def test_wrong_train_info_structure_raises_naming_file_and_key(tmp_path, info, needle):
    root = write_course(tmp_path, keys=("m1_WALK",), info=info)
    with pytest.raises(DataError, match=needle) as err:
        load_train_set(root, verbose=False)
    msg = str(err.value)
    assert "train_info.json" in msg
    if isinstance(info, dict) and info:
        assert "'m1_WALK'" in msg


def test_empty_train_info_file(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",))
    (root / "train_info.json").write_text("")
    with pytest.raises(DataError, match=r"train_info.json.*empty"):
        load_train_set(root, verbose=False)


def test_empty_data_set_raises(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",), frames=0)
    with pytest.raises(DataError, match="empty") as err:
        load_train_set(root, verbose=False)
    assert str(root) in str(err.value)
    (root / "train" / "m1_WALK_0.png").write_bytes(b"")  # every image unusable: still empty, and it says why
    with pytest.raises(DataError, match="m1_WALK_0.png"):
        load_train_set(root, verbose=False)


def test_unknown_folder_layouts_raise_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_train_set(tmp_path / "missing")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="not a data set") as err:
        load_train_set(tmp_path / "x")
    assert str(tmp_path / "x") in str(err.value)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "train_info.json").write_text("{}")
    with pytest.raises(DataError, match="no train/ folder"):
        load_train_set(tmp_path / "y")


# ------------------------------------------------------------------------------------------------ imagefolder
def write_imagefolder(folder: Path, lines: list[str], names=("a.png", "b.png")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", (8, 8), (0, 255, 0)).save(folder / n)
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_imagefolder_reads_text_and_lists(tmp_path):
    root = write_imagefolder(tmp_path / "hf", [
        json.dumps({"file_name": "a.png", "text": "a green square"}),
        "",
        json.dumps({"file_name": "b.png", "text": ["green", "a square"]}),
    ])
    ts = quiet_load(root)
    assert ts.format == "imagefolder" and ts.keys() == ["a", "b"]
    assert [e.captions for e in ts.examples] == [("a green square",), ("green", "a square")]
    assert ts.report.ok and ts.report.n_caption_keys == 2
    assert ts.distinct_captions() == ["", "a green square", "a square", "green"]


def test_imagefolder_in_train_subfolder(tmp_path):
    write_imagefolder(tmp_path / "hf" / "train", [json.dumps({"file_name": "a.png", "text": "x"}),
                                                  json.dumps({"file_name": "b.png", "text": "y"})])
    ts = quiet_load(tmp_path / "hf")
    assert len(ts) == 2 and ts.examples[0].path == tmp_path / "hf" / "train" / "a.png"


def test_imagefolder_with_sub_folders(tmp_path):
    root = write_imagefolder(tmp_path / "hf", [json.dumps({"file_name": "imgs/c.png", "text": "x"}),
                                               json.dumps({"file_name": "a.png", "text": "y"}),
                                               json.dumps({"file_name": "b.png", "text": "z"})])
    (root / "imgs").mkdir()
    Image.new("RGB", (8, 8)).save(root / "imgs" / "c.png")
    Image.new("RGB", (8, 8)).save(root / "imgs" / "unlisted.png")
    with pytest.warns(UserWarning, match="unlisted.png"):
        ts = load_train_set(root, verbose=False)
    assert ts.keys() == ["a", "b", "imgs/c"]
    assert [p.path.name for p in ts.report.of_kind("no_caption")] == ["unlisted.png"]


def test_imagefolder_missing_file_and_unlisted_image_are_skipped(tmp_path):
    root = write_imagefolder(tmp_path / "hf", [json.dumps({"file_name": "a.png", "text": "x"}),
                                               json.dumps({"file_name": "gone.png", "text": "y"})])
    with pytest.warns(UserWarning, match="gone.png"):
        ts = load_train_set(root, verbose=False)
    assert ts.keys() == ["a"]
    missing = problem(ts.report, "missing_file")
    assert "gone.png" in missing.message and "line 2" in missing.message and "metadata.jsonl" in missing.message
    unlisted = problem(ts.report, "no_caption")
    assert unlisted.path.name == "b.png" and "metadata.jsonl" in unlisted.message


@pytest.mark.parametrize("line,needle", [
    ('{"file_name": "b.png", "text": "y"', "line 2, column"),
    ('{"text": "y"}', "'file_name' is missing"),
    ('{"file_name": "b.png"}', "'text' is missing"),
    ('["b.png", "y"]', "expected a JSON object"),
])
def test_malformed_metadata_line_raises_with_file_and_line(tmp_path, line, needle):
    root = write_imagefolder(tmp_path / "hf", [json.dumps({"file_name": "a.png", "text": "x"}), line])
    with pytest.raises(DataError, match=needle) as err:
        load_train_set(root, verbose=False)
    assert "metadata.jsonl, line 2" in str(err.value)


# ------------------------------------------------------------------------------------------------ image modes
def test_half_transparent_red_on_white_and_black(tmp_path):
    p = tmp_path / "r.png"
    Image.new("RGBA", (4, 4), RED_HALF).save(p)
    r, g, b = load_image(p, 4).getpixel((1, 1))
    a = 128 / 255
    assert r == 255 and abs(g - round(255 * (1 - a))) <= 1 and g == b  # 127: half way to white
    r, g, b = load_image(p, 4, background=(0, 0, 0)).getpixel((1, 1))
    assert abs(r - round(255 * a)) <= 1 and g == b == 0


def test_la_palette_16bit_cmyk_are_loaded_and_noted(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",), frames=1)
    train = root / "train"
    Image.new("LA", (4, 4), (0, 128)).save(train / "m1_WALK_1.png")
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(train / "m1_WALK_2.png")
    pal_t = Image.new("P", (4, 4), 0)
    pal_t.putpalette([9, 9, 9, 10, 200, 30] + [0] * 762)
    pal_t.putpixel((0, 0), 1)
    pal_t.save(train / "m1_WALK_3.png", transparency=0)
    sixteen = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(sixteen).save(train / "m1_WALK_4.png")
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(train / "m1_WALK_5.tif")

    assert Image.open(train / "m1_WALK_4.png").mode == "I;16"
    ts = quiet_load(root)
    assert len(ts) == 6 and ts.report.ok  # notes only
    noted = {p.path.name for p in ts.report.of_kind("mode")}
    assert noted == {"m1_WALK_1.png", "m1_WALK_2.png", "m1_WALK_3.png", "m1_WALK_4.png", "m1_WALK_5.tif"}
    assert all(p.severity == "note" for p in ts.report.of_kind("mode"))

    assert load_image(train / "m1_WALK_1.png", 4).getpixel((0, 0)) == (127, 127, 127)  # black, half alpha, white
    assert load_image(train / "m1_WALK_2.png", 4).getpixel((0, 0)) == (10, 200, 30)
    pt = load_image(train / "m1_WALK_3.png", 4)
    assert pt.getpixel((0, 0)) == (10, 200, 30) and pt.getpixel((1, 1)) == (255, 255, 255)  # index 0 transparent
    g16 = load_image(train / "m1_WALK_4.png", None)
    assert g16.mode == "RGB"
    # scaled by 1/257, not clipped (PIL's own convert("L") would give 255 for 1000)
    assert [g16.getpixel(xy)[0] for xy in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 255, 128, 4]
    assert load_image(train / "m1_WALK_5.tif", 4).getpixel((0, 0)) == (255, 0, 0)


def test_grey_and_one_bit_become_rgb(tmp_path):
    Image.new("L", (3, 3), 77).save(tmp_path / "l.png")
    Image.new("1", (3, 3), 1).save(tmp_path / "b.png")
    assert load_image(tmp_path / "l.png", 3).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(tmp_path / "b.png", 3).getpixel((0, 0)) == (255, 255, 255)


# ------------------------------------------------------------------------------------------------ geometry
def test_integer_upscale_is_nearest_and_exact(tmp_path):
    arr = np.zeros((2, 2, 3), np.uint8)
    arr[0, 0] = (255, 0, 0)
    arr[1, 1] = (0, 0, 255)
    p = tmp_path / "px.png"
    Image.fromarray(arr).save(p)
    out = np.asarray(load_image(p, 8))
    assert out.shape == (8, 8, 3)
    assert (out[:4, :4] == (255, 0, 0)).all() and (out[4:, 4:] == (0, 0, 255)).all() and (out[:4, 4:] == 0).all()


def test_downscale_is_antialiased():
    checker = np.indices((64, 64)).sum(axis=0) % 2 * 255
    img = Image.fromarray(np.stack([checker] * 3, axis=2).astype(np.uint8))
    small = np.asarray(resize_square(img, 16)).astype(int)
    assert small.shape == (16, 16, 3)
    assert np.abs(small[2:-2, 2:-2] - 127.5).max() < 20  # averaged grey, not aliased black/white
    assert resize_square(img, 64) is img
    assert resize_square(img, 48).size == (48, 48)  # non-integer cases still give the size
    assert resize_square(img, 100).size == (100, 100)
    with pytest.raises(ValueError, match="resample"):
        resize_square(img, 32, resample="magic")


def test_non_square_is_padded_not_distorted(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(p)
    out = load_image(p, 40)
    assert out.size == (40, 40)
    assert out.getpixel((20, 20)) == (255, 0, 0)
    assert out.getpixel((20, 3)) == (255, 255, 255) and out.getpixel((20, 36)) == (255, 255, 255)
    assert out.getpixel((0, 11)) == (255, 0, 0) and out.getpixel((39, 28)) == (255, 0, 0)
    assert np.asarray(load_image(p, 40, background=(0, 0, 0)))[0].max() == 0


def test_crop_to_content_bbox_margin_and_square(tmp_path):
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (10, 30, 21, 51))  # an 11 x 21 black box on transparency
    p = tmp_path / "sprite.png"
    img.save(p)
    rgb = load_image(p, None)
    assert content_bbox(rgb) == (10, 30, 21, 51)
    assert content_bbox(Image.new("RGB", (5, 5), (255, 255, 255))) is None
    cropped = crop_content(rgb, margin=0.1)
    pad = round(0.1 * 21)
    assert cropped.size == (21 + 2 * pad, 21 + 2 * pad)
    assert content_bbox(cropped) == (pad + 5, pad, pad + 5 + 11, pad + 21)  # centred horizontally
    out = load_image(p, 32, crop_to_content=True)
    assert out.size == (32, 32)
    box = content_bbox(out)
    assert box[3] - box[1] > 25  # the sprite now fills most of the height (was 21/64)
    blank = Image.new("RGB", (6, 4), (255, 255, 255))
    assert crop_content(blank).size == (6, 6)


# ------------------------------------------------------------------------------------------------ tensors
def test_pil_tensor_round_trip_and_clamp():
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5)
    t = pil_to_tensor(img)
    assert t.dtype == torch.float32 and t.shape == (3, 4, 4)
    assert t.min() >= -1 and t.max() <= 1
    assert pil_to_tensor(Image.new("RGB", (1, 1), (0, 255, 0))).flatten().tolist() == [-1.0, 1.0, -1.0]
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(img))
    clamped = tensor_to_pil(torch.tensor([3.0, -3.0, 0.0]).view(1, 3, 1, 1))
    assert clamped.getpixel((0, 0)) == (255, 0, 128)
    with pytest.raises(ValueError, match=r"\[3,H,W\]"):
        tensor_to_pil(torch.zeros(4, 2, 2))


def test_image_dataset_is_picklable(tmp_path):
    ts = quiet_load(write_course(tmp_path, keys=("m1_WALK",), color=RED_HALF))
    ds = pickle.loads(pickle.dumps(ImageDataset(ts, 8)))
    assert len(ds) == 2
    x = ds[0]
    assert x.shape == (3, 8, 8)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 127 / 127.5 - 1, 127 / 127.5 - 1]), atol=0.01)


# ------------------------------------------------------------------------------------------------ tables
def test_image_table_from_report_and_paths(tmp_path):
    root = write_course(tmp_path, keys=("m1_WALK",), frames=3)
    Image.new("P", (8, 4)).save(root / "train" / "m1_WALK_9.png")
    ts = quiet_load(root)
    rows = image_table(ts)
    assert rows[0] == {"width": 16, "height": 16, "mode": "RGBA", "count": 3}
    assert rows[1] == {"width": 8, "height": 4, "mode": "P", "count": 1}
    assert image_table(ts.report) == rows
    assert image_table([e.path for e in ts.examples]) == rows
    assert image_table(quiet_load(root, check=False)) == rows
    assert problem(ts.report, "non_square").path.name == "m1_WALK_9.png"
    summary = ts.report.summary()
    assert "4 image files" in summary and "4 usable" in summary


# ------------------------------------------------------------------------------------------------ test.json
def test_read_test_prompts_in_order(tmp_path):
    p = tmp_path / "test.json"
    p.write_text(json.dumps({"k2": {"text_prompt": "a red blob walking", "image_name": "0002.png"},
                             "k1": {"text_prompt": "a blue blob", "image_name": "0001.png"}}))
    prompts = read_test_prompts(p)
    assert [(t.key, t.text_prompt, t.image_name) for t in prompts] == [
        ("k2", "a red blob walking", "0002.png"), ("k1", "a blue blob", "0001.png")]


@pytest.mark.parametrize("content,needles", [
    ('{"k1": {"text_prompt": "a", "image_name": "1.png"},,}', ["line 1, column"]),
    ("", ["empty"]),
    ("{}", ["no prompts"]),
    ("[]", ["expected a JSON object"]),
    ('{"k1": {"image_name": "1.png"}}', ["'k1'", "'text_prompt' is missing"]),
    ('{"k1": {"text_prompt": "a"}}', ["'k1'", "'image_name' is missing"]),
    ('{"k1": {"text_prompt": 5, "image_name": "1.png"}}', ["'k1'", "must be a string"]),
    ('{"k1": {"text_prompt": "a", "image_name": "1.jpg"}}', ["'k1'", "ending in .png"]),
    ('{"k1": {"text_prompt": "a", "image_name": "../1.png"}}', ["'k1'", "plain file name"]),
    ('{"k1": {"text_prompt": "a", "image_name": "1.png"}, "k2": {"text_prompt": "b", "image_name": "1.png"}}',
     ["'k1'", "'k2'", "'1.png'", "own file name"]),
])
def test_read_test_prompts_errors_name_file_key_and_fix(tmp_path, content, needles):
    p = tmp_path / "test.json"
    p.write_text(content)
    with pytest.raises(DataError) as err:
        read_test_prompts(p)
    msg = str(err.value)
    assert str(p) in msg
    for needle in needles:
        assert needle in msg


def test_read_test_prompts_missing_file(tmp_path):
    with pytest.raises(DataError, match="test.json not found"):
        read_test_prompts(tmp_path / "test.json")
