"""A held-out split: some ``monsterID_ACTION`` keys never seen in training, to score a run locally.

:func:`holdout_split` picks a seeded fraction of the training keys, writes

```
<out_dir>/test.json            # the course's test.json format: {key: {"text_prompt", "image_name"}}
<out_dir>/reference/<stem>.png # every real image of the held-out keys, prepared like training images
<out_dir>/reference_map.json   # image_name -> [reference/<stem>.png, ...]  (paths relative to <out_dir>)
<out_dir>/split.json           # what made it (seed, fraction, resolution, keys): re-running reuses it
```

and returns the training set without those keys (:meth:`helpers.data.TrainSet.without_keys`). A held-out key gets
ONE prompt (its first caption, ``Example.captions[0]``) named ``<key>.png`` (as a plain file name: an imagefolder
key ``pics/0001`` gives ``pics_0001.png``); all its frames are its reference
images (CLIP-I averages over them, see :mod:`helpers.submission.metrics`).

Train with ``split.train_set`` so that the scores of notebook 06 are on images the model has never seen.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import atomic_folder

from .errors import DataError
from .images import WHITE, load_image
from .records import TrainSet

__all__ = ["HeldOutSplit", "holdout_split", "load_split", "choose_heldout", "split_status"]

SPLIT_VERSION = 1


@dataclass
class HeldOutSplit:
    """The result of :func:`holdout_split` (or :func:`load_split`)."""

    out_dir: Path
    train_keys: list[str]
    heldout_keys: list[str]
    prompts_path: Path  # test.json-style file of the held-out prompts
    reference_dir: Path  # PNGs of the held-out keys' real images
    reference_map: dict[str, list[Path]]  # image_name -> its reference image paths
    seed: int
    fraction: float
    resolution: int
    train_set: object | None = None  # the TrainSet without the held-out keys (None from load_split)
    n_keys: int | None = None  # keys of the whole data set
    crop_to_content: bool = False  # the references were cropped to their content (as the training images)

    def summary(self) -> str:
        n_ref = sum(len(v) for v in self.reference_map.values())
        n = self.n_keys or (len(self.heldout_keys) + len(self.train_keys))
        return (f"held-out split (seed {self.seed}, fraction {self.fraction}): {len(self.heldout_keys)} of {n} keys "
                f"held out, {len(self.reference_map)} prompts, {n_ref} reference images at {self.resolution}px"
                f"{', cropped to content' if self.crop_to_content else ''} in {self.reference_dir}")


def choose_heldout(ids, fraction: float = 0.05, seed: int = 0) -> list[str]:
    """THE hold-out rule of the workbook: ``round(fraction * n)`` of the ``n`` distinct ``ids`` (at least 1, at most
    n-1), chosen with ``random.Random(seed)`` from the sorted distinct ids; returned sorted. Depends only on the set
    of ids, the fraction and the seed. The scoring split holds out keys (:func:`holdout_split`); the demo VAE and
    the demo judge hold out monsters with it."""
    distinct = sorted(set(ids))
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    if len(distinct) < 2:
        raise DataError(f"a held-out split needs at least 2 distinct ids, the training set has {len(distinct)}")
    n = min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    return sorted(random.Random(seed).sample(distinct, n))


def _fingerprint(examples) -> str:
    h = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: (e.key, str(e.path))):
        h.update(f"{ex.key}\t{Path(ex.path).name}\t{'|'.join(ex.captions)}\n".encode())
    return h.hexdigest()[:16]


def _manifest(train_set, heldout: list[str], fraction: float, seed: int, resolution: int, background,
              crop_to_content: bool) -> dict:
    return {"version": SPLIT_VERSION, "seed": seed, "fraction": fraction, "resolution": resolution,
            "background": list(background), "crop_to_content": crop_to_content, "data": str(train_set.root),
            "fingerprint": _fingerprint(train_set.examples),
            "n_keys": len({e.key for e in train_set.examples}), "heldout_keys": heldout}


def _old_manifest(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "split.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _complete(out_dir: Path, manifest: dict) -> bool:
    old = _old_manifest(out_dir)
    try:
        refs = json.loads((out_dir / "reference_map.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    same = old is not None and ({k: v for k, v in old.items() if k != "data"}
                                == {k: v for k, v in manifest.items() if k != "data"})
    return same and (out_dir / "test.json").is_file() and all((out_dir / p).is_file()
                                                              for v in refs.values() for p in v)


def _unique_name(stem: str, used: set[str]) -> str:
    """``<stem>.png`` as a plain file name (any character other than letters, digits, ``.``, ``-`` and ``_``
    becomes ``_``, e.g. the ``/`` of an imagefolder key ``pics/0001``), ``<stem>-<i>.png`` if taken; added to
    ``used``."""
    safe = re.sub(r"[^\w.-]", "_", stem).lstrip(".") or "image"
    name, i = f"{safe}.png", 1
    while name in used:
        i += 1
        name = f"{safe}-{i}.png"
    used.add(name)
    return name


def _write_split(folder: Path, heldout: dict[str, list], manifest: dict, *, resolution: int,
                 background: tuple[int, int, int], crop_to_content: bool) -> None:
    """The files of a split (see the module docstring) for ``heldout`` = {key: its examples}, into ``folder``."""
    (folder / "reference").mkdir()
    prompts, refs, names, used = {}, {}, set(), set()
    for key, examples in heldout.items():
        examples = sorted(examples, key=lambda e: str(e.path))
        image_name = _unique_name(key, names)
        prompts[key] = {"text_prompt": examples[0].captions[0], "image_name": image_name}
        refs[image_name] = []
        for ex in examples:
            name = _unique_name(Path(ex.path).stem, used)
            load_image(ex.path, resolution, background=background,
                       crop_to_content=crop_to_content).save(folder / "reference" / name)
            refs[image_name].append(f"reference/{name}")
    (folder / "test.json").write_text(json.dumps(prompts, indent=1, ensure_ascii=False), encoding="utf-8")
    (folder / "reference_map.json").write_text(json.dumps(refs, indent=1), encoding="utf-8")
    (folder / "split.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def holdout_split(train_set: TrainSet, *, out_dir: str | Path, resolution: int, fraction: float = 0.05, seed: int = 0,
                  background: tuple[int, int, int] = WHITE, crop_to_content: bool = False) -> HeldOutSplit:
    """Hold out a seeded ``fraction`` of the keys of ``train_set`` (a :class:`helpers.data.TrainSet`).

    Writes ``out_dir`` (see the module docstring) atomically; re-running with the same data, fraction, seed and
    resolution reuses the folder as it is (same files). Reference images are prepared like training images
    (:func:`helpers.data.images.load_image`: alpha composited on ``background``, cropped to their content when
    ``crop_to_content``, padded to square, resized to ``resolution``) and saved as PNG; a change of any of these
    re-prepares them (with a warning only when the held-out keys change).
    Returns a :class:`HeldOutSplit` whose ``train_set`` excludes the held-out keys.
    """
    out_dir = Path(out_dir)
    by_key: dict[str, list] = {}
    for ex in train_set.examples:
        by_key.setdefault(ex.key, []).append(ex)
    heldout = choose_heldout(by_key, fraction, seed)
    manifest = _manifest(train_set, heldout, fraction, seed, resolution, background, crop_to_content)

    if not _complete(out_dir, manifest):
        old = _old_manifest(out_dir)
        if out_dir.exists() and (old is None or old.get("heldout_keys") != heldout):
            warnings.warn(f"{out_dir}: rebuilding the held-out split (its data, seed, fraction or resolution changed, "
                          "or it was incomplete); a run trained with the old split may have seen the new held-out "
                          "keys", stacklevel=2)
        with atomic_folder(out_dir, replace=True) as tmp:
            _write_split(tmp, {k: by_key[k] for k in heldout}, manifest, resolution=resolution,
                         background=tuple(background), crop_to_content=crop_to_content)
    split = load_split(out_dir)
    split.train_set = train_set.without_keys(heldout)
    split.train_keys = sorted(set(by_key) - set(heldout))
    return split


def load_split(out_dir: str | Path) -> HeldOutSplit:
    """Read a split written by :func:`holdout_split` (``train_keys`` and ``train_set`` are not known: empty/None)."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / "split.json").read_text(encoding="utf-8"))
        raw = json.loads((out_dir / "reference_map.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"{out_dir}: no held-out split there ({Path(err.filename).name} missing); make one with "
                        "helpers.data.split.holdout_split") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{out_dir}: a split file is malformed JSON ({err}); delete the folder and re-run") from None
    return HeldOutSplit(out_dir=out_dir, train_keys=[], heldout_keys=list(manifest["heldout_keys"]),
                        prompts_path=out_dir / "test.json", reference_dir=out_dir / "reference",
                        reference_map={k: [out_dir / p for p in v] for k, v in raw.items()},
                        seed=int(manifest["seed"]), fraction=float(manifest["fraction"]),
                        resolution=int(manifest["resolution"]), n_keys=manifest.get("n_keys"),
                        crop_to_content=bool(manifest.get("crop_to_content", False)))


def split_status(split: HeldOutSplit, run_dir: str | Path) -> tuple[str, str]:
    """Did the training run in ``run_dir`` see the held-out keys? ``(status, explanation)``.

    ``status``: "excluded" (the run's latent cache holds none of them: the scores are on unseen prompts),
    "included" (it trained on some of them: the scores are optimistic), or "unknown" (the run does not record
    which cache it used: ``train_config.json`` has no ``cache_dir``). Reads ``<run_dir>/train_config.json`` and the
    ``index.json`` of its cache folder.
    """
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "unknown", f"{run_dir} has no readable train_config.json"
    cache_dir = config.get("cache_dir") if isinstance(config, dict) else None
    if not cache_dir:
        return "unknown", "the run's train_config.json does not say which latent cache it trained on (cache_dir)"
    try:
        keys = set(json.loads((Path(cache_dir) / "index.json").read_text(encoding="utf-8"))["keys"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return "unknown", f"the run's cache {cache_dir} is gone or unreadable"
    seen = sorted(set(split.heldout_keys) & keys)
    if seen:
        return "included", (f"the run trained on {len(seen)} of the {len(split.heldout_keys)} held-out keys "
                            f"(e.g. {seen[:3]}): these scores are optimistic")
    return "excluded", f"the run never saw the {len(split.heldout_keys)} held-out keys (cache {cache_dir})"
