"""Chapter 01's exercises: the caption rule, and the training caption with dropout.

- :data:`caption`: ``fn(given, action) -> str`` joins a given description and an action description as
  :func:`helpers.data.make_caption` does (the one place the workbook joins them).
- :data:`training_caption`: ``fn(givens, action, rng, dropout) -> str``: with probability ``dropout`` the empty
  caption ``""`` (caption dropout, for classifier-free guidance), else the caption of one given description picked
  at random with ``rng`` (a ``random.Random``). A random function is checked by its statistics: thousands of calls
  from a seeded ``rng``, compared with the reference's distribution of captions (total variation <= 0.07), so any
  order of the two random draws is accepted.
"""

from __future__ import annotations

import random
from collections import Counter

from helpers.data import make_caption
from .core import Case, Exercise, Mistake, Question

__all__ = ["caption", "training_caption", "too_long", "why_dropout", "EXERCISES", "QUESTIONS"]


# --------------------------------------------------------------------------------------------------- caption
def _solution_caption(given, action):
    return f"{given.strip()} {action.strip()}".strip()


def _caption_cases() -> list[Case]:
    pairs = [("A red slime with two horns.", "The monster is attacking."),
             ("  A blue golem made of stone. ", "It stands still.\n"),
             ("A small green ghost.", ""),
             ("A knight in silver armour.", "  The monster is walking to the left.")]
    return [Case(p, f"given={p[0]!r}, action={p[1]!r}") for p in pairs]


caption = Exercise(
    "ch01.caption", "the caption rule: a given description, a space, the action description",
    reference=make_caption, solution=_solution_caption, cases=_caption_cases,
    fallback_name="the helpers' version (helpers.data.make_caption)",
    mistakes=[
        Mistake("The order is swapped: the given description comes first, then the action.",
                lambda g, a: f"{a.strip()} {g.strip()}".strip()),
        Mistake("The two parts need a space between them.", lambda g, a: f"{g.strip()}{a.strip()}"),
        Mistake("Strip the spaces and line breaks around each part (str.strip), and around the result when the "
                "action is empty.", lambda g, a: f"{g} {a}"),
        Mistake("Strip the spaces around each part, not only around the whole caption.",
                lambda g, a: f"{g} {a}".strip()),
        Mistake("Join with a single space, not a comma.", lambda g, a: f"{g.strip()}, {a.strip()}"),
    ],
    hint="""An f-string with one space: f"{given} {action}". Strip each part first (the files have stray spaces),
    and strip the result too: with an empty action there must be no trailing space.""",
    stub='''
    def caption(given, action):
        """The training caption of one given description and one action description (two strings)."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- dropout
N_CALLS = 3000
TOLERANCE = 0.07  # total variation between the caption distributions (~0.02 between two correct functions)


def _ref_training_caption(givens: list[str], action: str, rng: random.Random, dropout: float) -> str:
    if rng.random() < dropout:
        return ""
    return make_caption(rng.choice(givens), action)


def _solution_training_caption(givens, action, rng, dropout):
    if rng.random() < dropout:                            # caption dropout: the model also learns "no text"
        return ""
    given = rng.choice(givens)
    return f"{given.strip()} {action.strip()}".strip()    # the caption rule (helpers.data.make_caption)


def _many(fn, case: Case) -> Counter | None:
    """The captions of :data:`N_CALLS` calls sharing one seeded rng; None when every call returned None."""
    givens, action, seed, dropout = case.args
    rng = random.Random(seed)
    counts = Counter(fn(list(givens), action, rng, dropout) for _ in range(N_CALLS))
    return None if set(counts) == {None} else counts


def _compare_counts(got, want) -> str | None:
    if not isinstance(got, Counter):
        return f"returned {got!r}"
    n_got, n_want = sum(got.values()), sum(want.values())
    keys = set(got) | set(want)
    tv = 0.5 * sum(abs(got[k] / n_got - want[k] / n_want) for k in keys)
    if tv <= TOLERANCE:
        return None
    odd = [k for k in got if k not in want]
    if odd:
        return f"returned {odd[0]!r}, which is neither '' nor the caption of a given description and the action"
    share, expected = got[""] / n_got, want[""] / n_want
    if abs(share - expected) > TOLERANCE / 2:
        return f"returned '' in {share:.0%} of {n_got} calls, expected about {expected:.0%}"
    return "picks the given descriptions with the wrong frequencies (each should be equally likely)"


def _training_cases() -> list[Case]:
    givens = ("A red slime.", "A round red slime with horns.", "A small slime, red as fire.")
    return [Case((givens, "The monster is idle.", 0, 0.3), f"3 given descriptions, dropout 0.3, {N_CALLS} calls"),
            Case((givens[:2], "It attacks.", 1, 0.15), f"2 given descriptions, dropout 0.15, {N_CALLS} calls")]


training_caption = Exercise(
    "ch01.training_caption", "a training caption with caption dropout",
    reference=_ref_training_caption, solution=_solution_training_caption, cases=_training_cases,
    run=_many, compare=_compare_counts,
    fallback_name="the helpers' rule (make_caption of a random description; '' with probability dropout)",
    mistakes=[
        Mistake("You drop the caption with probability 1 - dropout: return '' when rng.random() < dropout.",
                lambda g, a, rng, p: "" if rng.random() > p else make_caption(rng.choice(g), a)),
        Mistake("Pick the given description at random (rng.choice(givens)), not always the first one.",
                lambda g, a, rng, p: "" if rng.random() < p else make_caption(g[0], a)),
        Mistake("The caption is never dropped: with probability `dropout` return the empty caption ''.",
                lambda g, a, rng, p: make_caption(rng.choice(g), a)),
        Mistake("A dropped caption is the empty string '', not None: the text encoder encodes '' as 'no text'.",
                lambda g, a, rng, p: None if rng.random() < p else make_caption(rng.choice(g), a)),
        Mistake("A dropped caption is '' entirely, not the action alone.",
                lambda g, a, rng, p: a if rng.random() < p else make_caption(rng.choice(g), a)),
        Mistake("The caption needs the action too: make_caption(given, action), not the given description alone.",
                lambda g, a, rng, p: "" if rng.random() < p else rng.choice(g)),
    ],
    hint="""Two random draws from `rng` (never from the global `random` module, so that a seed reproduces the
    batch): rng.random() < dropout decides the dropout, rng.choice(givens) picks the description.""",
    stub='''
    def training_caption(givens, action, rng, dropout):
        """One training caption: "" with probability `dropout`, else the caption of a given description picked
        at random. givens: list of str; action: str; rng: random.Random (draw only from it); dropout: float."""
        raise NotImplementedError  # your code here
    ''')


# --------------------------------------------------------------------------------------------------- question
why_dropout = Question(
    "ch01.why_dropout",
    "Training replaces 10 % of the captions by the empty caption \"\". What is that for?",
    ["Regularisation: it stops the UNet from over-fitting the captions, like dropout in a classifier",
     "It saves 10 % of the text encoder's work",
     "The model also learns what an image looks like without text, which classifier-free guidance needs at "
     "generation time",
     "It teaches the model to ignore the text encoder"],
    answer="C",
    explanation="classifier-free guidance (chapter 05) runs the same UNet with the prompt and with \"\", and "
                "pushes the prediction away from the unconditional one. Without caption dropout the UNet never "
                "saw \"\" during training and its unconditional prediction would be meaningless.",
    feedback={"A": "It does regularise a little, but that is not why every text-to-image recipe keeps it.",
              "B": "The text embeddings are cached once (chapter 02): there is no work to save."})

too_long = Question(
    "ch01.too_long",
    "A caption is 90 tokens long. What does the text encoder (at most 77 tokens) do with it?",
    ["Reads all 90 tokens: the limit is only a recommendation",
     "Keeps the first 77 tokens: the end of the caption, often the action, is lost",
     "Keeps the last 77 tokens",
     "Raises an error, so you notice"],
    answer="B",
    explanation="captions are truncated to 77 tokens (padding included, with the start and end tokens), silently "
                "in most code. The workbook reports truncations; section 4 counts how many captions are too long.",
    feedback={"D": "The tokenizer truncates without an error: that is why the workbook counts and reports it."})

EXERCISES = [caption, training_caption]
QUESTIONS = [too_long, why_dropout]
