"""The submission: one PNG per ``test.json`` entry, checked, zipped, and looked at.

- :func:`export_submission` writes ``<out_dir>/<image_name>`` for every prompt (RGB PNG, ``size`` x ``size``).
  Image ``i`` is generated from the seed :func:`seed_for` ``(prompt.key, seed)`` — derived from the prompt's KEY,
  not its position — so any single image can be regenerated alone, and re-running the export gives the same files.
  An existing non-empty folder is never mixed with a new submission: the export refuses, or with
  ``overwrite=True`` replaces it whole (the images are written to a temporary folder first, then renamed).
  The settings and per-image seeds are written beside the folder, in ``<out_dir>.json``.
- :func:`verify_submission` checks count, names, sizes and mode (every problem names its file).
- :func:`zip_submission` writes ``<out_dir>.zip`` with the PNGs at the top level of the archive.
- :func:`contact_sheet` is a labelled grid of some of the images.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from PIL import Image

from helpers.data import DataError, TestPrompt, json_line_object, read_test_prompts
from helpers.paths import atomic_folder, atomic_write
from helpers.plots import make_grid

__all__ = ["seed_for", "export_submission", "generate_folder", "regenerate_one", "verify_submission",
           "SubmissionReport", "zip_submission", "contact_sheet", "read_prompts", "read_prompt_file"]


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def seed_for(key: str, seed: int = 0) -> int:
    """The seed of the image of prompt ``key``: the first 4 bytes of ``sha256(f"{seed}:{key}")`` as a 31-bit int."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def _prompt_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of the non-blank lines of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}). Save it as UTF-8.") from err
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _jsonl_prompts(path: Path) -> list:
    """One JSON object a line: ``{"text": ..}`` (an image name is made up) or ``{"text_prompt": .., "image_name":
    ..}``; DataError naming the file and line otherwise."""
    fix = 'each line must be {"text": "a prompt"} or {"text_prompt": "a prompt", "image_name": "<name>.png"}'
    plist = []
    for n, line in _prompt_lines(path):
        obj = json_line_object(path, n, line, fix)
        text = obj.get("text_prompt", obj.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, line {n}: no prompt ('text' or 'text_prompt' missing or not a string); {fix}.")
        name = obj.get("image_name", f"prompt_{len(plist):04d}.png")
        if not isinstance(name, str):
            raise DataError(f"{path}, line {n}: 'image_name' must be a string; {fix}.")
        plist.append(TestPrompt(key=Path(name).stem, text_prompt=text.strip(), image_name=name))
    return plist


def read_prompt_file(path: str | Path) -> list:
    """The prompts of a file, as ``TestPrompt`` s, by its suffix:

    - ``.json``: the course's test.json ``{key: {"text_prompt", "image_name"}}`` (read by
      :func:`helpers.data.read_test_prompts`);
    - ``.jsonl``: one object a line, ``{"text": ..}`` or ``{"text_prompt": .., "image_name": ..}``;
    - anything else (``.txt``): one prompt a line (blank lines are skipped).

    Where there is no image name one is made up, ``prompt_<i>.png`` (``i`` counts the prompts from 0); the key of a
    prompt is its image name without ``.png`` (the seed of its image derives from it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such prompts file. Name a test.json, a .jsonl or a text file (one prompt a line).")
    if path.suffix.lower() == ".json":
        return read_test_prompts(path)
    if path.suffix.lower() == ".jsonl":
        return _jsonl_prompts(path)
    return [TestPrompt(key=f"prompt_{i:04d}", text_prompt=line.strip(), image_name=f"prompt_{i:04d}.png")
            for i, (_, line) in enumerate(_prompt_lines(path))]


def read_prompts(prompts) -> list:
    """A list of ``TestPrompt`` from a prompts file (:func:`read_prompt_file`: test.json, JSONL or text) or a list;
    checks it is non-empty, image names are unique plain ``.png`` file names and keys are unique."""
    if isinstance(prompts, (str, Path)):
        plist = read_prompt_file(prompts)
        where = str(prompts)
    else:
        plist = list(prompts)
        where = "the prompt list"
    if not plist:
        raise DataError(f"{where}: no prompts to generate")
    seen_names, seen_keys = set(), set()
    for p in plist:
        name = str(p.image_name)
        if not name or Path(name).name != name or name in (".", ".."):
            raise DataError(f"{where}: entry {p.key!r} has image_name {name!r}; it must be a plain file name")
        if Path(name).suffix.lower() != ".png":
            raise DataError(f"{where}: entry {p.key!r} has image_name {name!r}; submissions are PNG files (.png)")
        if name in seen_names:
            raise DataError(f"{where}: image_name {name!r} appears twice (entry {p.key!r}); names must be unique")
        if p.key in seen_keys:
            raise DataError(f"{where}: key {p.key!r} appears twice")
        seen_names.add(name)
        seen_keys.add(p.key)
    return plist


def _has_files(folder: Path) -> bool:
    return folder.exists() and any(folder.iterdir())


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if _has_files(out_dir):
        if not overwrite:
            raise FileExistsError(f"{out_dir} already holds files (an earlier submission?). Pass overwrite=True to "
                                  "replace it, or choose another folder; submissions are never mixed.")
        foreign = [p.name for p in out_dir.iterdir() if not (p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)]
        if foreign:
            raise FileExistsError(f"{out_dir} holds more than images ({', '.join(sorted(foreign)[:5])}); "
                                  "overwrite=True only replaces a folder of images. Choose another folder.")


def generate_folder(tti, items: Sequence[tuple[str, str, int]], out_dir: str | Path, *, size: int,
                    guidance_scale: float = 7.5, steps: int = 50, scheduler: str = "ddim",
                    batch_size: int | None = None, overwrite: bool = False, progress: bool = True
                    ) -> tuple[Path, int]:
    """Generate ``(file_name, prompt, seed)`` items into ``out_dir`` (RGB PNG, ``size`` x ``size``), atomically.

    The images go to a temporary sibling folder that replaces ``out_dir`` at the end, so ``out_dir`` never holds a
    mix of two generations or half of one. A non-empty ``out_dir`` needs ``overwrite=True`` (and may hold only
    images). Returns ``(out_dir, number of images that had to be resized)``.
    """
    out_dir = Path(out_dir)
    _check_target(out_dir, overwrite)
    resized = 0
    with atomic_folder(out_dir, replace=True) as tmp:
        images = tti.generate([t for _, t, _ in items], [s for _, _, s in items], guidance_scale=guidance_scale,
                              steps=steps, scheduler=scheduler, batch_size=batch_size, progress=progress)
        if len(images) != len(items):
            raise RuntimeError(f"the generator returned {len(images)} images for {len(items)} prompts")
        for (name, _, _), img in zip(items, images):
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.LANCZOS)
                resized += 1
            img.save(tmp / name, format="PNG")
    if resized:
        warnings.warn(f"{resized} generated image(s) were not {size}x{size} and were resized (Lanczos)", stacklevel=3)
    return out_dir, resized


def export_submission(tti, prompts, out_dir: str | Path, *, size: int, guidance_scale: float = 7.5,
                      steps: int = 50, scheduler: str = "ddim", seed: int = 0, batch_size: int | None = None,
                      overwrite: bool = False, progress: bool = True, chosen_by: dict | None = None) -> Path:
    """Generate one ``size`` x ``size`` RGB PNG per prompt into ``out_dir/<image_name>``; returns ``out_dir``.

    ``tti``: a text-to-image object with ``generate(prompts, seeds, guidance_scale=, steps=, scheduler=,
    batch_size=, progress=) -> list[PIL.Image]`` (:class:`helpers.generation.TextToImage`). ``prompts``: a prompts
    file (test.json, JSONL or text: :func:`read_prompt_file`) or a list of ``TestPrompt``. Seeds: :func:`seed_for`
    ``(key, seed)``. Images of another size are resized (Lanczos) with a warning. If ``out_dir`` holds files:
    ``FileExistsError`` unless ``overwrite=True``, which replaces the folder (never a mix of two submissions).
    Settings and seeds go to ``<out_dir>.json``, with ``chosen_by`` (how the settings were picked, e.g.
    :meth:`helpers.submission.metrics.SettingsPick.as_dict`) when given. ``batch_size`` None: the device's default.
    """
    plist = read_prompts(prompts)
    out_dir = Path(out_dir)
    seeds = [seed_for(p.key, seed) for p in plist]
    items = [(p.image_name, p.text_prompt, s) for p, s in zip(plist, seeds)]
    out_dir, resized = generate_folder(tti, items, out_dir, size=size, guidance_scale=guidance_scale, steps=steps,
                                       scheduler=scheduler, batch_size=batch_size, overwrite=overwrite,
                                       progress=progress)
    manifest = {"n_images": len(plist), "size": size, "guidance_scale": guidance_scale, "steps": steps,
                "scheduler": scheduler, "seed": seed, "seed_rule": "sha256(f'{seed}:{key}')[:4] & 0x7FFFFFFF",
                "generator": str(getattr(tti, "checkpoint", None) or type(tti).__name__), "resized": resized,
                "chosen_by": chosen_by,
                "images": {p.image_name: {"key": p.key, "seed": s, "prompt": p.text_prompt}
                           for p, s in zip(plist, seeds)}}
    atomic_write(out_dir.with_name(out_dir.name + ".json"), json.dumps(manifest, indent=1, ensure_ascii=False))
    return out_dir


@dataclass
class SubmissionReport:
    """What :func:`verify_submission` found; ``problems`` name their files."""

    folder: Path
    n_expected: int
    n_found: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.problems)

    def summary(self) -> str:
        head = (f"{self.folder}: {self.n_found} files for {self.n_expected} prompts - "
                f"{'OK' if self.ok else 'PROBLEMS'}")
        lines = [head]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): {', '.join(self.missing[:10])}"
                         + (" ..." if len(self.missing) > 10 else ""))
        if self.extra:
            lines.append(f"  not in test.json ({len(self.extra)}): {', '.join(self.extra[:10])}"
                         + (" ..." if len(self.extra) > 10 else ""))
        lines += [f"  {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more problems")
        return "\n".join(lines)

    __str__ = summary

    def raise_if_bad(self) -> SubmissionReport:
        if not self.ok:
            raise DataError(self.summary())
        return self


def verify_submission(out_dir: str | Path, prompts, size: int) -> SubmissionReport:
    """Check that ``out_dir`` holds exactly one ``size`` x ``size`` RGB PNG per prompt, named ``image_name``."""
    plist = read_prompts(prompts)
    out_dir = Path(out_dir)
    expected = [p.image_name for p in plist]
    found = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    report = SubmissionReport(folder=out_dir, n_expected=len(expected), n_found=len(found),
                              missing=sorted(set(expected) - set(found)), extra=sorted(set(found) - set(expected)))
    if not out_dir.is_dir():
        report.problems.append(f"{out_dir}: no such folder")
    for name in expected:
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            with Image.open(path) as img:
                img.load()
                if img.format != "PNG":
                    report.problems.append(f"{name}: format {img.format}, expected PNG")
                if img.mode != "RGB":
                    report.problems.append(f"{name}: mode {img.mode}, expected RGB")
                if img.size != (size, size):
                    report.problems.append(f"{name}: size {img.size[0]}x{img.size[1]}, expected {size}x{size}")
        except Exception as err:
            report.problems.append(f"{name}: unreadable ({type(err).__name__}: {err})")
    return report


def zip_submission(out_dir: str | Path, zip_path: str | Path | None = None) -> Path:
    """Zip the PNGs of ``out_dir`` (top level of the archive, sorted, fixed timestamps: the same images give the
    same zip) into ``zip_path`` (default ``<out_dir>.zip``); written atomically. Returns the zip's path."""
    out_dir = Path(out_dir)
    pngs = sorted(p for p in out_dir.iterdir()
                  if p.is_file() and p.suffix.lower() == ".png") if out_dir.is_dir() else []
    if not pngs:
        raise FileNotFoundError(f"{out_dir}: no PNG files to zip")
    zip_path = Path(zip_path) if zip_path else out_dir.with_name(out_dir.name + ".zip")
    buf = io.BytesIO()  # (a submission is a few hundred MB at most)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in pngs:
            info = zipfile.ZipInfo(p.name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, p.read_bytes())
    return atomic_write(zip_path, buf.getvalue())


def contact_sheet(out_dir: str | Path, prompts, n: int = 16, ncols: int = 8, *, start: int = 0,
                  min_tile: int = 128) -> Image.Image:
    """A labelled grid (:func:`helpers.plots.make_grid`) of ``n`` submission images with their full prompts; tiles
    smaller than ``min_tile`` pixels are enlarged (nearest neighbour) so a prompt has room to wrap."""
    plist = read_prompts(prompts)[start:start + n]
    out_dir = Path(out_dir)
    images = []
    for p in plist:
        with Image.open(out_dir / p.image_name) as img:
            images.append(img.convert("RGB"))
    return make_grid(images, ncols=ncols, labels=[p.text_prompt for p in plist], min_tile=min_tile,
                     max_label_lines=8)


def regenerate_one(tti, prompt, *, seed: int = 0, **kwargs) -> Image.Image:
    """Regenerate the image of one ``TestPrompt`` alone (same seed as in the export)."""
    return tti.generate([prompt.text_prompt], [seed_for(prompt.key, seed)], progress=False, **kwargs)[0]
