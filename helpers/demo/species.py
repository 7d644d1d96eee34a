"""The demo's vocabulary: the monsters' colours, body shapes, features and actions, and the species made of them.

One place for every word the demo data set uses: :mod:`helpers.demo.sprites` draws a :class:`Species`,
:mod:`helpers.demo.dataset` writes the data set, and the demo judge and the colour check read the same names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ACTIONS = ("idle", "walk", "attack", "hurt", "jump")

# Clearly named, well separated body colours; none is near white (the loader composites alpha on white).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "blue": (40, 82, 214),
    "green": (52, 168, 60),
    "yellow": (236, 204, 36),
    "purple": (132, 54, 194),
    "orange": (242, 128, 28),
    "pink": (242, 112, 176),
    "cyan": (36, 200, 224),
    "brown": (128, 78, 38),
    "black": (48, 46, 56),
    "gray": (128, 128, 138),
    "teal": (18, 128, 122),
}
N_SPECIES = 40  # the species of the full demo set (the smoke set has the first 8)

SHAPES = ("slime", "golem", "ghost", "bird", "spider", "mushroom", "dragon", "bat")

ACTION_DESCRIPTIONS = {
    "idle": "The monster is standing still.",
    "walk": "The monster is walking.",
    "attack": "The monster is attacking.",
    "hurt": "The monster is getting hurt.",
    "jump": "The monster is jumping.",
}

# feature -> (long phrase, short phrase) used in the descriptions
FEATURES: dict[str, tuple[str, str]] = {
    "horns": ("two horns", "horns"),
    "horn": ("a single horn", "one horn"),
    "wings": ("bat wings", "small wings"),
    "crown": ("a golden crown", "a crown"),
    "cyclops": ("one big eye", "a single eye"),
    "spots": ("dark spots", "spots"),
    "sword": ("a sword", "a blade"),
    "club": ("a wooden club", "a club"),
}
_EXCLUSIVE = ({"horns", "horn"}, {"sword", "club"}, {"horns", "crown"}, {"horn", "crown"})
SHAPE_FEATURES: dict[str, tuple[str, ...]] = {
    "slime": ("horns", "horn", "wings", "crown", "cyclops", "spots"),
    "golem": ("horns", "horn", "crown", "cyclops", "sword", "club"),
    "ghost": ("horns", "crown", "cyclops", "sword", "club"),
    "bird": ("horns", "horn", "crown", "spots"),
    "spider": ("horns", "crown", "cyclops", "spots", "wings"),
    "mushroom": ("horns", "wings", "crown", "cyclops", "sword", "club"),
    "dragon": ("horns", "horn", "wings", "crown", "spots"),
    "bat": ("horns", "horn", "crown", "cyclops", "spots"),
}


# --------------------------------------------------------------------------------------------------- species
@dataclass(frozen=True)
class Species:
    """One monster of the demo set: what it looks like and how it is described."""

    id: str  # e.g. "m007" (no "_": it is the first part of the course's <monsterID>_<ACTION> key)
    colour: str
    shape: str
    features: tuple[str, ...]
    held_out: str  # the action that is missing from train/ and asked for in test.json
    descriptions: tuple[str, ...]  # the given_description phrasings (each names the colour and the shape)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["features"] = ", ".join(FEATURES[f][0] for f in self.features)
        d["descriptions"] = list(self.descriptions)
        return d


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _descriptions(colour: str, shape: str, features: Sequence[str]) -> tuple[str, ...]:
    long = _join([FEATURES[f][0] for f in features])
    short = _join([FEATURES[f][1] for f in features])
    article = "An" if colour[0] in "aeiou" else "A"
    return (
        f"{article} {colour} {shape} with {long}.",
        f"{colour.capitalize()} {shape} monster with {short}.",
        f"Pixel-art {colour} {shape} with {short}.",
    )


def demo_species(n_species: int = N_SPECIES, seed: int = 0) -> list[Species]:
    """The species of the demo set; the first ``n`` are the same for any larger ``n`` with the same seed.

    Species ``i`` has shape ``i % 8``; colours are dealt so that every (colour, shape) pair is unique and each
    block of 8 (m000-m007, m008-m015, ...) has 8 different shapes and 8 different colours. The held-out action
    rotates with ``i``. ``seed`` permutes the colours, the shapes, the features and where the rotation starts.
    """
    max_species = len(SHAPES) * len(COLOURS)
    if not 1 <= n_species <= max_species:
        raise ValueError(f"n_species must be between 1 and {max_species}, not {n_species}")
    rng = np.random.default_rng([seed, 0])
    colours = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))]
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    offset = int(rng.integers(len(ACTIONS)))
    out = []
    for i in range(n_species):
        rnd, s = divmod(i, len(SHAPES))
        colour = colours[(s + 5 * rnd) % len(colours)]  # 5 is coprime with 12: no pair repeats within a shape
        shape = shapes[s]
        r = np.random.default_rng([seed, 1, i])
        allowed = [f for f in SHAPE_FEATURES[shape] if not (f == "spots" and colour == "black")]  # unseen
        features = [allowed[int(r.integers(len(allowed)))]]
        rest = [f for f in allowed if f != features[0] and not any({f, features[0]} <= ex for ex in _EXCLUSIVE)]
        if r.random() < 0.6 and rest:  # a second feature for about half of the species
            features.append(rest[int(r.integers(len(rest)))])
        features.sort(key=list(FEATURES).index)
        out.append(Species(id=f"m{i:03d}", colour=colour, shape=shape, features=tuple(features),
                           held_out=ACTIONS[(i + offset) % len(ACTIONS)],
                           descriptions=_descriptions(colour, shape, features)))
    return out


def species_table(n_species: int = N_SPECIES, seed: int = 0) -> list[dict]:
    """The species as plain dicts (id, colour, shape, features, held_out, descriptions), e.g. for a DataFrame."""
    return [s.as_dict() for s in demo_species(n_species, seed)]


