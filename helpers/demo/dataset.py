"""The offline demo data set: pixel-art monsters, generated deterministically, in exactly the course format.

::

    root/train/<monsterID>_<ACTION>_<frame>.png   64x64 RGBA sprites on a transparent background
    root/train_info.json   {"<monsterID>_<ACTION>": {"given_description": [..], "action_description": ".."}}
    root/test.json         {"0000": {"text_prompt": "..", "image_name": "0000.png"}, ...}
    root/test_reference/   one reference sprite per test prompt, named by its image_name (demo only: the
                           course keeps its references hidden; these let the workbook score submissions locally)
    root/.demo_dataset.json  the stamp: generator version and parameters (what makes a folder "ours")

Each species is a named colour x a body shape (slime, golem, ghost, ...) plus one or two features (horns,
wings, a sword, ...). Colour and shape are the most visible traits, so a small model trained for minutes can
learn them from the text. Every species has five actions (idle, walk, attack, hurt, jump); one of them is held
out of ``train/`` (rotating over the species) and asked for in ``test.json``, together with some seen pairs, so
the test measures whether a model composes a species with an action it never saw it do.

A training caption is one ``given_description`` + " " + the ``action_description``; the test prompts are
written the same way (``helpers.data.make_caption`` is the one place that joins them).

The species and their words are :mod:`helpers.demo.species`; the sprites are drawn by :mod:`helpers.demo.sprites`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from helpers.data import make_caption
from helpers.paths import atomic_folder

from .species import ACTION_DESCRIPTIONS, ACTIONS, N_SPECIES, demo_species
from .sprites import GRID, render_sprite

GENERATOR_VERSION = 1  # bump whenever the drawing or the files change: ensure_demo_dataset then regenerates
STAMP_NAME = ".demo_dataset.json"
TEST_REFERENCE_DIR = "test_reference"
MANAGED = ("train", "train_info.json", "test.json", TEST_REFERENCE_DIR, STAMP_NAME)  # all else is kept (vae/)

FULL = {"n_species": N_SPECIES, "n_frames": 4}
SMOKE = {"n_species": 8, "n_frames": 2}

# ------------------------------------------------------------------------------------------------ data set
def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _stamp(n_species: int, n_frames: int, seed: int, size: int) -> dict:
    """What identifies a generated set; ``ensure_demo_dataset`` regenerates when any of it changes."""
    return {"generator": "helpers.demo.dataset", "version": GENERATOR_VERSION,
            "params": {"n_species": n_species, "n_frames": n_frames, "seed": seed, "size": size},
            "caption_join": make_caption("<given>", "<action>")}


def make_demo_dataset(root: str | Path, *, n_species: int = FULL["n_species"], n_frames: int = FULL["n_frames"],
                      seed: int = 0, size: int = 64) -> Path:
    """Write the demo set into ``root`` (which must not exist or be empty) and return ``root``.

    Same arguments, same bytes. ``train/`` holds ``n_species`` x 4 actions x ``n_frames`` sprites (the fifth
    action of each species is held out). ``test.json`` asks for every held-out (species, action) pair plus seen
    pairs, 1.6 x ``n_species`` prompts rounded up to a multiple of 8 (64 for the full set, 16 for the smoke set);
    its reference sprites (frame 0) go to ``test_reference/``. The stamp file, written last, also records which
    test key shows which ``<monsterID>_<ACTION>`` pair. Prefer :func:`ensure_demo_dataset`, which reuses an
    up-to-date set and replaces an outdated one atomically.
    """
    root = Path(root)
    if n_frames < 1 or size < GRID:
        raise ValueError(f"need n_frames >= 1 and size >= {GRID}, got n_frames={n_frames}, size={size}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; make_demo_dataset writes only into a new "
                              "or empty folder (ensure_demo_dataset replaces an outdated demo set)")
    species = demo_species(n_species, seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    train_info: dict[str, dict] = {}
    for sp in species:
        for action in ACTIONS:
            if action == sp.held_out:
                continue
            key = f"{sp.id}_{action}"
            train_info[key] = {"given_description": list(sp.descriptions),
                               "action_description": ACTION_DESCRIPTIONS[action]}
            for frame in range(n_frames):
                render_sprite(sp, action, frame, n_frames, size).save(root / "train" / f"{key}_{frame}.png")
    _write_json(root / "train_info.json", train_info)

    rng = np.random.default_rng([seed, 2])
    held = [(sp, sp.held_out) for sp in species]
    seen = [(sp, a) for sp in species for a in ACTIONS if a != sp.held_out]
    n_seen = min(8 * math.ceil(1.6 * len(species) / 8) - len(held), len(seen))
    pairs = held + [seen[i] for i in sorted(rng.choice(len(seen), size=n_seen, replace=False))]
    order = rng.permutation(len(pairs))
    test: dict[str, dict] = {}
    test_pairs: dict[str, str] = {}
    (root / TEST_REFERENCE_DIR).mkdir()
    for index, j in enumerate(order):
        sp, action = pairs[j]
        key = f"{index:04d}"
        given = sp.descriptions[int(rng.integers(len(sp.descriptions)))]
        test[key] = {"text_prompt": make_caption(given, ACTION_DESCRIPTIONS[action]), "image_name": f"{key}.png"}
        test_pairs[key] = f"{sp.id}_{action}"
        render_sprite(sp, action, 0, n_frames, size).save(root / TEST_REFERENCE_DIR / f"{key}.png")
    _write_json(root / "test.json", test)

    stamp = _stamp(n_species, n_frames, seed, size)
    stamp.update(n_train_images=len(train_info) * n_frames, n_test_prompts=len(test),
                 held_out={sp.id: sp.held_out for sp in species}, test_pairs=test_pairs)
    _write_json(root / STAMP_NAME, stamp)
    return root


def _read_stamp(root: Path) -> dict | None:
    """The stamp of ``root``: None without one; ``{}`` when it is there but unreadable (ours, but broken)."""
    path = root / STAMP_NAME
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def demo_test_pairs(root: str | Path) -> dict[str, str] | None:
    """``{test key: "<monsterID>_<ACTION>"}`` of a generated demo set (None for other data).

    A pair whose key is missing from ``train_info.json`` was held out of training: scores on those prompts measure
    whether a model composes a species with an action it never saw that species do.
    """
    stamp = _read_stamp(Path(root))
    return dict(stamp["test_pairs"]) if stamp and isinstance(stamp.get("test_pairs"), dict) else None


def _is_current(root: Path, stamp: dict | None, wanted: dict) -> bool:
    """The stamp matches ``wanted`` and the files it promises are all there."""
    if not stamp or any(stamp.get(k) != v for k, v in wanted.items()):
        return False
    train = root / "train"
    return ((root / "train_info.json").is_file() and (root / "test.json").is_file() and train.is_dir()
            and sum(1 for p in train.iterdir() if p.suffix == ".png") == stamp.get("n_train_images"))


class _FinishedElsewhere(Exception):
    """Raised inside ensure_demo_dataset's atomic folder to drop our copy when another process finished first."""


def ensure_demo_dataset(root: str | Path, smoke: bool = False, seed: int = 0) -> Path:
    """The demo set in ``root``: reused when its stamp is current, else generated (a few seconds).

    ``smoke=True`` makes the small set (8 species x 4 actions x 2 frames) instead of the full one (40 x 4 x 4).
    The new set is written into a temporary sibling folder and moved into place (:func:`helpers.paths.atomic_folder`),
    so ``root`` never holds half a set; other entries of an outdated ``root`` (such as the demo VAE in ``root/vae``)
    are kept. A non-empty ``root`` without the stamp file is not ours and is never touched: that raises
    ``FileExistsError``.
    """
    root = Path(root)
    params = dict(SMOKE if smoke else FULL, seed=seed, size=64)
    wanted = _stamp(**params)
    stamp = _read_stamp(root)
    if _is_current(root, stamp, wanted):
        return root
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a folder; the demo data set needs a folder there")
    if stamp is None and root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and has no {STAMP_NAME}, so it is not a generated demo data set and is left alone. "
            "Pass another folder as data_dir, or empty or remove this one to generate the demo set there.")
    try:
        with atomic_folder(root, replace=True) as tmp:
            make_demo_dataset(tmp, **params)
            if _is_current(root, _read_stamp(root), wanted):
                raise _FinishedElsewhere
            if root.exists():
                for entry in root.iterdir():  # carry over what is not ours to regenerate (e.g. vae/)
                    if entry.name not in MANAGED:
                        os.replace(entry, tmp / entry.name)
    except _FinishedElsewhere:  # another process wrote the same set first: keep it (atomic_folder removed ours)
        pass
    return root
