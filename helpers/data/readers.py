"""The readers of every data source, and the data check (the records they fill are :mod:`helpers.data.records`).

Formats (detected by :func:`load_train_set` / :func:`check_dataset`):

- **course**: ``root/train/<monsterID>_<ACTION>_<frame>.png`` and ``root/train_info.json``
  ``{"<monsterID>_<ACTION>": {"given_description": [..], "action_description": ".."}}``. The key of an image is its
  file stem without the last ``_<frame>`` (``stem.rsplit("_", 1)[0]``; monster IDs may contain underscores). Its
  captions are ``make_caption(g, action)`` for every given description ``g`` (training picks one at random).
- **imagefolder**: ``root/metadata.jsonl`` (or ``root/train/metadata.jsonl``), one JSON object a line,
  ``{"file_name": "<path relative to the metadata file>", "text": ".." | [..]}``. The key is ``file_name`` without
  its extension (the file stem for a flat folder).
- **datasets**: a Hugging Face ``datasets`` source (a ``save_to_disk`` folder, parquet files, a hub id) with an
  image column and a caption column; copied once as an imagefolder under ``work_dir`` and read from there
  (:mod:`helpers.data.hf_datasets`). Its key is the row number; rows that cannot be used are skipped with a report.

Policies (nothing disappears silently):

- **Unusable files are skipped with a report**: 0-byte, not an image, truncated/corrupt, over
  ``helpers.data.images.MAX_PIXELS``, an image whose key has no caption, a ``file_name`` missing on disk.
  :func:`load_train_set` warns with a summary that names every skipped file (up to 20 per kind, then a count;
  ``report.table()`` has them all).
- **Unusual images are loaded correctly and listed as notes**: palette (P), grey+alpha (LA), 16-bit, CMYK, other
  modes, non-square images. Caption keys without any image are *warnings* (nothing lost, but suspicious).
- **Structural errors raise** :class:`DataError` (a ``ValueError``) naming the file (and line/column or key) and the
  fix: malformed or wrongly structured ``train_info.json``/``metadata.jsonl``/``test.json``, a missing folder, an
  empty data set.

Speed: checking reads headers (``Image.open`` is lazy) and, for PNG, ``verify()`` (walks the chunks and checks their
CRCs — catches truncated and corrupt files without decompressing the pixels); other formats are fully decoded.
About 0.3 ms per 256 px sprite (one core), i.e. ~15 s for the course's 43k images; a progress bar shows above 2,000.

Image files are opened and decoded by :mod:`helpers.data.images` (``load_image``: the same for training and scoring).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from helpers.progress import tqdm

from .errors import DataError
from .hf_datasets import datasets_kind, materialise
from .images import SIXTEEN_BIT_MODES, ImageFileError, open_image
from .records import NOTE, WARNING, DataReport, Example, Problem, TestPrompt, TrainSet, make_caption

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_MODE_NOTES = {
    "P": "palette image (P), converted through RGBA",
    "PA": "palette image with alpha (PA), converted through RGBA",
    "LA": "grey + alpha image (LA), alpha composited on the background",
    "L": "greyscale image (L), converted to RGB",
    "1": "1-bit image, converted to RGB",
    "CMYK": "CMYK image, converted to RGB",
    "I;16": "16-bit image, scaled to 8 bits (value / 257)",
}


# --------------------------------------------------------------------------------------------------- JSON
def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found. Put it there (see data/README.md) or pass the right folder.")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}). Save it as UTF-8 JSON.") from err


def _load_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    if not text.strip():
        raise DataError(f"{path}: the file is empty. It must hold a JSON object; restore it from the course data.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}. "
                        "Fix that spot (often a missing comma, quote or bracket) or restore the file.") from err


def read_train_info(path: str | Path) -> dict[str, tuple[str, ...]]:
    """``train_info.json`` as ``{key: captions}``; raises DataError on any structural problem."""
    path = Path(path)
    info = _load_json(path, "train_info.json")
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object {{\"<monsterID>_<ACTION>\": {{...}}}}, "
                        f"got a {type(info).__name__}. Restore the course's train_info.json.")
    if not info:
        raise DataError(f"{path}: the object is empty (no caption entries). Restore the course's train_info.json.")
    out: dict[str, tuple[str, ...]] = {}
    fix = ('each entry must look like {"given_description": ["..", ..], "action_description": ".."}; '
           "fix or remove that entry")
    for key, entry in info.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: key {key!r}: expected an object, got {type(entry).__name__}; {fix}.")
        given = entry.get("given_description")
        action = entry.get("action_description")
        if given is None:
            raise DataError(f"{path}: key {key!r}: 'given_description' is missing; {fix}.")
        if not isinstance(given, list):
            raise DataError(f"{path}: key {key!r}: 'given_description' must be a list of strings, "
                            f"got {type(given).__name__}; {fix}.")
        if not given:
            raise DataError(f"{path}: key {key!r}: 'given_description' is an empty list; {fix}.")
        bad = [g for g in given if not isinstance(g, str)]
        if bad:
            raise DataError(f"{path}: key {key!r}: 'given_description' holds a non-string {bad[0]!r}; {fix}.")
        if action is None:
            raise DataError(f"{path}: key {key!r}: 'action_description' is missing; {fix}.")
        if not isinstance(action, str):
            raise DataError(f"{path}: key {key!r}: 'action_description' must be a string, "
                            f"got {type(action).__name__}; {fix}.")
        out[str(key)] = tuple(dict.fromkeys(make_caption(g, action) for g in given))  # unique, in order
    return out


def json_line_object(path: Path, n: int, line: str, fix: str) -> dict:
    """Line ``n`` of a JSON-lines file as an object; DataError naming the file, the line (and column) and ``fix``."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {n}, column {err.colno}: malformed JSON ({err.msg}); {fix}.") from err
    if not isinstance(obj, dict):
        raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}; {fix}.")
    return obj


def read_metadata_jsonl(path: str | Path) -> list[tuple[int, str, tuple[str, ...]]]:
    """``metadata.jsonl`` as ``[(line_number, file_name, captions)]``; raises DataError naming file and line."""
    path = Path(path)
    text = _read_text(path, "metadata.jsonl")
    rows = []
    fix = 'each line must be a JSON object like {"file_name": "0001.png", "text": "a caption"}'
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        obj = json_line_object(path, n, line, fix)
        name = obj.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}, line {n}: 'file_name' is missing or not a string; {fix}.")
        text_field = obj.get("text")
        if isinstance(text_field, str):
            caps = (text_field.strip(),)
        elif isinstance(text_field, list) and text_field and all(isinstance(t, str) for t in text_field):
            caps = tuple(dict.fromkeys(t.strip() for t in text_field))
        else:
            raise DataError(f"{path}, line {n} ({name}): 'text' is missing or not a string / non-empty list of "
                            f"strings; {fix}.")
        rows.append((n, name.strip(), caps))
    if not rows:
        raise DataError(f"{path}: no entries (the file is empty). Add one JSON line per image; {fix}.")
    return rows


def prompt_list(prompts) -> list[TestPrompt]:
    """``prompts`` as a list of ``TestPrompt``: a test.json-style file (:func:`read_test_prompts`) or any sequence."""
    return read_test_prompts(prompts) if isinstance(prompts, (str, Path)) else list(prompts)


def read_test_prompts(path: str | Path) -> list[TestPrompt]:
    """``test.json`` ``{key: {"text_prompt": .., "image_name": "<name>.png"}}`` as a list, in file order.

    Raises DataError (naming the file, the key and the fix) on malformed JSON, an empty file or object, a missing or
    non-string field, an image_name that is not a plain ``.png`` file name, or an image_name used twice.
    """
    path = Path(path)
    data = _load_json(path, "test.json")
    fix = 'each entry must look like "<key>": {"text_prompt": "..", "image_name": "<name>.png"}'
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of prompts, got a {type(data).__name__}; {fix}.")
    if not data:
        raise DataError(f"{path}: holds no prompts (empty object); restore the course's test.json.")
    prompts: list[TestPrompt] = []
    seen: dict[str, str] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise DataError(f"{path}: key {key!r}: expected an object, got {type(entry).__name__}; {fix}.")
        for name in ("text_prompt", "image_name"):
            if name not in entry:
                raise DataError(f"{path}: key {key!r}: '{name}' is missing; {fix}.")
            if not isinstance(entry[name], str):
                raise DataError(f"{path}: key {key!r}: '{name}' must be a string, "
                                f"got {type(entry[name]).__name__}; {fix}.")
        image_name = entry["image_name"].strip()
        if not image_name.lower().endswith(".png") or image_name.lower() == ".png":
            raise DataError(f"{path}: key {key!r}: image_name {image_name!r} must be a file name ending in .png "
                            "(the submission is PNG); fix that entry.")
        if "/" in image_name or "\\" in image_name or image_name.startswith("."):
            raise DataError(f"{path}: key {key!r}: image_name {image_name!r} must be a plain file name "
                            "(no folders, not hidden); fix that entry.")
        if image_name in seen:
            raise DataError(f"{path}: image_name {image_name!r} is used by both key {seen[image_name]!r} and key "
                            f"{key!r}; each prompt needs its own file name. Fix one of them.")
        seen[image_name] = str(key)
        prompts.append(TestPrompt(key=str(key), text_prompt=entry["text_prompt"], image_name=image_name))
    return prompts


# --------------------------------------------------------------------------------------------------- checking
def _check_image(path: Path) -> tuple[tuple[int, int, str] | None, list[Problem]]:
    """Header read + verify (PNG) or full decode (other formats). Returns ((w, h, mode) or None, problems)."""
    try:
        im = open_image(path)
    except ImageFileError as err:
        return None, [Problem(path, err.kind, str(err))]
    try:
        with im:
            w, h, mode = im.width, im.height, im.mode
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except Exception as err:
        return None, [Problem(path, "truncated", f"{path}: truncated or corrupt image ({type(err).__name__}: "
                                                 f"{err}). Delete it or copy it again.")]
    notes = []
    mode_key = "I;16" if mode in SIXTEEN_BIT_MODES else mode
    if mode_key not in ("RGB", "RGBA"):
        note = _MODE_NOTES.get(mode_key, f"{mode} image, converted to RGB")
        notes.append(Problem(path, "mode", f"{path}: {note}", NOTE))
    if w != h:
        notes.append(Problem(path, "non_square", f"{path}: {w}x{h} is not square; padded with the background",
                             NOTE))
    return (w, h, mode), notes


def _image_files(folder: Path, report: DataReport, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (sorted; ``recursive``: also in its sub-folders, as imagefolder does); other
    files (and, when not recursive, sub-folders) are listed in the report as notes."""
    files = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        p = Path(entry.path)
        if entry.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(p)
        elif entry.is_dir() and recursive:
            files.extend(_image_files(p, report, recursive=True))
        elif p.name != "metadata.jsonl":
            what = "folder" if entry.is_dir() else "file that is not an image (by extension)"
            report.problems.append(Problem(p, "ignored", f"{p}: {what}, ignored", NOTE))
    return files


def detect_format(source: str | Path) -> tuple[str, Path]:
    """("course", root), ("imagefolder", folder of metadata.jsonl) or ("datasets", source) for a Hugging Face
    ``datasets`` source (:func:`helpers.data.hf_datasets.datasets_kind`); DataError naming the path otherwise."""
    root = Path(source)
    if root.is_dir() and (root / "train_info.json").is_file():
        if not (root / "train").is_dir():
            raise DataError(f"{root}: has train_info.json but no train/ folder of images. Put the course images in "
                            f"{root / 'train'}.")
        return "course", root
    for folder in (root, root / "train"):
        if root.is_dir() and (folder / "metadata.jsonl").is_file():
            return "imagefolder", folder
    if datasets_kind(source) is not None:
        return "datasets", root
    if not root.exists():
        raise DataError(f"{root}: no such folder or file. Put the data there (see data/README.md) or pass the right "
                        "path.")
    raise DataError(f"{root}: not a data set. Expected the course format (train_info.json + train/), a Hugging "
                    "Face imagefolder (metadata.jsonl with file_name and text, in the folder or in train/), or a "
                    "Hugging Face datasets source (a save_to_disk folder, or .parquet files).")


def _course_candidates(root: Path, report: DataReport) -> list[tuple[Path, str, tuple[str, ...]]]:
    """(path, key, captions) of every course image that has captions; the others are reported."""
    info = read_train_info(root / "train_info.json")
    report.n_caption_keys = len(info)
    files = _image_files(root / "train", report)
    report.n_image_files = len(files)
    candidates, used_keys = [], set()
    for p in files:
        key = p.stem.rsplit("_", 1)[0]  # <monsterID>_<ACTION>_<frame>: the frame is after the last "_"
        if key not in info:
            report.problems.append(Problem(
                p, "no_caption", f"{p}: key {key!r} has no entry in {root / 'train_info.json'} (images are named "
                "<monsterID>_<ACTION>_<frame>.png); add the entry or remove the image"))
            continue
        used_keys.add(key)
        candidates.append((p, key, info[key]))
    for key in info:
        if key not in used_keys:
            report.problems.append(Problem(
                root / "train_info.json", "no_images",
                f"{root / 'train_info.json'}: key {key!r} has no image in {root / 'train'} "
                f"(expected {key}_<frame>.png); its captions are unused", WARNING))
    return candidates


def _imagefolder_candidates(folder: Path, report: DataReport) -> list[tuple[Path, str, tuple[str, ...]]]:
    """(path, key, captions) of every image listed in ``metadata.jsonl``; missing and unlisted files are reported."""
    meta = folder / "metadata.jsonl"
    rows = read_metadata_jsonl(meta)
    report.n_caption_keys = len(rows)
    by_name: dict[str, tuple[Path, list[str]]] = {}
    for n, name, caps in rows:
        p = folder / name
        if name in by_name:
            by_name[name][1].extend(caps)
            report.problems.append(Problem(p, "duplicate", f"{meta}, line {n}: {name} is listed again; its "
                                                           "captions are merged", NOTE))
            continue
        if not p.is_file():
            report.problems.append(Problem(p, "missing_file", f"{meta}, line {n}: file_name {name!r} does not "
                                                              f"exist ({p}); add the image or remove the line"))
            continue
        by_name[name] = (p, list(caps))
    listed = {p.resolve() for p, _ in by_name.values()}
    files = _image_files(folder, report, recursive=True)
    for p in files:
        if p.resolve() not in listed:
            line = f'{{"file_name": "{p.name}", "text": ".."}}'
            report.problems.append(Problem(p, "no_caption", f"{p}: not listed in {meta}; add a line {line} or "
                                                            "remove it"))
    report.n_image_files = len(set(files) | {p for p, _ in by_name.values()})
    return [(p, Path(name).with_suffix("").as_posix(), tuple(dict.fromkeys(caps)))
            for name, (p, caps) in sorted(by_name.items())]


def _scan(root: Path, fmt: str, folder: Path, check: bool, progress: bool) -> tuple[list[Example], DataReport]:
    """The usable examples of a course or imagefolder data set, and the report (images opened when ``check``)."""
    report = DataReport(root=root, format=fmt, checked_images=check)
    candidates = (_course_candidates(root, report) if fmt == "course" else _imagefolder_candidates(folder, report))
    examples: list[Example] = []
    iterator: Iterable = candidates
    if check and progress and len(candidates) > 2000:
        iterator = tqdm(candidates, desc=f"checking {len(candidates)} images", unit="img")
    for p, key, caps in iterator:
        if check:
            stats, problems = _check_image(p)
            report.problems.extend(problems)
            if stats is None:
                continue
            report.image_stats[stats] += 1
        examples.append(Example(path=p, key=key, captions=caps))
    report.n_examples = len(examples)
    return examples, report


def _read(source: str | Path, check: bool, progress: bool, image_column: str, caption_column: str,
          work_dir: str | Path | None) -> tuple[str, Path, list[Example], DataReport]:
    """(format, root, examples, report) of any source; a datasets source is first copied as an imagefolder
    (:func:`helpers.data.hf_datasets.materialise`) and read from there, with its skipped rows in the report."""
    fmt, folder = detect_format(source)
    if fmt != "datasets":
        examples, report = _scan(Path(source), fmt, folder, check, progress)
        return fmt, Path(source), examples, report
    copy = materialise(source, image_column=image_column, caption_column=caption_column, work_dir=work_dir,
                       progress=progress)
    sub_fmt, sub_folder = detect_format(copy.folder)
    examples, report = _scan(copy.folder, sub_fmt, sub_folder, check, progress)
    report.format, report.source = "datasets", copy.source
    report.n_image_files = report.n_caption_keys = copy.n_rows
    report.problems[:0] = [Problem(Path(copy.location), kind, message) for kind, message in copy.problems]
    return "datasets", copy.folder, examples, report


def check_dataset(source: str | Path, *, progress: bool = True, image_column: str = "image",
                  caption_column: str = "text", work_dir: str | Path | None = None) -> DataReport:
    """Check a data set (any source) without loading it: every image's header (and PNG chunk CRCs), every
    caption entry. Structural errors raise DataError; everything else is in the report. The other arguments are
    those of :func:`load_train_set`."""
    return _read(source, True, progress, image_column, caption_column, work_dir)[3]


def load_train_set(source: str | Path, *, check: bool = True, verbose: bool = True, progress: bool = True,
                   image_column: str = "image", caption_column: str = "text",
                   work_dir: str | Path | None = None) -> TrainSet:
    """Read a data set into a :class:`TrainSet`: a course folder, an imagefolder, or a Hugging Face ``datasets``
    source (a ``save_to_disk`` folder, parquet files, a hub id; see :mod:`helpers.data.hf_datasets`).

    ``check=True`` opens every image (see :func:`check_dataset`) and skips unusable ones; ``check=False`` only reads
    the captions and lists the files (fast; a bad image then raises DataError when it is loaded). Skipped files and
    warnings are reported with ``warnings.warn`` (the summary names each file); ``verbose`` also prints a one-line
    count. Raises DataError when no usable example is left.

    A datasets source needs ``image_column`` / ``caption_column`` (a caption cell may be a list of captions) and
    ``work_dir``: its images are copied there once (``<work_dir>/<name>-<hash>/``, reused afterwards) and the
    TrainSet's ``root`` is that copy; ``report.source`` names the original.
    """
    fmt, root, examples, report = _read(source, check, progress, image_column, caption_column, work_dir)
    where = report.source or root
    if not examples:
        raise DataError(f"{where}: the data set is empty: {report.n_image_files} image files, none usable.\n"
                        f"{report.summary()}\nAdd images (and their captions) or fix the problems above.")
    if not report.ok:
        warnings.warn(report.summary(), stacklevel=2)
    if verbose:
        n_skip = len(report.skipped)
        print(f"Loaded {len(examples)} images with {len({e.key for e in examples})} keys from {where} ({fmt} format)"
              + (f"; skipped {n_skip} files (see the warning / trainset.report)" if n_skip else ""))
    return TrainSet(root=root, format=fmt, examples=examples, report=report)


def image_table(items: TrainSet | DataReport | Iterable[str | Path]) -> list[dict]:
    """Counts of (width, height, mode) as rows ``{"width", "height", "mode", "count"}``, most frequent first.

    A checked TrainSet/DataReport uses the headers already read; a list of paths (or an unchecked TrainSet) reads
    their headers now (unreadable files are counted under mode "unreadable").
    """
    stats: Counter = Counter()
    if isinstance(items, DataReport) or (isinstance(items, TrainSet) and items.report.checked_images):
        stats = (items if isinstance(items, DataReport) else items.report).image_stats
    else:
        paths = [e.path for e in items.examples] if isinstance(items, TrainSet) else [Path(p) for p in items]
        for p in paths:
            try:
                with open_image(p) as im:
                    stats[(im.width, im.height, im.mode)] += 1
            except DataError:
                stats[(0, 0, "unreadable")] += 1
    return [{"width": w, "height": h, "mode": m, "count": c}
            for (w, h, m), c in sorted(stats.items(), key=lambda kv: (-kv[1], kv[0]))]
