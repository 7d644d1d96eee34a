"""Does a model follow the colour of a prompt? Pick prompts that name one colour each and read the colour a prompt
names; the demo judge (:mod:`helpers.demo.judge`) says which colour a generated sprite shows.

>>> prompts = colour_prompts(captions, n=8)               # one caption per demo colour
>>> named_colour("a small red slime")                     # 'red'

The colours default to the demo sprites' named colours (``helpers.demo.species.COLOURS``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .species import COLOURS

__all__ = ["colour_prompts", "named_colour"]


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
