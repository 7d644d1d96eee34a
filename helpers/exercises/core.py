"""The exercise framework: checked coding exercises and "predict, then run" questions (Kaggle Learn style).

- :class:`Exercise`: ``ex.check(fn)`` runs the student's function and the helpers' function that does the same job
  on several random cases and prints a :class:`Verdict` ("correct", "incorrect" with what is probably wrong, or
  "not attempted" for the untouched stub); ``ex.hint()``, ``ex.solution()`` print help; ``ex.use(fn)`` checks and
  returns the function the chapter continues with: the student's when correct, the helpers' version otherwise, so
  an unfinished exercise never stops a top-to-bottom run.
- Typical mistakes are functions too (:class:`Mistake`): when the student's output matches one of them (and not the
  reference), the verdict names that mistake instead of printing a bare difference.
- :class:`Question`: a multiple-choice question, shown as ipywidgets radio buttons with instant feedback in a live
  kernel and as plain text when headless (``WORKBOOK_HEADLESS=1`` or no IPython kernel); ``q.check("B")`` answers it
  in code.

A student's function that raises is judged incorrect with its error shown; the check itself never raises.
"""

from __future__ import annotations

import copy
import html
import inspect
import math
import os
import textwrap
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ipywidgets as w
import numpy as np
import torch
from IPython import get_ipython
from IPython.display import display

__all__ = ["CORRECT", "INCORRECT", "NOT_ATTEMPTED", "Verdict", "Case", "Mistake", "Exercise", "Question",
           "compare_outputs", "headless", "verdicts", "progress"]

CORRECT, INCORRECT, NOT_ATTEMPTED = "correct", "incorrect", "not attempted"
_ICONS = {CORRECT: "✓", INCORRECT: "✗", NOT_ATTEMPTED: "·"}

#: The last verdict of every exercise and question checked in this session, by name (see :func:`progress`).
_HISTORY: dict[str, "Verdict"] = {}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``status`` is "correct", "incorrect" or "not attempted"; ``message`` says why."""

    status: str
    message: str = ""
    name: str = ""

    @property
    def correct(self) -> bool:
        return self.status == CORRECT

    def __bool__(self) -> bool:
        return self.correct

    def __str__(self) -> str:
        head = f"{_ICONS.get(self.status, '?')} {self.name}: {self.status}" if self.name else self.status
        return f"{head}. {self.message}" if self.message else head

    def __repr__(self) -> str:
        return f"<Verdict {self}>"


def verdicts() -> dict[str, Verdict]:
    """The last verdict of every exercise/question checked in this session (a copy), by name."""
    return dict(_HISTORY)


def progress() -> str:
    """One line per exercise/question checked in this session: its last status."""
    return "\n".join(f"{_ICONS.get(v.status, '?')} {name:<28} {v.status}" for name, v in sorted(_HISTORY.items()))


def _record(verdict: Verdict, quiet: bool) -> Verdict:
    _HISTORY[verdict.name] = verdict
    if not quiet:
        print(verdict)
    return verdict


# --------------------------------------------------------------------------------------------------- comparing
def _as_number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (complex, np.complexfloating)) and abs(x.imag) <= 1e-6 * max(1.0, abs(x.real)):
        return float(x.real)  # e.g. a trace of scipy's sqrtm, whose rounding leaves tiny imaginary parts
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1:
        return float(x.item())
    if isinstance(x, np.ndarray) and x.size == 1:
        return float(x.item())
    return None


def _as_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            return torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError):
            return None
    return None


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    return f"{type(x).__name__} {x!r}"[:120]


def compare_outputs(got: Any, want: Any, *, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None when ``got`` equals ``want`` (strings exactly, numbers and arrays to ``atol + rtol |want|``), else a
    sentence saying how it differs. Tensors, arrays and lists are compared by value (shape included)."""
    if isinstance(want, str):
        return None if got == want else f"returned {got!r}, expected {want!r}"
    if isinstance(want, (tuple, list)) and want and not isinstance(want[0], (int, float)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"returned {_kind(got)}, expected {len(want)} values"
        for i, (g, w) in enumerate(zip(got, want)):
            diff = compare_outputs(g, w, atol=atol, rtol=rtol)
            if diff:
                return f"value {i}: {diff}"
        return None
    w_num = _as_number(want) if not isinstance(want, (torch.Tensor, np.ndarray)) or want.ndim == 0 else None
    if w_num is not None:
        g_num = _as_number(got)
        if g_num is None:
            return f"returned {_kind(got)}, expected a single number"
        if math.isclose(g_num, w_num, rel_tol=rtol, abs_tol=atol) or (math.isnan(g_num) and math.isnan(w_num)):
            return None
        return f"returned {g_num:.6g}, expected {w_num:.6g}"
    w_t, g_t = _as_tensor(want), _as_tensor(got)
    if w_t is None:
        return None if got == want else f"returned {_kind(got)}, expected {_kind(want)}"
    if g_t is None:
        return f"returned {_kind(got)}, expected {_kind(want)}"
    if g_t.shape != w_t.shape:
        return f"returned shape {tuple(g_t.shape)}, expected {tuple(w_t.shape)}"
    if not torch.isfinite(g_t).all() and torch.isfinite(w_t).all():
        return "returned NaN or inf values"
    err = (g_t - w_t).abs()
    if bool((err <= atol + rtol * w_t.abs()).all()):
        return None
    return f"differs from the expected values by max |diff| = {err.max().item():.4g}"


# --------------------------------------------------------------------------------------------------- exercises
@dataclass
class Case:
    """One set of inputs: positional ``args`` (deep-copied for every call), and a ``label`` for messages."""

    args: tuple
    label: str
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``fn`` has the exercise's signature; ``message`` explains the mistake."""

    message: str
    fn: Callable


def _call(fn: Callable, case: Case) -> Any:
    return fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))


def _error_line(err: BaseException) -> str:
    """``TypeName: message`` and the student's line that raised it, when it can be found."""
    what = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename != __file__]
    if not frames:
        return what
    last = frames[-1]
    return f"{what} (line {last.lineno}{': ' + last.line.strip() if last.line else ''})"


class Exercise:
    """A coding exercise checked against the helpers' function that does the same job.

    - ``reference``: the helpers-backed function with the student's signature (also the fallback of :meth:`use`);
    - ``solution``: a student-level solution (plain maths), printed by :meth:`solution`;
    - ``cases``: a function returning the :class:`Case` list (random shapes/timesteps, fixed seeds);
    - ``mistakes``: typical wrong answers, named when the student's output matches one;
    - ``stub``: the source of the student's cell as a chapter shows it; ``imports``: the import lines the
      solution needs (printed above it; the chapter's stub cell starts with them too);
    - ``run`` (default: call with deep copies of the case's arguments) and ``compare`` (default
      :func:`compare_outputs`) can be replaced, e.g. to check a random function by its statistics.
    """

    def __init__(self, name: str, title: str, *, reference: Callable, solution: Callable,
                 cases: Callable[[], list[Case]], hint: str, stub: str, mistakes: Sequence[Mistake] = (),
                 run: Callable[[Callable, Case], Any] | None = None,
                 compare: Callable[[Any, Any], str | None] | None = None, atol: float = 1e-5,
                 rtol: float = 1e-4, fallback_name: str = "", imports: str = "") -> None:
        self.name, self.title = name, title
        self.imports = inspect.cleandoc(imports)  # what the solution needs beyond torch (printed above it)
        self.reference, self._solution, self._cases = reference, solution, cases
        self.hint_text, self.stub = inspect.cleandoc(hint), inspect.cleandoc(stub)
        self.mistakes = list(mistakes)
        self._run = run or _call
        self._compare = compare or (lambda got, want: compare_outputs(got, want, atol=atol, rtol=rtol))
        self.fallback_name = fallback_name or "the helpers' version"

    def __repr__(self) -> str:
        return f"<Exercise {self.name}: {self.title}>"

    # ------------------------------------------------------------------------------------------- checking
    def _verdict(self, status: str, message: str) -> Verdict:
        return Verdict(status, message, self.name)

    def _explain(self, got: Any, want: Any, case: Case, diff: str) -> str:
        """The matching mistake's message, else the generic difference."""
        for mistake in self.mistakes:
            try:
                wrong = self._run(mistake.fn, case)
                if self._compare(wrong, want) is not None and self._compare(got, wrong) is None:
                    return f"{mistake.message} (on {case.label})"
            except Exception:  # a mistake that cannot run on this case simply does not match
                continue
        return f"On {case.label} your function {diff}."

    def judge(self, answer: Any) -> Verdict:
        """The verdict on ``answer`` without printing or recording it."""
        if answer is None or isinstance(answer, Exercise):
            return self._verdict(NOT_ATTEMPTED, f"define your function and pass it: {self.name}.check(my_function)")
        if not callable(answer):
            return self._verdict(INCORRECT, f"expected a function, got {_kind(answer)}")
        cases = self._cases()
        for i, case in enumerate(cases):
            want = self._run(self.reference, case)
            try:
                got = self._run(answer, case)
            except NotImplementedError:
                return self._verdict(NOT_ATTEMPTED, "the stub still raises NotImplementedError: replace it with "
                                                    "your code")
            except Exception as err:  # the student's error is the verdict, never a crash of the check
                return self._verdict(INCORRECT, f"your function raised {_error_line(err)} on {case.label}")
            if got is None:
                if i == 0:
                    return self._verdict(NOT_ATTEMPTED, "your function returns None: finish it with a `return`")
                return self._verdict(INCORRECT, f"your function returned None on {case.label}")
            try:
                diff = self._compare(got, want)
            except Exception as err:
                diff = f"returned something that cannot be compared ({type(err).__name__}: {err})"
            if diff:
                return self._verdict(INCORRECT, self._explain(got, want, case, diff))
        return self._verdict(CORRECT, f"matches {self.fallback_name} on {len(cases)} random cases")

    def check(self, answer: Any, *, quiet: bool = False) -> Verdict:
        """Judge ``answer`` (the student's function), print the verdict and return it."""
        return _record(self.judge(answer), quiet)

    # ------------------------------------------------------------------------------------------- help
    def hint(self) -> None:
        """Print a hint."""
        print(f"Hint ({self.name}): {self.hint_text}")

    @property
    def solution_text(self) -> str:
        """The solution's source, named like the student's function."""
        src = textwrap.dedent(inspect.getsource(self._solution)).strip()
        src = src.replace(f"def {self._solution.__name__}(", f"def {self.name.rsplit('.', 1)[-1]}(", 1)
        return f"{self.imports}\n\n\n{src}" if self.imports else src

    def solution(self) -> None:
        """Print a solution (plain code, ready to paste)."""
        print(self.solution_text)

    def solution_function(self) -> Callable:
        """The solution as a function (what ``solutions=True`` runs in a chapter)."""
        return self._solution

    def use(self, answer: Any, fallback: Callable | None = None, *, solution: bool = False) -> Callable:
        """Check ``answer`` and return the function the chapter continues with: ``answer`` when correct, else
        ``fallback`` (default: the helpers-backed reference), saying so. ``solution=True`` checks and returns the
        solution instead (the chapters' ``solutions`` parameter, for smoke tests)."""
        if solution:
            answer = self.solution_function()
        verdict = self.check(answer)
        if verdict.correct:
            print(f"→ the chapter continues with {'the solution' if solution else 'your function'}.")
            return answer
        print(f"→ the chapter continues with {self.fallback_name} for now; come back to this exercise later.")
        return fallback if fallback is not None else self.reference


# --------------------------------------------------------------------------------------------------- questions
def headless() -> bool:
    """True when widgets cannot be shown: ``WORKBOOK_HEADLESS`` is set (not "0"), or there is no IPython kernel."""
    if os.environ.get("WORKBOOK_HEADLESS", "0").strip().lower() not in ("", "0", "false", "no"):
        return True
    shell = get_ipython()
    return shell is None or getattr(shell, "kernel", None) is None


class Question:
    """A "predict, then run" multiple-choice question: ``q.ask()`` shows it, ``q.check("B")`` answers it.

    ``choices`` are lettered A, B, C...; ``answer`` is the right letter; ``explanation`` is shown after any answer;
    ``feedback`` optionally maps a wrong letter to why it is tempting but wrong.
    """

    def __init__(self, name: str, prompt: str, choices: Sequence[str], answer: str, explanation: str,
                 feedback: dict[str, str] | None = None) -> None:
        self.name, self.prompt = name, inspect.cleandoc(prompt)
        self.choices = list(choices)
        self.letters = [chr(ord("A") + i) for i in range(len(self.choices))]
        if answer.upper() not in self.letters:
            raise ValueError(f"answer {answer!r} is not one of {self.letters}")
        self.answer, self.explanation = answer.upper(), inspect.cleandoc(explanation)
        self.feedback = {k.upper(): v for k, v in (feedback or {}).items()}

    def __repr__(self) -> str:
        return f"<Question {self.name}>"

    def text(self) -> str:
        """The plain-text rendering: the question, its lettered choices and how to answer."""
        lines = [f"Question ({self.name}): {self.prompt}"]
        lines += [f"  {letter}) {choice}" for letter, choice in zip(self.letters, self.choices)]
        lines.append(f'Predict, then answer with {self.name}.check("A") (a letter).')
        return "\n".join(lines)

    def judge(self, answer: str | None) -> Verdict:
        """The verdict on a letter (or a choice's exact text), without printing or recording it."""
        if answer is None or not str(answer).strip():
            return Verdict(NOT_ATTEMPTED, "pick a letter", self.name)
        letter = str(answer).strip().upper().rstrip(")")
        if letter not in self.letters and str(answer) in self.choices:
            letter = self.letters[self.choices.index(str(answer))]
        if letter not in self.letters:
            return Verdict(INCORRECT, f"{answer!r} is not one of {', '.join(self.letters)}", self.name)
        if letter == self.answer:
            return Verdict(CORRECT, self.explanation, self.name)
        why = self.feedback.get(letter, "")
        return Verdict(INCORRECT, f"{letter} is not it. {why + ' ' if why else ''}The answer is {self.answer}: "
                                  f"{self.explanation}", self.name)

    def check(self, answer: str | None, *, quiet: bool = False) -> Verdict:
        """Judge a typed answer (a letter), print the verdict and return it."""
        return _record(self.judge(answer), quiet)

    def widget(self):
        """RadioButtons + a Check button + the feedback (ipywidgets); its plain-text form is :meth:`text`."""
        text = self.text()

        class _Box(w.VBox):
            def __repr__(self) -> str:
                return text

            def _repr_mimebundle_(self, **kwargs):  # text/plain, in full: what headless runs and viewers show
                data = super()._repr_mimebundle_(**kwargs)
                if data:
                    data["text/plain"] = text
                return data

        radio = w.RadioButtons(options=[(f"{l}) {c}", l) for l, c in zip(self.letters, self.choices)],
                               value=None, layout=w.Layout(width="auto"))
        button = w.Button(description="Check", button_style="primary")
        out = w.HTML("")

        def on_click(_=None) -> None:
            verdict = self.check(radio.value, quiet=True)
            colour = {CORRECT: "#1a7f37", INCORRECT: "#b3261e"}.get(verdict.status, "#555")
            out.value = (f"<div style='color:{colour}'><b>{html.escape(verdict.status)}</b> — "
                         f"{html.escape(verdict.message)}</div>")

        button.on_click(on_click)
        box = _Box([w.HTML(f"<b>{html.escape(self.prompt)}</b>"), radio, button, out])
        box.submit = on_click  # the button's callback, callable from Python (tests)
        return box

    def ask(self) -> None:
        """Show the question: a widget in a live notebook, plain text when headless."""
        if headless():
            print(self.text())
            return
        display(self.widget())
