"""What a score is: :class:`MetricResult` (a number with everything needed to read it honestly), the table that
prints a list of them, and how scoring reads image files (exactly as training reads them).

The metrics themselves live in :mod:`helpers.submission.frechet` (FID and the offline latent-space stand-in),
:mod:`helpers.submission.clip_scores` (CLIP-T, CLIP-I) and :mod:`helpers.submission.metrics` (a folder of generated images scored against
its references, sweeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from helpers.data import DataError, load_image, pil_to_tensor

__all__ = ["MetricResult", "metrics_table", "print_metrics", "list_images", "load_tensors", "load_pils"]


# --------------------------------------------------------------------------------------------------- results
@dataclass
class MetricResult:
    """One score, with everything needed to read it honestly.

    ``value`` is None when the metric was skipped (``note`` says why). ``model`` names what computed the number;
    ``settings`` holds what changes the number (resolution, antialias, feature size...). ``per_image`` maps an
    image name to its own score (CLIP-T / CLIP-I), for worst/best examples. ``beside`` is a related number shown
    next to the value (e.g. CLIPScore ×100 next to the raw CLIP-T cosine).
    """

    name: str
    value: float | None
    model: str
    n_images: int
    settings: dict = field(default_factory=dict)
    note: str = ""
    per_image: dict[str, float] = field(default_factory=dict, repr=False)
    beside: str = ""
    higher_is_better: bool = True

    @property
    def skipped(self) -> bool:
        return self.value is None

    @classmethod
    def skip(cls, name: str, why: str, *, model: str = "", n_images: int = 0, settings: dict | None = None,
             higher_is_better: bool = True) -> MetricResult:
        """A result that holds no number: ``note`` = ``skipped: <why>``."""
        return cls(name=name, value=None, model=model, n_images=n_images, settings=dict(settings or {}),
                   note=f"skipped: {why}", higher_is_better=higher_is_better)

    def worst_best(self, k: int = 4) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """The ``k`` worst and ``k`` best images by their own score (per_image), worst first / best first."""
        items = sorted(self.per_image.items(), key=lambda kv: kv[1], reverse=not self.higher_is_better)
        return items[:k], items[::-1][:k]

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_image")
        return d

    def __str__(self) -> str:
        value = "—" if self.value is None else format_score(self.value, self.n_images)
        return f"{self.name}: {value} ({self.model or 'no model'}, n={self.n_images}) {self.note}".strip()


def format_score(value: float | None, n_images: int) -> str:
    """A score with the digits its number of images supports ("skipped" for None): 2 decimals under 500 images (a
    share of 32 images moves in steps of 0.03), 3 from 500 on (CLIP cosines of a full test set); values of 10 or
    more (Fréchet distances) with 1."""
    if value is None:
        return "skipped"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{2 if n_images < 500 else 3}f}"


def metrics_table(results: Sequence[MetricResult]) -> str:
    """A plain-text table: metric, value, better, model, n, settings, note (one row per result)."""
    rows = [("metric", "value", "better", "computed with", "n", "settings", "note")]
    for r in results:
        value = format_score(r.value, r.n_images)
        if r.beside:
            value += f"  [{r.beside}]"
        settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
        rows.append((r.name, value, "higher" if r.higher_is_better else "lower", r.model or "-", str(r.n_images),
                     settings or "-", r.note or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1])
        if j == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 4))
    return "\n".join(line.rstrip() for line in lines)


def print_metrics(results: Sequence[MetricResult]) -> None:
    """Print :func:`metrics_table`."""
    print(metrics_table(results))


# --------------------------------------------------------------------------------------------------- images
def list_images(source: str | Path | Sequence[str | Path]) -> list[Path]:
    """PNG/JPEG files of a folder (sorted by name), or the given list of files."""
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder of images")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not paths:
            raise DataError(f"{folder}: holds no images (.png/.jpg)")
        return paths
    paths = [Path(p) for p in source]
    if not paths:
        raise DataError("an empty list of images was given")
    return paths


def load_tensors(paths: Sequence[Path], resolution: int, background: tuple[int, int, int]) -> torch.Tensor:
    """Images as float32 [B,3,H,W] in [-1, 1], read like training (helpers.data.images.load_image)."""
    return torch.stack([pil_to_tensor(load_image(p, resolution, background=background)) for p in paths])


def load_pils(paths: Sequence[Path], resolution: int, background: tuple[int, int, int]) -> list:
    return [load_image(p, resolution, background=background) for p in paths]
