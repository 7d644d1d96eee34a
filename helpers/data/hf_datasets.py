"""Hugging Face ``datasets`` as a data source: a ``save_to_disk`` folder, parquet files, or a hub id.

Sources (detected by :func:`datasets_kind`, read with the ``datasets`` library itself):

- a folder written by ``Dataset.save_to_disk`` (``state.json`` + ``dataset_info.json``), or by
  ``DatasetDict.save_to_disk`` (``dataset_dict.json``: its ``"train"`` split is used);
- a ``.parquet`` file, or a folder of them (``load_dataset("parquet", data_dir=...)``: file names such as
  ``train-*.parquet`` / ``test-*.parquet`` pick the split as on the hub, otherwise every file is training data);
- a hub id ``owner/name`` that is not a local path (``load_dataset(id, split="train")``; online, or in the HF cache).

The image column must hold images (an ``Image`` feature, or raw image bytes); the caption column text or a list
of texts (a list gives several captions, of which training picks one at random, as diffusers' text-to-image
script does).

Everything downstream (the latent cache, the demo VAE, held-out splits, scoring) reads images by file path, so
:func:`materialise` writes the rows once as an imagefolder under ``work_dir / "<name>-<hash>"``::

    train/<row>.png          the row's image (PNG bytes as stored; other formats re-encoded as PNG)
    train/metadata.jsonl     {"file_name": "<row>.png", "text": ".." | [..], "row": <row>}
    source.json              what it was made from, and the rows that were skipped (and why)

The hash covers the source files (relative paths, sizes, modification times) or, for a hub dataset, its
fingerprint, and the two column names: changing either makes a new copy, re-running reuses the old one. The copy
is written atomically (:func:`helpers.paths.atomic_folder`); the source is only read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from helpers.progress import tqdm

from helpers.paths import atomic_folder

from .errors import DataError
from .images import ALPHA_MODES, MAX_PIXELS, to_rgb

# `datasets` (and pyarrow) are imported inside the functions that read a datasets source: they take seconds to
# import, and only that source needs them.

MATERIALISED_VERSION = 1  # bump when the materialised layout changes: every source is then copied again
MANIFEST = "source.json"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]*[\w-]")  # owner/name
_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


@dataclass(frozen=True)
class Materialised:
    """A datasets source copied as an imagefolder: where, from what, and which rows were skipped."""

    folder: Path  # holds train/ (images + metadata.jsonl) and source.json
    source: str  # the original source, described ("save_to_disk folder /data/sprites")
    location: str  # the path or hub id as given
    n_rows: int
    problems: tuple[tuple[str, str], ...]  # (kind, message) of every skipped row


def datasets_kind(source: str | Path) -> str | None:
    """"save_to_disk", "dataset_dict", "parquet" or "hub" when ``source`` is a datasets source, else None.

    Only looks at files (nothing is loaded); a hub id is any ``owner/name`` that is not a local path.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return "parquet" if path.suffix.lower() == ".parquet" else None
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            return "dataset_dict"
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return "save_to_disk"
        return "parquet" if next(path.rglob("*.parquet"), None) is not None else None
    return "hub" if HUB_ID.fullmatch(str(source)) else None


def _describe(kind: str, location: str) -> str:
    what = {"save_to_disk": "save_to_disk folder", "dataset_dict": "DatasetDict folder (its train split)",
            "parquet": "parquet " + ("folder" if Path(location).is_dir() else "file"), "hub": "hub dataset"}[kind]
    return f"{what} {location}"


# --------------------------------------------------------------------------------------------------- loading
@contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """``datasets``' own progress bars on or off for the block (restored afterwards)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    if show:
        datasets.enable_progress_bars()
    else:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        (datasets.disable_progress_bars if was_disabled else datasets.enable_progress_bars)()


def _load(kind: str, location: str, cache_dir: Path | None):
    """The training ``Dataset`` of a source, read by the ``datasets`` library. DataError naming it on failure."""
    import datasets

    try:
        if kind in ("save_to_disk", "dataset_dict"):
            ds = datasets.load_from_disk(str(Path(location).expanduser()))
        elif kind == "parquet":
            path = Path(location).expanduser()
            where = {"data_dir": str(path)} if path.is_dir() else {"data_files": str(path)}
            ds = datasets.load_dataset("parquet", **where, cache_dir=str(cache_dir) if cache_dir else None)
        else:
            ds = datasets.load_dataset(location, split="train")
    except Exception as err:
        if kind == "hub":
            raise DataError(f"{location}: no such folder or file here, and the Hugging Face hub cannot load it as a "
                            f"dataset id ({type(err).__name__}: {err}). Check the path, or go online once (the "
                            "dataset is then in the Hugging Face cache).") from err
        if _holds_no_rows(kind, location):  # the datasets library cannot load a source of 0 rows
            raise _empty(_describe(kind, location)) from err
        raise DataError(f"{_describe(kind, location)}: the datasets library cannot read it ({type(err).__name__}: "
                        f"{err}). Write it again with save_to_disk / to_parquet, or check the path.") from err
    if isinstance(ds, (datasets.DatasetDict, dict)):
        if "train" not in ds:
            raise DataError(f"{_describe(kind, location)}: has no 'train' split (splits: {', '.join(ds) or 'none'}). "
                            "Save the training rows as the 'train' split, or save that split alone.")
        ds = ds["train"]
    return ds


def _holds_no_rows(kind: str, location: str) -> bool:
    """True when a local source has no rows at all (parquet metadata; a save_to_disk folder without data files)."""
    path = Path(location).expanduser()
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
            return sum(pq.read_metadata(f).num_rows for f in files) == 0
        state = path / "train" / "state.json" if kind == "dataset_dict" else path / "state.json"
        return json.loads(state.read_text(encoding="utf-8"))["_data_files"] == []
    except Exception:  # unreadable: let the datasets library's own error stand
        return False


def _empty(described: str) -> DataError:
    return DataError(f"{described}: the dataset is empty (0 rows). Add rows (an image and a caption each) or pass "
                     "the right source.")


def _feature_name(feature: Any) -> str:
    return type(feature).__name__ if isinstance(feature, dict) else repr(feature)


def _columns(ds) -> str:
    return ", ".join(f"{name} ({_feature_name(f)})" for name, f in ds.features.items()) or "none"


def _is_text(feature: Any) -> bool:
    from datasets import Value

    return isinstance(feature, Value) and feature.dtype in ("string", "large_string")


def _check_columns(ds, described: str, image_column: str, caption_column: str) -> None:
    """DataError naming the source when the dataset is empty or a column is missing or of the wrong type."""
    from datasets import Image as ImageFeature
    from datasets import LargeList, List, Value

    for column, what in ((image_column, "image_column"), (caption_column, "caption_column")):
        if column not in ds.features:
            raise DataError(f"{described}: no column {column!r} (the {what}); its columns are {_columns(ds)}. "
                            f"Pass {what}=<one of them>.")
    image = ds.features[image_column]
    raw = (isinstance(image, Value) and image.dtype in ("binary", "large_binary")) or (
        isinstance(image, dict) and "bytes" in image)
    if not (isinstance(image, ImageFeature) or raw):
        hint = (" (file paths?): cast it with ds.cast_column(column, datasets.Image()) and save the dataset again"
                if _is_text(image) else "")
        raise DataError(f"{described}: the image column {image_column!r} is {_feature_name(image)}, not images"
                        f"{hint}. Pass image_column=<the column of images>; its columns are {_columns(ds)}.")
    caption = ds.features[caption_column]
    if not (_is_text(caption) or (isinstance(caption, (List, LargeList)) and _is_text(caption.feature))):
        raise DataError(f"{described}: the caption column {caption_column!r} is {_feature_name(caption)}, not text "
                        f"or a list of texts. Pass caption_column=<the column of captions>; its columns are "
                        f"{_columns(ds)}.")
    if len(ds) == 0:
        raise _empty(described)


# --------------------------------------------------------------------------------------------------- rows
def _captions(cell: Any) -> tuple[str, ...] | None:
    """A caption cell as captions (a list: several, unique, in order); None when there is none."""
    if isinstance(cell, str):
        return (cell.strip(),)
    if isinstance(cell, list) and cell and all(isinstance(c, str) for c in cell):
        return tuple(dict.fromkeys(c.strip() for c in cell))
    return None


def _png(cell: Any, row: int, described: str) -> bytes:
    """The PNG bytes of an image cell (``{"bytes", "path"}``); DataError naming the row when it cannot be used."""
    if not isinstance(cell, dict) or (cell.get("bytes") is None and not cell.get("path")):
        raise DataError(f"{described}, row {row}: no image (empty cell). Fill it or drop the row.")
    data = cell.get("bytes")
    if data is None:
        try:
            data = Path(cell["path"]).read_bytes()
        except OSError as err:
            raise DataError(f"{described}, row {row}: the image file {cell['path']} cannot be read ({err}). "
                            "Embed the images (cast to datasets.Image() and save the dataset again).") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise DataError(f"{described}, row {row}: image too large ({im.width}x{im.height} > "
                                    f"{MAX_PIXELS} pixels). Shrink it or drop the row.")
                im.load()
                if im.format == "PNG":
                    return data
                if im.mode not in _PNG_MODES:
                    im = im.convert("RGBA") if im.mode in ALPHA_MODES else to_rgb(im)
                out = io.BytesIO()
                im.save(out, format="PNG")
                return out.getvalue()
    except DataError:
        raise
    except Exception as err:  # UnidentifiedImageError, truncated data, decompression bomb...
        raise DataError(f"{described}, row {row}: the image cannot be decoded ({type(err).__name__}: {err}). "
                        "Replace it or drop the row.") from err


def _write_rows(ds, folder: Path, described: str, image_column: str, caption_column: str,
                progress: bool) -> list[tuple[str, str]]:
    """Write every usable row as ``train/<row>.png`` + a metadata line; return (kind, message) of skipped rows."""
    from datasets import Image as ImageFeature

    rows = ds.select_columns([image_column, caption_column]).cast_column(image_column, ImageFeature(decode=False))
    train = folder / "train"
    train.mkdir()
    width = max(6, len(str(len(rows) - 1)))
    problems: list[tuple[str, str]] = []
    lines = []
    iterator = enumerate(rows)
    if progress and len(rows) > 500:
        iterator = tqdm(iterator, total=len(rows), desc=f"copying {len(rows)} images", unit="img")
    for i, row in iterator:
        captions = _captions(row[caption_column])
        if captions is None:
            problems.append(("no_caption", f"{described}, row {i}: no caption in {caption_column!r} (got "
                                           f"{row[caption_column]!r}); fill it or drop the row"))
            continue
        try:
            png = _png(row[image_column], i, described)
        except DataError as err:
            problems.append(("unreadable", str(err)))
            continue
        name = f"{i:0{width}d}.png"
        (train / name).write_bytes(png)
        text = captions[0] if len(captions) == 1 else list(captions)
        lines.append(json.dumps({"file_name": name, "text": text, "row": i}, ensure_ascii=False))
    (train / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return problems


# --------------------------------------------------------------------------------------------------- copy
def _files_fingerprint(path: Path) -> str:
    """Relative path, size and modification time of every file of a local source."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        stat = p.stat()
        rel = p.name if p == path else p.relative_to(path).as_posix()
        h.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _name(kind: str, location: str) -> str:
    raw = location.replace("/", "--") if kind == "hub" else Path(location).expanduser().resolve().stem
    return re.sub(r"[^\w.-]+", "_", raw).strip("._") or "dataset"


def _read_manifest(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(manifest, dict) and manifest.get("version") == MATERIALISED_VERSION
    return manifest if ok and (folder / "train" / "metadata.jsonl").is_file() else None


def _result(folder: Path, manifest: dict) -> Materialised:
    return Materialised(folder=folder, source=manifest["source"], location=manifest["location"],
                        n_rows=int(manifest["n_rows"]), problems=tuple(tuple(p) for p in manifest["problems"]))


def materialise(source: str | Path, *, image_column: str = "image", caption_column: str = "text",
                work_dir: str | Path | None = None, progress: bool = True) -> Materialised:
    """Copy a datasets source once as an imagefolder under ``work_dir`` (reused while the source and the column
    names are unchanged). Raises DataError naming the source for a missing path, a missing or wrongly typed
    column, an empty dataset or no usable row; rows that cannot be used are skipped and listed."""
    location = str(source)
    kind = datasets_kind(source)
    if kind is None:
        raise DataError(f"{location}: not a Hugging Face datasets source (a save_to_disk folder, a .parquet file or "
                        "a folder of them, or a hub id owner/name). Check the path.")
    described = _describe(kind, location)
    if work_dir is None:
        raise DataError(f"{described}: a datasets source is copied once as image files, and work_dir says where "
                        "(the profile passes <outputs>/datasets). Pass work_dir=<a folder under your outputs>.")
    work_dir = Path(work_dir)
    ds = None
    if kind == "hub":
        with _progress_bars(progress):
            ds = _load(kind, location, None)
        fingerprint = f"hub:{location}:{ds._fingerprint}"
    else:
        fingerprint = f"{Path(location).expanduser().resolve()}:{_files_fingerprint(Path(location).expanduser())}"
    settings = {"version": MATERIALISED_VERSION, "source": fingerprint, "image_column": image_column,
                "caption_column": caption_column}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = work_dir / f"{_name(kind, location)}-{key}"
    manifest = _read_manifest(folder)
    if manifest is not None:
        return _result(folder, manifest)
    work_dir.mkdir(parents=True, exist_ok=True)
    # load_dataset("parquet") converts the files to arrow in a cache: a temporary one here, removed below
    cache_dir = Path(tempfile.mkdtemp(prefix=".hf-cache-", dir=work_dir)) if kind == "parquet" else None
    try:
        with _progress_bars(progress):
            ds = ds if ds is not None else _load(kind, location, cache_dir)
        _check_columns(ds, described, image_column, caption_column)
        manifest = {"version": MATERIALISED_VERSION, "source": described, "location": location, "kind": kind,
                    "image_column": image_column, "caption_column": caption_column, "n_rows": len(ds)}
        try:
            with atomic_folder(folder, replace=True) as tmp:
                problems = _write_rows(ds, tmp, described, image_column, caption_column, progress)
                if len(problems) == len(ds):
                    raise DataError(f"{described}: no usable row ({len(ds)} rows, all skipped):\n  "
                                    + "\n  ".join(m for _, m in problems[:20]))
                manifest["problems"] = problems
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        except FileExistsError:  # another process copied the same source at the same time: use its copy
            if _read_manifest(folder) is None:
                raise
    finally:
        del ds  # the parquet arrow files are memory-mapped: release them before removing the cache
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return _result(folder, _read_manifest(folder))
