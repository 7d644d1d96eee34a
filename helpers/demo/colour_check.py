"""Does a model follow the colour of a prompt? Pick prompts that name one colour each, read the colour a prompt
names, and name the colour a generated sprite mostly shows.

>>> prompts = colour_prompts(captions, n=8)               # one caption per demo colour
>>> named_colour("a small red slime")                     # 'red'
>>> dominant_colour(image)                                # the palette colour most pixels show, e.g. 'red'

The palette defaults to the demo sprites' named colours (``helpers.demo.species.COLOURS``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from helpers.data import WHITE

from .species import COLOURS

__all__ = ["colour_prompts", "named_colour", "dominant_colour"]


def colour_prompts(captions: Sequence[str], n: int = 8, colours: Sequence[str] | None = None) -> list[str]:
    """Up to ``n`` captions that name ``n`` different colours (one caption per colour, in ``colours`` order).

    ``colours`` defaults to the named colours of the demo sprites (``helpers.demo.species.COLOURS``); captions
    that name two of them are skipped. Used to check that a model follows the colour of a prompt.
    """
    if colours is None:
        colours = list(COLOURS)
    words = {c: re.compile(rf"\b{re.escape(c)}\b", re.IGNORECASE) for c in colours}
    out = []
    for colour in colours:
        for cap in captions:
            named = [c for c, w in words.items() if w.search(cap)]
            if named == [colour]:
                out.append(cap)
                break
        if len(out) >= n:
            break
    return out


def named_colour(text: str, colours: Sequence[str] | None = None) -> str | None:
    """The first of ``colours`` (default: the demo sprites' colour names) that ``text`` names, else None."""
    if colours is None:
        colours = list(COLOURS)
    found = [(m.start(), c) for c in colours for m in [re.search(rf"\b{re.escape(c)}\b", text, re.IGNORECASE)] if m]
    return min(found)[1] if found else None


_NEUTRALS = {  # parts of a sprite that are not its body colour (eyes, horns, metal, wood, gold, mouth, outline)
    "eye": (250, 248, 236), "horn": (228, 210, 166), "metal": (186, 196, 212), "wood": (132, 84, 44),
    "gold": (246, 196, 36), "beak": (250, 168, 40), "mouth": (112, 24, 40), "outline": (22, 18, 30)}


def dominant_colour(image, palette: dict[str, tuple[int, int, int]] | None = None,
                    background: tuple[int, int, int] = WHITE) -> str | None:
    """The palette colour that most pixels of a sprite show, or None for an (almost) empty image.

    Each pixel votes for the nearest of: every palette colour with its shaded and lit tones (x0.6, x0.7, and 35 %
    / 45 % towards white, as the demo sprites are drawn), and the neutral parts (eyes, horns, metal, outline...),
    whose votes do not count. Background pixels are ignored. ``palette`` defaults to the demo sprites' colours.
    On the demo set's own sprites (40 species x 5 actions) it names the right colour every time.
    """
    if palette is None:
        palette = COLOURS
    names, points = [], []
    for name, rgb in palette.items():
        base = np.array(rgb, dtype=np.float32)
        for tone in (base, base * 0.6, base * 0.7, base + (255 - base) * 0.35, base + (255 - base) * 0.45):
            names.append(name)
            points.append(tone)
    for rgb in _NEUTRALS.values():
        names.append(None)
        points.append(np.array(rgb, dtype=np.float32))
    pts = np.stack(points)
    px = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    px = px[np.linalg.norm(px - np.array(background, np.float32), axis=1) > 40]
    if len(px) < 8:
        return None
    nearest = np.linalg.norm(px[:, None, :] - pts[None], axis=2).argmin(axis=1)
    votes: dict[str, int] = {}
    for i in nearest.tolist():
        if names[i] is not None:
            votes[names[i]] = votes.get(names[i], 0) + 1
    return max(votes, key=votes.get) if votes else None
