"""Hugging Face ``datasets`` sources: save_to_disk folders, DatasetDict folders, parquet files and folders.

Each test builds its dataset with the ``datasets`` library in a temp folder (a few tiny PIL images, some RGBA/P),
reads it with :func:`helpers.data.load_train_set` and checks the captions, the pixels, the copy under ``work_dir``
(reused, rebuilt when a column changes) and that the source is left byte-identical; bad input names the source.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from helpers.data import DataError, check_dataset, load_train_set  # noqa: E402
from helpers.data.hf_datasets import datasets_kind  # noqa: E402
from helpers.data.images import to_rgb  # noqa: E402


def _images() -> list[Image.Image]:
    """Four small images: RGBA with half alpha, a palette image, RGB non-square, greyscale + alpha."""
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 255, (8, 8, 4), dtype=np.uint8), "RGBA")
    pal = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "RGB").quantize(8)
    rgb = Image.fromarray(rng.integers(0, 255, (6, 10, 3), dtype=np.uint8), "RGB")
    la = Image.fromarray(rng.integers(0, 255, (8, 8, 2), dtype=np.uint8), "LA")
    return [rgba, pal, rgb, la]


TEXTS = ["a red slime", "a blue golem", "a green ghost", "a grey bat"]
LISTS = [["a red slime", "red slime monster"], ["a blue golem"], ["green ghost", "a green ghost"], ["grey bat"]]


def _dataset(images=None, **columns):
    images = _images() if images is None else images
    cols = {"image": images, "text": TEXTS[:len(images)], "captions": LISTS[:len(images)], **columns}
    return datasets.Dataset.from_dict(cols).cast_column("image", datasets.Image())


def _digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of the file), by relative path."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _load(source, work_dir, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_train_set(source, verbose=False, progress=False, work_dir=work_dir, **kw)


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(to_rgb(img))


def _assert_same_images(train_set, originals, rows):
    """Example i holds row ``rows[i]``'s image: same mode and, composited on white, the same pixels."""
    assert len(train_set.examples) == len(rows)
    for ex, row in zip(train_set.examples, rows):
        with Image.open(ex.path) as im:
            assert im.format == "PNG" and im.mode == originals[row].mode
            np.testing.assert_array_equal(_pixels(im), _pixels(originals[row]))


# --------------------------------------------------------------------------------------------------- sources
@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """One source of every kind, built once: save_to_disk, DatasetDict, parquet file, folder of parquet files."""
    root = tmp_path_factory.mktemp("sources")
    ds = _dataset()
    ds.save_to_disk(str(root / "disk"))
    other = _dataset(_images()[:1], text=["a test-split caption"], captions=[["test"]])
    datasets.DatasetDict({"train": ds, "test": other}).save_to_disk(str(root / "dict"))
    ds.to_parquet(str(root / "one.parquet"))
    (root / "pq").mkdir()
    ds.select([0, 1]).to_parquet(str(root / "pq" / "part-0.parquet"))
    ds.select([2, 3]).to_parquet(str(root / "pq" / "part-1.parquet"))
    return {"disk": root / "disk", "dict": root / "dict", "parquet": root / "one.parquet", "pq": root / "pq"}


@pytest.mark.parametrize("kind, expected", [("disk", "save_to_disk"), ("dict", "dataset_dict"),
                                            ("parquet", "parquet"), ("pq", "parquet")])
def test_each_source_gives_its_captions_and_images(sources, tmp_path, kind, expected):
    source = sources[kind]
    before = _digest(source)
    assert datasets_kind(source) == expected
    ts = _load(source, tmp_path / "work")
    assert ts.format == "datasets" and ts.report.ok
    assert [e.captions for e in ts.examples] == [(t,) for t in TEXTS]  # DatasetDict: the train split only
    _assert_same_images(ts, _images(), range(4))
    assert ts.root.parent == tmp_path / "work" and all(ts.root in e.path.parents for e in ts.examples)
    assert str(source) in ts.report.source and str(source) in ts.report.summary()
    listed = _load(source, tmp_path / "work", caption_column="captions")
    assert [e.captions for e in listed.examples] == [tuple(dict.fromkeys(c)) for c in LISTS]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == sorted([ts.root.name, listed.root.name])
    assert _digest(source) == before  # the source is only read


def test_the_copy_is_reused_and_rebuilt_when_a_column_changes(sources, tmp_path):
    work = tmp_path / "work"
    first = _load(sources["disk"], work)
    stamps = {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}
    again = _load(sources["disk"], work)
    assert again.root == first.root and {p: p.stat().st_mtime_ns for p in again.root.rglob("*")} == stamps
    other = _load(sources["disk"], work, caption_column="captions")
    assert other.root != first.root and other.root.is_dir()
    ds = datasets.load_from_disk(str(sources["disk"])).rename_column("image", "picture")
    ds.save_to_disk(str(tmp_path / "renamed"))
    renamed = _load(tmp_path / "renamed", work, image_column="picture")
    _assert_same_images(renamed, _images(), range(4))
    assert stamps == {p: p.stat().st_mtime_ns for p in first.root.rglob("*")}  # the first copy is untouched


def test_a_changed_source_is_copied_again(tmp_path):
    _dataset().save_to_disk(str(tmp_path / "d"))
    first = _load(tmp_path / "d", tmp_path / "work")
    _dataset(_images()[:2]).save_to_disk(str(tmp_path / "d2"))
    _dataset(_images()[:2]).save_to_disk(str(tmp_path / "d"))  # the same folder, new contents
    second = _load(tmp_path / "d", tmp_path / "work")
    assert second.root != first.root and len(second) == 2


def test_check_dataset_reads_a_datasets_source(sources, tmp_path):
    report = check_dataset(sources["parquet"], progress=False, work_dir=tmp_path / "work")
    assert report.format == "datasets" and report.n_examples == 4 and report.n_image_files == 4
    assert {p.kind for p in report.problems} == {"mode", "non_square"}  # P, LA and 6x10 are notes, not skips


# --------------------------------------------------------------------------------------------------- bad input
def test_an_undecodable_row_is_skipped_with_its_row_index(tmp_path):
    good = io.BytesIO()
    _images()[0].save(good, format="PNG")
    truncated = good.getvalue()[: len(good.getvalue()) // 2]
    cells = [{"bytes": good.getvalue(), "path": None}, {"bytes": b"not an image", "path": None},
             {"bytes": truncated, "path": None}, {"bytes": good.getvalue(), "path": None}]
    ds = datasets.Dataset.from_dict({"image": cells, "text": TEXTS}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "d"))
    before = _digest(tmp_path / "d")
    with pytest.warns(UserWarning) as caught:
        ts = load_train_set(tmp_path / "d", verbose=False, progress=False, work_dir=tmp_path / "work")
    assert [e.captions[0] for e in ts.examples] == [TEXTS[0], TEXTS[3]]
    skipped = ts.report.of_kind("unreadable")
    assert [p.message.split(":")[0] for p in skipped] == [f"save_to_disk folder {tmp_path / 'd'}, row {i}"
                                                          for i in (1, 2)]
    warning = "\n".join(str(w.message) for w in caught)
    assert "row 1" in warning and "row 2" in warning and str(tmp_path / "d") in warning
    again = _load(tmp_path / "d", tmp_path / "work")  # the reused copy still reports the skipped rows
    assert again.root == ts.root and [p.message for p in again.report.of_kind("unreadable")] == [
        p.message for p in skipped]
    assert _digest(tmp_path / "d") == before


def test_rows_without_a_caption_are_skipped_with_a_report(tmp_path):
    ds = _dataset(captions=[["a"], [], ["c"], ["d"]])
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ts = _load(tmp_path / "d.parquet", tmp_path / "work", caption_column="captions")
    assert len(ts) == 3 and ts.report.of_kind("no_caption")[0].message.startswith(
        f"parquet file {tmp_path / 'd.parquet'}, row 1: no caption")


def test_missing_caption_column_lists_the_columns(sources, tmp_path):
    with pytest.raises(DataError, match="no column 'caption'") as err:
        _load(sources["disk"], tmp_path / "work", caption_column="caption")
    assert str(sources["disk"]) in str(err.value)
    for column in ("image (Image", "text (Value('string'))", "captions (List(Value('string')))"):
        assert column in str(err.value)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())


def test_an_image_column_that_is_not_images_says_its_type(tmp_path):
    datasets.Dataset.from_dict({"image": ["a.png", "b.png"], "text": TEXTS[:2], "n": [1, 2]}).save_to_disk(
        str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"the image column 'image' is Value\('string'\), not images") as err:
        _load(tmp_path / "d", tmp_path / "work")
    assert str(tmp_path / "d") in str(err.value) and "cast_column" in str(err.value)
    with pytest.raises(DataError, match=r"the image column 'n' is Value\('int64'\), not images"):
        _load(tmp_path / "d", tmp_path / "work", image_column="n")
    _dataset(n=[1, 2, 3, 4]).save_to_disk(str(tmp_path / "e"))
    with pytest.raises(DataError, match=r"the caption column 'n' is Value\('int64'\), not text") as err:
        _load(tmp_path / "e", tmp_path / "work", caption_column="n")
    assert str(tmp_path / "e") in str(err.value)


def test_empty_dataset_and_no_usable_row_raise(tmp_path):
    empty = _dataset().select([])
    empty.save_to_disk(str(tmp_path / "empty"))
    empty.to_parquet(str(tmp_path / "empty.parquet"))
    for source in (tmp_path / "empty", tmp_path / "empty.parquet"):
        with pytest.raises(DataError, match="the dataset is empty") as err:
            _load(source, tmp_path / "work")
        assert str(source) in str(err.value)
    bad = datasets.Dataset.from_dict({"image": [{"bytes": b"junk", "path": None}], "text": ["x"]})
    bad.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match="no usable row") as err:
        _load(tmp_path / "bad", tmp_path / "work")
    assert "row 0" in str(err.value) and str(tmp_path / "bad") in str(err.value)


def test_missing_paths_and_missing_work_dir_name_the_source(sources, tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nothing'}: no such folder"):
        _load(tmp_path / "nothing", tmp_path / "work")
    with pytest.raises(DataError, match="no_such_owner/no_such_set: no such folder or file here, and the Hugging "
                                        "Face hub cannot load it"):
        _load("no_such_owner/no_such_set", tmp_path / "work")  # offline in the tests
    with pytest.raises(DataError, match="Pass work_dir=") as err:
        load_train_set(sources["disk"], verbose=False)
    assert str(sources["disk"]) in str(err.value)


def test_a_dataset_dict_without_a_train_split(tmp_path):
    datasets.DatasetDict({"validation": _dataset()}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="has no 'train' split \\(splits: validation\\)") as err:
        _load(tmp_path / "d", tmp_path / "work")
    assert str(tmp_path / "d") in str(err.value)
