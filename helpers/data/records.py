"""What a data set is once read: its examples (image + captions), the report of how it was read, test prompts,
and the caption rule. Every reader (:mod:`helpers.data.readers`) fills these records.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

SKIP, WARNING, NOTE = "skip", "warning", "note"


@dataclass(frozen=True)
class Example:
    """One training image and the captions it may be trained with."""

    path: Path
    key: str
    captions: tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    """Something found while checking a data set. ``severity``: "skip" (file not used), "warning", "note"."""

    path: Path
    kind: str
    message: str
    severity: str = SKIP


@dataclass
class DataReport:
    """What :func:`check_dataset` found. ``ok`` is True when nothing was skipped and nothing is suspicious."""

    root: Path
    format: str  # "course", "imagefolder" or "datasets"
    n_image_files: int = 0  # image files found (before skipping); datasets: rows
    n_examples: int = 0  # usable images
    n_caption_keys: int = 0  # caption entries (course: train_info keys; imagefolder: metadata lines)
    problems: list[Problem] = field(default_factory=list)
    image_stats: Counter = field(default_factory=Counter)  # (width, height, mode) -> count, readable images only
    checked_images: bool = True  # False: load_train_set(check=False) did not open the images
    source: str = ""  # datasets: the original source (``root`` is its copy as an imagefolder)

    @property
    def ok(self) -> bool:
        return all(p.severity == NOTE for p in self.problems)

    @property
    def skipped(self) -> list[Path]:
        return [p.path for p in self.problems if p.severity == SKIP]

    def of_kind(self, kind: str) -> list[Problem]:
        return [p for p in self.problems if p.kind == kind]

    def _name(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def table(self, severity: str | None = None) -> list[dict]:
        """Every problem as a dict (file, kind, severity, message): ready for pandas or a notebook table."""
        return [{"file": self._name(p.path), "kind": p.kind, "severity": p.severity, "message": p.message}
                for p in self.problems if severity is None or p.severity == severity]

    def summary(self, max_files: int = 20) -> str:
        """A few lines: counts, then every skipped file (``max_files`` per kind), warnings and notes."""
        where = f"{self.source} (images copied to {self.root})" if self.source else f"in {self.root}"
        files = "rows" if self.source else "image files"
        lines = [f"{self.format} data set {where}: {self.n_image_files} {files}, "
                 f"{self.n_examples} usable, {self.n_caption_keys} caption entries"
                 + ("" if self.checked_images else " (images not opened: check=False)")]
        titles = {SKIP: "SKIPPED", WARNING: "WARNING", NOTE: "note"}
        for severity in (SKIP, WARNING, NOTE):
            by_kind: dict[str, list[Problem]] = {}
            for p in self.problems:
                if p.severity == severity:
                    by_kind.setdefault(p.kind, []).append(p)
            for kind, probs in by_kind.items():
                lines.append(f"  {titles[severity]} {kind} ({len(probs)}):")
                shown = probs if severity != NOTE else probs[: max(1, max_files // 4)]
                for p in shown[:max_files]:
                    lines.append(f"    {p.message}")
                if len(probs) > min(len(shown), max_files):
                    lines.append(f"    ... and {len(probs) - min(len(shown), max_files)} more (see report.table())")
        if self.ok:
            lines.append("  no files skipped, no warnings")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class TrainSet:
    """The usable examples of a data set, and the report of how they were read."""

    root: Path  # the data folder (datasets: its copy as an imagefolder; ``report.source`` names the original)
    format: str  # "course", "imagefolder" or "datasets"
    examples: list[Example]
    report: DataReport

    def __len__(self) -> int:
        return len(self.examples)

    def keys(self) -> list[str]:
        """The distinct keys (course: ``<monsterID>_<ACTION>``), sorted."""
        return sorted({e.key for e in self.examples})

    def distinct_captions(self) -> list[str]:
        """Every caption once, sorted; always includes "" (the unconditional caption)."""
        return sorted({c for e in self.examples for c in e.captions} | {""})

    def by_key(self) -> dict[str, list[Example]]:
        groups: dict[str, list[Example]] = {}
        for e in self.examples:
            groups.setdefault(e.key, []).append(e)
        return groups

    def without_keys(self, keys: Iterable[str], *, strict: bool = False) -> TrainSet:
        """A copy without the examples of ``keys`` (held-out splits). ``strict``: unknown keys raise KeyError."""
        drop = set(keys)
        if strict:
            unknown = sorted(drop - set(self.keys()))
            if unknown:
                raise KeyError(f"keys not in the data set {self.root}: {unknown[:10]}"
                               + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""))
        return replace(self, examples=[e for e in self.examples if e.key not in drop])


@dataclass(frozen=True)
class TestPrompt:
    """One entry of ``test.json``: the image ``image_name`` is to be generated from ``text_prompt``."""

    __test__ = False  # not a pytest test class

    key: str
    text_prompt: str
    image_name: str


# --------------------------------------------------------------------------------------------------- captions
def make_caption(given: str, action: str) -> str:
    """The one place that joins a given description and an action description: ``"{given} {action}"``, stripped.

    When the given description ends without punctuation and the action description starts a new sentence (a capital
    letter), a full stop goes between them: "an emoji of a blue book" + "It belongs to..." reads "an emoji of a blue
    book. It belongs to...", not "...blue book It belongs...".
    """
    given, action = str(given).strip(), str(action).strip()
    if given and action[:1].isupper() and given[-1].isalnum():
        given += "."
    return f"{given} {action}".strip()


def split_key(key: str) -> tuple[str, str]:
    """``(monster_id, action)`` of a course key ``<monsterID>_<ACTION>``, split at the LAST underscore (monster
    IDs may contain underscores: ``"m_2_IDLE"`` → ``("m_2", "IDLE")``). A key without ``_`` (e.g. an imagefolder
    file stem) is its own monster with action ``""``."""
    monster, sep, action = key.rpartition("_")
    return (monster, action) if sep else (key, "")



def data_hash(train_set: TrainSet) -> str:
    """A quick fingerprint of the training images: every example's key, file name and size (what the demo VAE and
    the judges trained on a data set are keyed by)."""
    h = hashlib.sha256()
    for ex in sorted(train_set.examples, key=lambda e: (e.key, str(e.path))):
        h.update(f"{ex.key}\0{Path(ex.path).name}\0{Path(ex.path).stat().st_size}\n".encode())
    return h.hexdigest()[:16]
