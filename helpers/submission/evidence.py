"""Is a difference between two settings evidence? A paired bootstrap over the held-out prompts.

A settings pick scores every candidate on the same prompts from the same seeds, so the honest question is not
"which number is larger" but "would the order survive drawing other prompts?". :func:`paired_bootstrap` resamples
the prompts with replacement and returns the interval of the mean per-prompt difference; a candidate replaces the
incumbent only when that interval lies wholly on its better side. With 32 prompts scored 1/0, one or two images
(3-6 points) sit well inside the interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Difference", "per_prompt", "paired_bootstrap"]


@dataclass(frozen=True)
class Difference:
    """``mean`` of (candidate - incumbent) over ``n`` prompts and its ``level`` interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    level: float

    def beyond_noise(self, higher_is_better: bool = True) -> bool:
        """True when the whole interval says the candidate is better."""
        return self.low > 0 if higher_is_better else self.high < 0

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def per_prompt(per_image: Mapping[str, float]) -> dict[str, float]:
    """Per-image scores averaged per prompt: ``<stem>__<k>.png`` (several images of one prompt) count as one."""
    groups: dict[str, list[float]] = defaultdict(list)
    for name, value in per_image.items():
        groups[str(name).rsplit(".", 1)[0].split("__")[0]].append(float(value))
    return {key: float(np.mean(values)) for key, values in groups.items()}


def paired_bootstrap(candidate: Mapping[str, float], incumbent: Mapping[str, float], *, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0) -> Difference | None:
    """The mean per-prompt difference ``candidate - incumbent`` over the prompts both scored, with a percentile
    bootstrap interval (prompts resampled with replacement, ``n_boot`` times, seeded). None: fewer than 2 shared
    prompts (nothing to resample)."""
    a, b = per_prompt(candidate), per_prompt(incumbent)
    keys = sorted(a.keys() & b.keys())
    if len(keys) < 2:
        return None
    diff = np.array([a[k] - b[k] for k in keys])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(float(diff.mean()), float(low), float(high), len(keys), level)
