"""Exercises with checks, one module per chapter (``ch01`` ... ``ch06``), in the style of Kaggle Learn.

>>> from helpers.exercises import ch04
>>> ch04.add_noise.check(add_noise)        # prints ✓/✗ and why; returns a Verdict (.status, .message)
>>> ch04.add_noise.hint(); ch04.add_noise.solution()
>>> add_noise = ch04.add_noise.use(add_noise, solution=solutions)  # yours if correct, else the helpers' version
>>> ch04.noise_at_999.ask()                # a "predict, then run" question (widget, or text when headless)

The framework is :mod:`helpers.exercises.core`; :func:`progress` lists the session's verdicts.
"""

from .core import CORRECT, INCORRECT, NOT_ATTEMPTED, Case, Exercise, Mistake, Question, Verdict, progress, verdicts

__all__ = ["CORRECT", "INCORRECT", "NOT_ATTEMPTED", "Case", "Exercise", "Mistake", "Question", "Verdict",
           "progress", "verdicts"]
