"""Captioned image sets the workbook did not generate, written in the course format (issue #19, item 3).

Two sets, each built from files that a package registry carries, rendered at ``--size`` px (64) as RGBA on a
transparent background (the readers composite it on white, as for the demo sprites):

- **glyphs**: characters of the DejaVu fonts that matplotlib bundles (``matplotlib/mpl-data/fonts/ttf``), captioned
  with their Unicode names. The monster of a key is the character (``u0041``), its action the font style
  (``sans``, ``serif``, ``mono``, ``bold``, ``oblique``); the colour, one of a few named colours, belongs to the
  character: ``u03b1_bold`` → "A red glyph of GREEK SMALL LETTER ALPHA. The glyph is set in a bold sans-serif
  font." Characters are those all five fonts have (their cmaps, read with fontTools), that have a Unicode name, are
  letters, numbers, punctuation or symbols, are not emoji (the emoji set is kept aside as a final check), draw
  visibly, and do not look exactly like a character already taken (Latin A = Greek Alpha = Cyrillic A: the first
  one wins). All of Basic Latin, then the other Unicode blocks in turn.
- **icons**: the Phosphor 1.3.0 icon font from the PyPI wheel of ``qtawesome`` (``pip download``, cached under
  ``<out>/_downloads``; Qt is not needed, the font and its name → codepoint charmap are read from the wheel). Every
  Phosphor icon comes in five weights: the monster is the icon name, the action the weight (``thin``, ``light``,
  ``regular``, ``bold``, ``fill``): ``airplane-tilt_fill`` → "A blue icon of an airplane tilt. The icon is filled
  in solid."

Each set gets ``train/<monsterID>_<ACTION>_0.png`` + ``train_info.json`` (one frame a key), a ``test.json`` of
``--n-test`` (32) keys held out of ``train/`` (each one action of a monster whose other actions are trained, as the
demo holds out one action per species) with their pictures in ``test_reference/``, ``SOURCE.md`` (packages,
versions, licences, the command) and ``outside_set.json`` (the same as data, plus which test key shows which
``<monsterID>_<ACTION>``). The set is read back with ``helpers.data.load_train_set`` before it is reported, and a
4 x 8 contact sheet with captions goes to ``<out>/<set>_sheet.png``. Same arguments and package versions, same
files.

    .venv/bin/python benchmarks/outside_sets.py --out /work/outside_sets
    .venv/bin/python benchmarks/outside_sets.py --out /tmp/outside --sets glyphs --max-images 500
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import subprocess
import sys
import textwrap
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from helpers.data import make_caption, split_key  # noqa: E402
from helpers.paths import atomic_folder  # noqa: E402

SETS = ("glyphs", "icons")
N_TEST = 32
# Colour names and RGB: the demo's (helpers.demo.species.COLOURS, not imported: that package loads diffusers), only
# those dark enough for thin strokes on white.
COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (48, 46, 56), "red": (214, 40, 40), "blue": (40, 82, 214), "green": (52, 168, 60),
    "purple": (132, 54, 194), "orange": (242, 128, 28), "brown": (128, 78, 38), "teal": (18, 128, 122),
}
PALETTE = tuple(COLOURS)

GLYPH_STYLES: dict[str, tuple[str, str]] = {  # action -> (DejaVu file in matplotlib, action_description)
    "sans": ("DejaVuSans.ttf", "The glyph is set in a regular sans-serif font."),
    "serif": ("DejaVuSerif.ttf", "The glyph is set in a serif font."),
    "mono": ("DejaVuSansMono.ttf", "The glyph is set in a monospaced font."),
    "bold": ("DejaVuSans-Bold.ttf", "The glyph is set in a bold sans-serif font."),
    "oblique": ("DejaVuSans-Oblique.ttf", "The glyph is set in an oblique sans-serif font."),
}
ICON_WEIGHTS: dict[str, tuple[str, str]] = {  # action -> (suffix of the Phosphor name, action_description)
    "thin": ("-thin", "The icon is drawn with thin lines."),
    "light": ("-light", "The icon is drawn with light lines."),
    "regular": ("", "The icon is drawn with regular lines."),
    "bold": ("-bold", "The icon is drawn with bold lines."),
    "fill": ("-fill", "The icon is filled in solid."),
}
QTAWESOME = ("qtawesome", "1.4.2")
PHOSPHOR = ("Phosphor", "1.3.0")
PHOSPHOR_FONT = "qtawesome/fonts/phosphor-1.3.0.ttf"
PHOSPHOR_CHARMAP = "qtawesome/fonts/phosphor-charmap-1.3.0.json"

# Unicode blocks the glyphs may come from. Miscellaneous Symbols (2600-26FF) and Dingbats (2700-27BF) are left out
# whole (most of their characters are emoji), and so is every code point above U+FFFF.
GLYPH_BLOCKS: tuple[tuple[int, int, str], ...] = (
    (0x0000, 0x007F, "Basic Latin"), (0x0080, 0x00FF, "Latin-1 Supplement"), (0x0100, 0x017F, "Latin Extended-A"),
    (0x0180, 0x024F, "Latin Extended-B"), (0x0250, 0x02AF, "IPA Extensions"),
    (0x02B0, 0x02FF, "Spacing Modifier Letters"), (0x0370, 0x03FF, "Greek and Coptic"), (0x0400, 0x04FF, "Cyrillic"),
    (0x0500, 0x052F, "Cyrillic Supplement"), (0x0530, 0x058F, "Armenian"), (0x10A0, 0x10FF, "Georgian"),
    (0x1D00, 0x1D7F, "Phonetic Extensions"), (0x1D80, 0x1DBF, "Phonetic Extensions Supplement"),
    (0x1E00, 0x1EFF, "Latin Extended Additional"), (0x1F00, 0x1FFF, "Greek Extended"),
    (0x2000, 0x206F, "General Punctuation"), (0x2070, 0x209F, "Superscripts and Subscripts"),
    (0x20A0, 0x20CF, "Currency Symbols"), (0x2100, 0x214F, "Letterlike Symbols"), (0x2150, 0x218F, "Number Forms"),
    (0x2190, 0x21FF, "Arrows"), (0x2200, 0x22FF, "Mathematical Operators"), (0x2300, 0x23FF, "Miscellaneous Technical"),
    (0x2400, 0x243F, "Control Pictures"), (0x2460, 0x24FF, "Enclosed Alphanumerics"), (0x2500, 0x257F, "Box Drawing"),
    (0x2580, 0x259F, "Block Elements"), (0x25A0, 0x25FF, "Geometric Shapes"),
    (0x27C0, 0x27EF, "Miscellaneous Mathematical Symbols-A"), (0x27F0, 0x27FF, "Supplemental Arrows-A"),
    (0x2800, 0x28FF, "Braille Patterns"), (0x2900, 0x297F, "Supplemental Arrows-B"),
    (0x2980, 0x29FF, "Miscellaneous Mathematical Symbols-B"), (0x2A00, 0x2AFF, "Supplemental Mathematical Operators"),
    (0x2B00, 0x2BFF, "Miscellaneous Symbols and Arrows"), (0x2C60, 0x2C7F, "Latin Extended-C"),
    (0x2E00, 0x2E7F, "Supplemental Punctuation"), (0xA700, 0xA71F, "Modifier Tone Letters"),
    (0xA720, 0xA7FF, "Latin Extended-D"), (0xFB00, 0xFB4F, "Alphabetic Presentation Forms"),
)
# Code points of those blocks that have the Unicode Emoji property (emoji-data.txt), except the keycap bases
# # * 0-9, which are ordinary text characters.
EMOJI_RANGES: tuple[tuple[int, int], ...] = (
    (0x00A9, 0x00A9), (0x00AE, 0x00AE), (0x203C, 0x203C), (0x2049, 0x2049), (0x2122, 0x2122), (0x2139, 0x2139),
    (0x2194, 0x2199), (0x21A9, 0x21AA), (0x231A, 0x231B), (0x2328, 0x2328), (0x23CF, 0x23CF), (0x23E9, 0x23F3),
    (0x23F8, 0x23FA), (0x24C2, 0x24C2), (0x25AA, 0x25AB), (0x25B6, 0x25B6), (0x25C0, 0x25C0), (0x25FB, 0x25FE),
    (0x2600, 0x27BF), (0x2934, 0x2935), (0x2B05, 0x2B07), (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55),
    (0x3030, 0x3030), (0x303D, 0x303D), (0x3297, 0x3297), (0x3299, 0x3299), (0x1F000, 0x10FFFF),
)
ARTICLE_AN_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")  # "an hourglass"
ARTICLE_A_EXCEPTIONS = ("user", "usb", "unicode", "unit", "uni", "use", "one", "once", "euro", "ufo")
SINGULAR_ENDINGS = ("ss", "us", "is", "as", "os")  # "compass", "bus", "tennis", "gas": not plurals


class SetError(RuntimeError):
    """A set could not be built; the message names what failed and what to do."""


@dataclass(frozen=True)
class Item:
    """One picture of a set: the key ``<monster>_<action>``, its captions' parts and how to draw it."""

    monster: str
    action: str
    given: tuple[str, ...]
    action_description: str
    draw: Callable[[], Image.Image] = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        """``<monster>_<action>``."""
        return make_key(self.monster, self.action)

    @property
    def captions(self) -> tuple[str, ...]:
        """The training captions of this key, as the reader forms them (``make_caption``)."""
        return tuple(make_caption(g, self.action_description) for g in self.given)


@dataclass
class BuiltSet:
    """What a set builder returns: its items and where they came from (for SOURCE.md)."""

    name: str
    items: list[Item]
    sources: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- naming rules
def make_key(monster: str, action: str) -> str:
    """The course key ``<monster>_<action>``; ``action`` must hold no ``_`` so that ``split_key`` gives both back."""
    key = f"{monster}_{action}"
    if not monster or not action or "_" in action or split_key(key) != (monster, action):
        raise ValueError(f"cannot make a course key of monster {monster!r} and action {action!r} "
                         "(both non-empty, the action without '_')")
    return key


def glyph_monster(char: str) -> str:
    """The monster ID of a character: ``u`` + its code point in lower-case hex, 4 digits at least (``u0041``)."""
    return f"u{ord(char):04x}"


def colour_of(monster: str, seed: int) -> str:
    """The colour name of a monster: a hash of (seed, monster), so it does not change when the set grows."""
    digest = hashlib.sha256(f"{seed}:{monster}".encode()).digest()
    return PALETTE[int.from_bytes(digest[:4], "big") % len(PALETTE)]


def with_article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front (by its first letter, with a few spoken exceptions: "an hourglass",
    "a user"), or bare when its first word is a plural ("folders", "arrows out line horizontal")."""
    word = phrase.strip().lower().split(" ")[0]
    if len(word) > 3 and word.endswith("s") and not word.endswith(SINGULAR_ENDINGS):
        return phrase
    if word.startswith(ARTICLE_AN_EXCEPTIONS):
        return f"an {phrase}"
    if word.startswith(ARTICLE_A_EXCEPTIONS):
        return f"a {phrase}"
    return f"an {phrase}" if word[:1] in ("a", "e", "i", "o", "u", "8") else f"a {phrase}"


def icon_phrase(name: str) -> str:
    """The words of an icon name: ``"mdi.account-circle"`` → ``"account circle"`` (prefix dropped, - and _ → space)."""
    base = name.split(".", 1)[1] if "." in name else name
    words = base.replace("_", "-").split("-")
    phrase = " ".join(w for w in words if w)
    if not phrase:
        raise ValueError(f"icon name {name!r} has no words")
    return phrase


def icon_descriptions(name: str, colour: str) -> tuple[str, ...]:
    """The given descriptions of an icon: ``("A red icon of an account circle.", "Red account circle icon.")``."""
    phrase = icon_phrase(name)
    return (f"{with_article(colour).capitalize()} icon of {with_article(phrase)}.",
            f"{colour.capitalize()} {phrase} icon.")


def glyph_descriptions(char: str, colour: str) -> tuple[str, ...]:
    """The given descriptions of a character, from its Unicode name: ``("A red glyph of LATIN CAPITAL LETTER A.",
    "The character LATIN CAPITAL LETTER A in red.")``; ValueError for a character without a name."""
    name = unicodedata.name(char, "")
    if not name:
        raise ValueError(f"U+{ord(char):04X} has no Unicode name")
    return (f"{with_article(colour).capitalize()} glyph of {name}.", f"The character {name} in {colour}.")


def is_emoji(cp: int) -> bool:
    """Whether code point ``cp`` is (or may be shown as) an emoji: see ``EMOJI_RANGES``."""
    return any(lo <= cp <= hi for lo, hi in EMOJI_RANGES)


def block_of(cp: int) -> str | None:
    """The name of the Unicode block of ``cp`` among ``GLYPH_BLOCKS`` (None: not a block glyphs come from)."""
    return next((name for lo, hi, name in GLYPH_BLOCKS if lo <= cp <= hi), None)


# --------------------------------------------------------------------------------------------------- drawing
def ink_of(font: ImageFont.FreeTypeFont, char: str) -> tuple[Image.Image, int] | None:
    """The anti-aliased coverage (mode L, cropped to the ink) of ``char`` and the y of its top relative to the
    baseline (negative: above it); None when the font draws nothing."""
    left, top, right, bottom = font.getbbox(char, anchor="ls")
    if right <= left or bottom <= top:
        return None
    pad = 2
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), char, font=font, fill=255, anchor="ls")
    box = canvas.getbbox()
    if box is None:
        return None
    return canvas.crop(box), box[1] - (pad - top)


def place(ink: Image.Image, size: int, margin: int, top: float | None) -> Image.Image:
    """``ink`` on a ``size`` x ``size`` coverage canvas: centred horizontally; its top at ``top`` (text: keeps the
    baseline; moved in when it would stick out) or centred (``top=None``); shrunk to fit inside ``margin``."""
    avail = size - 2 * margin
    w, h = ink.size
    scale = min(1.0, avail / w, avail / h)
    if scale < 1.0:
        ink = ink.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
        w, h, top = ink.width, ink.height, None
    x = (size - w) // 2
    y = (size - h) // 2 if top is None else min(max(round(top), margin), size - margin - h)
    out = Image.new("L", (size, size), 0)
    out.paste(ink, (x, y))
    return out


def colourise(coverage: Image.Image, colour: str) -> Image.Image:
    """An RGBA picture: the named colour (``COLOURS``) with ``coverage`` as its alpha."""
    out = Image.new("RGBA", coverage.size, tuple(COLOURS[colour]) + (0,))
    out.putalpha(coverage)
    return out


def text_layout(font: ImageFont.FreeTypeFont, size: int) -> tuple[int, float]:
    """(margin, baseline y) that put the font's ascent-to-descent band in the middle of a ``size`` canvas."""
    margin = max(1, round(size / 16))
    ascent, descent = font.getmetrics()
    return margin, margin + (size - 2 * margin - (ascent + descent)) / 2 + ascent


def draw_text_char(font_path: Path, char: str, size: int, colour: str) -> Image.Image:
    """``char`` in ``colour`` on a transparent ``size`` canvas, on the font's baseline (glyph pictures)."""
    font = _font(str(font_path), round(size * 0.75))
    margin, baseline = text_layout(font, size)
    found = ink_of(font, char)
    if found is None:
        raise SetError(f"{font_path.name} draws nothing for U+{ord(char):04X}")
    ink, top = found
    return colourise(place(ink, size, margin, baseline + top), colour)


def draw_icon(font_path: Path, char: str, size: int, colour: str) -> Image.Image:
    """The icon font's glyph ``char`` in ``colour``, centred on a transparent ``size`` canvas (icon pictures)."""
    margin = max(1, round(size / 16))
    found = ink_of(_font(str(font_path), size - 2 * margin), char)
    if found is None:
        raise SetError(f"{font_path.name} draws nothing for U+{ord(char):04X}")
    return colourise(place(found[0], size, margin, None), colour)


_FONTS: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    """A FreeType font, loaded once per (file, pixel size)."""
    if (path, px) not in _FONTS:
        _FONTS[(path, px)] = ImageFont.truetype(path, px)
    return _FONTS[(path, px)]


# --------------------------------------------------------------------------------------------------- writing
def choose_test(items: Sequence[Item], n_test: int, seed: int) -> list[Item]:
    """``n_test`` items to hold out of train/: one action each of ``n_test`` different monsters that keep at least
    one other action in train, the held-out action rotating over the actions (seeded)."""
    by_monster: dict[str, list[Item]] = {}
    for item in items:
        by_monster.setdefault(item.monster, []).append(item)
    eligible = sorted(m for m, group in by_monster.items() if len(group) > 1)
    if n_test > len(eligible):
        raise SetError(f"cannot hold out {n_test} test keys: only {len(eligible)} monsters have two actions or more "
                       "(raise --max-images or lower --n-test)")
    rng = np.random.default_rng([seed, 19])
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=n_test, replace=False))]
    actions = sorted({item.action for item in items})
    start, held = int(rng.integers(len(actions))), []
    for i, monster in enumerate(chosen):
        group = sorted(by_monster[monster], key=lambda it: it.action)
        wanted = actions[(start + i) % len(actions)]
        held.append(next((it for it in group if it.action == wanted), group[i % len(group)]))
    return held


def _write_json(path: Path, obj: object) -> None:
    """``obj`` as indented UTF-8 JSON (as the demo set writes its files)."""
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_course_set(root: Path, items: Sequence[Item], held_out: Sequence[Item], seed: int) -> dict[str, str]:
    """Write ``items`` into the empty folder ``root`` in the course format: ``train/<key>_0.png`` and
    ``train_info.json`` for the items not in ``held_out``; ``test.json`` (keys ``0000``..., prompts written with
    ``make_caption``, the given description picked at random) and ``test_reference/<key>.png`` for ``held_out``.
    Returns ``{test key: <monsterID>_<ACTION>}``."""
    held_keys = {it.key for it in held_out}
    if len({it.key for it in items}) != len(items):
        raise ValueError("two items share a key")
    (root / "train").mkdir(parents=True)
    train_info: dict[str, dict] = {}
    for item in sorted(items, key=lambda it: it.key):
        if item.key in held_keys:
            continue
        train_info[item.key] = {"given_description": list(item.given), "action_description": item.action_description}
        item.draw().save(root / "train" / f"{item.key}_0.png", optimize=True)
    _write_json(root / "train_info.json", train_info)
    if not held_out:
        return {}
    rng = np.random.default_rng([seed, 20])
    (root / "test_reference").mkdir()
    test, pairs = {}, {}
    for index, j in enumerate(rng.permutation(len(held_out))):
        item = held_out[int(j)]
        key = f"{index:04d}"
        given = item.given[int(rng.integers(len(item.given)))]
        test[key] = {"text_prompt": make_caption(given, item.action_description), "image_name": f"{key}.png"}
        pairs[key] = item.key
        item.draw().save(root / "test_reference" / f"{key}.png", optimize=True)
    _write_json(root / "test.json", test)
    return pairs


# --------------------------------------------------------------------------------------------------- glyphs
def glyph_fonts() -> dict[str, Path]:
    """``{style: DejaVu font file}`` from matplotlib's bundled fonts; SetError naming the missing file."""
    try:
        import matplotlib
    except ImportError as err:
        raise SetError(f"matplotlib is not installed ({err}); the glyphs use its DejaVu fonts: "
                       "pip install matplotlib, or pass --sets icons") from err
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = {style: folder / name for style, (name, _) in GLYPH_STYLES.items()}
    missing = [str(p) for p in fonts.values() if not p.is_file()]
    if missing:
        raise SetError(f"matplotlib's DejaVu fonts are missing: {', '.join(missing)}; reinstall matplotlib, "
                       "or pass --sets icons")
    return fonts


def glyph_candidates(fonts: dict[str, Path]) -> list[int]:
    """Code points that every font maps (cmap), that have a Unicode name, are a letter, number, punctuation or
    symbol, lie in ``GLYPH_BLOCKS`` and are not emoji; sorted."""
    from fontTools.ttLib import TTFont

    common: set[int] | None = None
    for path in fonts.values():
        with TTFont(str(path), lazy=True) as font:
            cmap = set(font.getBestCmap())
        common = cmap if common is None else common & cmap
    return sorted(cp for cp in common or () if unicodedata.category(chr(cp))[0] in "LNPS"
                  and unicodedata.name(chr(cp), "") and block_of(cp) and not is_emoji(cp))


def distinct_actions(pictures: dict[str, np.ndarray]) -> list[str]:
    """The actions (keys of ``pictures``, in order) whose picture differs from every earlier one's: a style that
    draws a character exactly as another style does (DejaVu Sans Oblique does not slant most symbols) is dropped,
    so that no caption names a difference the picture does not show."""
    seen: set[bytes] = set()
    kept = []
    for action, picture in pictures.items():
        digest = hashlib.sha256(np.ascontiguousarray(picture).tobytes()).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(action)
    return kept


def screen_glyphs(cps: Iterable[int], fonts: dict[str, Path], size: int) -> dict[int, list[str]]:
    """``{code point: its styles}`` for the characters that draw visibly in every style (at least ``size**2 / 340``
    pixels of half coverage: 12 at 64 px), whose sans picture differs from every earlier character's (look-alikes
    dropped: Latin A = Greek Alpha), and that look different in two styles or more (:func:`distinct_actions`)."""
    min_pixels = max(4, round(size * size / 340))
    seen: set[bytes] = set()
    kept: dict[int, list[str]] = {}
    for cp in cps:
        pictures: dict[str, np.ndarray] = {}
        for style, path in fonts.items():
            try:
                pictures[style] = np.asarray(draw_text_char(path, chr(cp), size, "black"))[..., 3]
            except SetError:
                break
        if len(pictures) < len(fonts) or min(int((p >= 128).sum()) for p in pictures.values()) < min_pixels:
            continue
        digest = hashlib.sha256(next(iter(pictures.values())).tobytes()).digest()
        styles = distinct_actions(pictures)
        if digest not in seen and len(styles) >= 2:
            seen.add(digest)
            kept[cp] = styles
    return kept


def glyph_order(cps: Iterable[int], seed: int) -> list[int]:
    """The order in which characters are taken: all of Basic Latin first, then one from each other block in turn
    (random within a block, seeded)."""
    by_block: dict[str, list[int]] = {}
    for cp in sorted(cps):
        by_block.setdefault(block_of(cp) or "", []).append(cp)
    rng = np.random.default_rng([seed, 7])
    order = by_block.pop("Basic Latin", [])
    queues = [[int(c) for c in rng.permutation(by_block[name])] for _, _, name in GLYPH_BLOCKS if name in by_block]
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def take(order: Iterable, actions_of: Callable[[Any], list[str]], max_images: int) -> list[tuple[Any, list[str]]]:
    """``(entry, its actions)`` for the first entries of ``order`` (those with two actions or more) whose pictures
    add up to at most ``max_images``."""
    taken, total = [], 0
    for entry in order:
        actions = actions_of(entry)
        if len(actions) < 2:
            continue
        if total + len(actions) > max_images:
            break
        taken.append((entry, actions))
        total += len(actions)
    return taken


def build_glyphs(downloads: Path, size: int, max_images: int, seed: int) -> BuiltSet:
    """The glyph set: characters (:func:`glyph_order`) x the DejaVu styles that draw them differently, up to
    ``max_images`` pictures (matplotlib's fonts: nothing is downloaded, ``downloads`` is unused)."""
    from fontTools.ttLib import TTFont

    fonts = glyph_fonts()
    candidates = glyph_candidates(fonts)
    usable = screen_glyphs(candidates, fonts, size)
    chars = sorted(take(glyph_order(usable, seed), usable.__getitem__, max_images))
    items = []
    for cp, styles in chars:
        monster, colour = glyph_monster(chr(cp)), colour_of(glyph_monster(chr(cp)), seed)
        for style in styles:
            items.append(Item(monster, style, glyph_descriptions(chr(cp), colour), GLYPH_STYLES[style][1],
                              partial(draw_text_char, fonts[style], chr(cp), size, colour)))
    with TTFont(str(fonts["sans"]), lazy=True) as font:
        dejavu = font["name"].getDebugName(5) or "?"
    sources = [
        {"package": "matplotlib (PyPI)", "version": metadata.version("matplotlib"), "licence": "Matplotlib licence "
         "(PSF-style)", "use": f"bundles the DejaVu fonts: {', '.join(p.name for p in fonts.values())}"},
        {"package": "DejaVu fonts", "version": dejavu.replace("Version ", ""), "licence": "Bitstream Vera fonts "
         "licence (DejaVu changes public domain); text in matplotlib/mpl-data/fonts/ttf/LICENSE_DEJAVU",
         "use": "the glyph outlines"},
        {"package": "fonttools (PyPI)", "version": metadata.version("fonttools"), "licence": "MIT",
         "use": "reads the fonts' cmaps (which characters each font has)"},
        {"package": "Unicode character names (Python unicodedata)", "version": unicodedata.unidata_version,
         "licence": "Unicode licence", "use": "the captions"},
    ]
    dropped = sum(len(GLYPH_STYLES) - len(styles) for _, styles in chars)
    notes = [f"{len(candidates)} characters in all five fonts (named, not emoji, in the listed blocks); "
             f"{len(usable)} draw visibly, unlike an earlier character and differently in two styles or more; "
             f"{len(chars)} taken (all of Basic Latin, then the other blocks in turn)",
             f"{dropped} (character, style) pictures left out because another style of that character draws "
             "exactly the same picture (most symbols are not slanted by the oblique font, nor changed by the serif "
             "one)"]
    return BuiltSet("glyphs", items, sources, notes)


# --------------------------------------------------------------------------------------------------- icons
def pip_download(package: str, version: str, downloads: Path) -> Path:
    """The wheel of ``package==version`` in ``downloads`` (``pip download --no-deps`` once, reused after)."""
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob(f"{package}-{version}-*.whl"))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(downloads)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        failure = "" if result.returncode == 0 else (result.stderr.strip() or result.stdout.strip())[-600:]
    except (OSError, subprocess.TimeoutExpired) as err:
        failure = f"{type(err).__name__}: {err}"
    found = sorted(downloads.glob(f"{package}-{version}-*.whl"))
    if failure or not found:
        raise SetError(f"pip download {package}=={version} failed: {failure or 'no wheel was saved'}\n"
                       f"  ({shlex.join(cmd)}). Check that PyPI is reachable, or put the wheel of {package} "
                       f"{version} into {downloads}, or pass --sets glyphs.")
    return found[0]


def phosphor_files(downloads: Path) -> tuple[Path, dict[str, int], Path]:
    """(Phosphor font file, {icon name: code point}, qtawesome wheel): the font and its charmap are unpacked from
    the qtawesome wheel into ``downloads/qtawesome-<version>/``."""
    wheel = pip_download(*QTAWESOME, downloads)
    target = downloads / f"{QTAWESOME[0]}-{QTAWESOME[1]}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member in (PHOSPHOR_FONT, PHOSPHOR_CHARMAP):
                if not (target / member).is_file():
                    zf.extract(member, target)
        charmap = json.loads((target / PHOSPHOR_CHARMAP).read_text(encoding="utf-8"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise SetError(f"{wheel}: cannot read {PHOSPHOR_FONT} / {PHOSPHOR_CHARMAP} from the qtawesome wheel "
                       f"({type(err).__name__}: {err}); delete the wheel to download it again, or pass --sets "
                       "glyphs") from err
    return target / PHOSPHOR_FONT, {name: int(str(cp), 16) for name, cp in charmap.items()}, wheel


def icon_bases(charmap: dict[str, int]) -> list[str]:
    """The Phosphor names that come in every weight of ``ICON_WEIGHTS`` (``name``, ``name-thin``, ...), sorted."""
    return sorted(name for name in charmap
                  if all(f"{name}{suffix}" in charmap for suffix, _ in ICON_WEIGHTS.values()))


def icon_weights(font: Path, charmap: dict[str, int], name: str, size: int) -> list[str]:
    """The weights of icon ``name`` that draw it differently (:func:`distinct_actions`; some icons have no area to
    fill, so their fill weight repeats another)."""
    pictures = {weight: np.asarray(draw_icon(font, chr(charmap[f"{name}{suffix}"]), size, "black"))[..., 3]
                for weight, (suffix, _) in ICON_WEIGHTS.items()}
    return distinct_actions(pictures)


def build_icons(downloads: Path, size: int, max_images: int, seed: int) -> BuiltSet:
    """The icon set: Phosphor icons in random order (seeded) x the weights that draw them differently, up to
    ``max_images`` pictures."""
    font, charmap, wheel = phosphor_files(downloads)
    bases = icon_bases(charmap)
    if not bases:
        raise SetError(f"{font}: its charmap has no icon in all five weights; is {QTAWESOME[0]} {QTAWESOME[1]} "
                       "the right wheel?")
    order = [bases[int(i)] for i in np.random.default_rng([seed, 11]).permutation(len(bases))]
    chosen = sorted(take(order, partial(icon_weights, font, charmap, size=size), max_images))
    items = []
    for name, weights in chosen:
        colour = colour_of(name, seed)
        for weight in weights:
            suffix, description = ICON_WEIGHTS[weight]
            items.append(Item(name, weight, icon_descriptions(name, colour), description,
                              partial(draw_icon, font, chr(charmap[f"{name}{suffix}"]), size, colour)))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    sources = [
        {"package": "qtawesome (PyPI)", "version": QTAWESOME[1], "licence": "MIT",
         "use": f"its wheel {wheel.name} (sha256 {digest}) carries {PHOSPHOR_FONT} and {PHOSPHOR_CHARMAP}"},
        {"package": "Phosphor icons", "version": PHOSPHOR[1], "licence": "MIT",
         "use": f"the icon outlines and names ({len(bases)} icons x 5 weights in the font)"},
    ]
    dropped = sum(len(ICON_WEIGHTS) - len(weights) for _, weights in chosen)
    notes = [f"{len(bases)} Phosphor icons come in all five weights; {len(chosen)} taken (random order, seeded)",
             f"{dropped} (icon, weight) pictures left out because another weight of that icon draws exactly the "
             "same picture"]
    return BuiltSet("icons", items, sources, notes)


BUILDERS: dict[str, Callable[[Path, int, int, int], BuiltSet]] = {"glyphs": build_glyphs, "icons": build_icons}


def renderer_source() -> dict[str, str]:
    """The Pillow that drew the pictures (with its FreeType: the bytes of the PNGs depend on both)."""
    from PIL import features

    return {"package": "pillow (PyPI)", "version": metadata.version("pillow"), "licence": "MIT-CMU (HPND)",
            "use": f"draws the pictures with FreeType {features.version('freetype2') or '?'}"}


# --------------------------------------------------------------------------------------------------- reporting
def source_md(built: BuiltSet, counts: dict[str, int], command: str, seconds: float) -> str:
    """The text of ``<set>/SOURCE.md``: what the set is, its counts, its sources (versions, licences), the command."""
    lines = [f"# Outside set `{built.name}`", "",
             f"Built by `benchmarks/outside_sets.py` (workbook issue #19, item 3) in {seconds:.0f} s; not generated "
             "by the workbook. Course format: `train/<monsterID>_<ACTION>_0.png`, `train_info.json`, `test.json` + "
             "`test_reference/` (held-out keys; `outside_set.json` says which test key shows which key).", "",
             "| | |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in counts.items()]
    lines += ["", "## Sources", "", "| package | version | licence | use |", "|---|---|---|---|"]
    lines += [f"| {s['package']} | {s['version']} | {s['licence']} | {s['use']} |" for s in built.sources]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in built.notes]
    lines += ["", "## Command", "", "```", command, "```", ""]
    return "\n".join(lines)


def verify(root: Path) -> dict[str, int]:
    """Read the set back with the workbook's readers; its counts (SetError when it does not load cleanly)."""
    from helpers.data import load_train_set, read_test_prompts

    train = load_train_set(root, verbose=False, progress=False)
    if not train.report.ok:
        raise SetError(f"{root} does not load cleanly:\n{train.report.summary()}")
    n_test = len(read_test_prompts(root / "test.json")) if (root / "test.json").is_file() else 0
    n_monsters = len({split_key(k)[0] for k in train.keys()})
    return {"train_images": len(train), "keys": len(train.keys()), "monsters": n_monsters,
            "distinct_captions": len(train.distinct_captions()) - 1, "test_prompts": n_test}


def contact_sheet(root: Path, out: Path, seed: int, rows: int = 4, cols: int = 8) -> Path:
    """A ``rows`` x ``cols`` sheet of random training images of ``root`` (as training reads them: on white), each
    titled with its first caption; saved to ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.data import load_image, load_train_set

    examples = load_train_set(root, check=False, verbose=False, progress=False).examples
    rng = np.random.default_rng([seed, 3])
    picks = [examples[i] for i in sorted(rng.choice(len(examples), size=min(rows * cols, len(examples)),
                                                    replace=False))]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.6))
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex in zip(axes.flat, picks):
        ax.imshow(load_image(ex.path, None), interpolation="nearest")
        ax.set_title("\n".join(textwrap.wrap(ex.captions[0], 28)[:5]), fontsize=6.5)
    fig.suptitle(f"{root.name}: {len(picks)} of {len(examples)} training images ({root})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def build_one(name: str, out: Path, args: argparse.Namespace, command: str) -> dict[str, int]:
    """Build, write (atomically: ``out/<name>`` never holds half a set), check and describe one set."""
    start = time.perf_counter()
    built = BUILDERS[name](out / "_downloads", args.size, args.max_images, args.seed)
    built.sources.append(renderer_source())
    n_test = min(args.n_test, len({it.monster for it in built.items}) // 4)
    held = choose_test(built.items, n_test, args.seed)
    root = out / name
    with atomic_folder(root, replace=True) as tmp:
        pairs = write_course_set(tmp, built.items, held, args.seed)
        counts = verify(tmp)
        seconds = time.perf_counter() - start
        (tmp / "SOURCE.md").write_text(source_md(built, counts, command, seconds), encoding="utf-8")
        _write_json(tmp / "outside_set.json", {
            "set": name, "size": args.size, "max_images": args.max_images, "seed": args.seed, "counts": counts,
            "sources": built.sources, "notes": built.notes, "command": command, "test_pairs": pairs})
    if not args.no_sheet:
        contact_sheet(root, out / f"{name}_sheet.png", args.seed)
    print(f"{name}: {counts['train_images']} train images, {counts['keys']} keys ({counts['monsters']} monsters), "
          f"{counts['distinct_captions']} distinct captions, {counts['test_prompts']} held-out test prompts "
          f"-> {root} ({time.perf_counter() - start:.1f} s)")
    for s in built.sources:
        print(f"  source: {s['package']} {s['version']} ({s['licence']})")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Build the sets named by ``--sets``; 1 when any failed (each failure printed with what to do)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write <set>/ into (and _downloads/)")
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--size", type=int, default=64, help="picture size in pixels (square)")
    ap.add_argument("--max-images", type=int, default=3000, help="pictures per set, train + test (about)")
    ap.add_argument("--n-test", type=int, default=N_TEST, help="held-out keys in test.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sheet", action="store_true", help="skip the contact sheet <out>/<set>_sheet.png")
    args = ap.parse_args(argv)
    if args.size < 16 or args.max_images < 10:
        ap.error("--size must be >= 16 and --max-images >= 10")
    command = shlex.join(["python", "benchmarks/outside_sets.py", "--out", str(args.out), "--sets", *args.sets,
                          "--size", str(args.size), "--max-images", str(args.max_images), "--n-test",
                          str(args.n_test), "--seed", str(args.seed)])
    failed = []
    for name in args.sets:
        try:
            build_one(name, args.out, args, command)
        except SetError as err:
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
