"""helpers.exercises: every exercise accepts its solution and the helpers' reference, names its typical mistakes,
calls the untouched stub "not attempted", judges a raising function incorrect without raising itself; the questions
judge letters and render as text when headless; ``use`` falls back to the helpers' version."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch

from helpers.exercises import CORRECT, INCORRECT, NOT_ATTEMPTED, Verdict, ch01, ch02, ch03, ch04, ch05, ch06, core
from helpers.generation.sampling import apply_guidance

pytestmark = pytest.mark.usefixtures("one_thread")

CHAPTERS = [ch01, ch02, ch03, ch04, ch05, ch06]
EXERCISES = [ex for ch in CHAPTERS for ex in ch.EXERCISES]
QUESTIONS = [q for ch in CHAPTERS for q in ch.QUESTIONS]
MISTAKES = [(ex, i) for ex in EXERCISES for i in range(len(ex.mistakes))]


def _ids(items) -> list[str]:
    return [getattr(x, "name", None) or f"{x[0].name}-mistake{x[1]}" for x in items]


def _stub_function(ex, body: str | None = None):
    """The function the chapter's stub cell defines (optionally with another body)."""
    src = ex.stub if body is None else ex.stub.replace("raise NotImplementedError  # your code here", body)
    namespace: dict = {}
    exec(compile(src, f"<{ex.name} stub>", "exec"), namespace)
    return namespace[ex.name.rsplit(".", 1)[-1]]


def test_every_chapter_has_two_to_four_exercises_and_the_required_names():
    assert all(2 <= len(ch.EXERCISES) <= 4 for ch in CHAPTERS)
    assert [ex.name for ex in ch04.EXERCISES][:2] == ["ch04.add_noise", "ch04.v_target"]
    assert ch05.guidance.name == "ch05.guidance"
    assert len({ex.name for ex in EXERCISES}) == len(EXERCISES)


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_the_solution_and_the_reference_are_correct(ex):
    assert ex.judge(ex.solution_function()).status == CORRECT
    assert ex.judge(ex.reference).status == CORRECT


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_the_printed_solution_runs_and_is_correct(ex, capsys):
    ex.solution()
    text = capsys.readouterr().out
    assert f"def {ex.name.rsplit('.', 1)[-1]}(" in text
    namespace = {"torch": torch, "np": np}
    exec(compile(text, "<solution>", "exec"), namespace)
    assert ex.judge(namespace[ex.name.rsplit(".", 1)[-1]]).status == CORRECT


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_at_least_two_typical_mistakes(ex):
    assert len(ex.mistakes) >= 2


@pytest.mark.parametrize("ex, i", MISTAKES, ids=_ids(MISTAKES))
def test_each_typical_mistake_is_named(ex, i):
    mistake = ex.mistakes[i]
    verdict = ex.judge(mistake.fn)
    assert verdict.status == INCORRECT
    assert verdict.message.startswith(mistake.message), verdict.message


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_the_stub_is_not_attempted(ex):
    assert ex.judge(_stub_function(ex)).status == NOT_ATTEMPTED
    assert ex.judge(_stub_function(ex, "return None")).status == NOT_ATTEMPTED
    assert ex.judge(_stub_function(ex, "pass")).status == NOT_ATTEMPTED
    assert ex.judge(None).status == NOT_ATTEMPTED


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_a_raising_function_is_incorrect_with_its_error(ex, capsys):
    verdict = ex.check(_stub_function(ex, 'raise ValueError("my own bug")'))
    assert verdict.status == INCORRECT
    assert "ValueError: my own bug" in verdict.message
    assert "line" in verdict.message  # the student's line that raised
    assert "✗" in capsys.readouterr().out


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_hint_prints_text(ex, capsys):
    ex.hint()
    out = capsys.readouterr().out
    assert out.startswith(f"Hint ({ex.name}):") and len(out) > 40


@pytest.mark.parametrize("ex", EXERCISES, ids=_ids(EXERCISES))
def test_use_returns_the_students_function_or_the_helpers_version(ex, capsys):
    stub, solution = _stub_function(ex), ex.solution_function()
    assert ex.use(stub) is ex.reference
    assert "continues with the helpers'" in capsys.readouterr().out
    assert ex.use(solution) is solution
    assert "continues with your function" in capsys.readouterr().out
    assert ex.use(stub, solution=True) is solution
    fallback = object.__new__(type("F", (), {"__call__": lambda self: None}))
    assert ex.use(stub, fallback=fallback) is fallback


# --------------------------------------------------------------------------------------------------- specifics
def test_a_wrong_shape_and_a_bare_difference_are_described():
    verdict = ch04.add_noise.judge(lambda x0, noise, ac, t: x0[:, :1])
    assert verdict.status == INCORRECT and "shape" in verdict.message
    verdict = ch04.add_noise.judge(lambda x0, noise, ac, t: x0 * 1.01)
    assert verdict.status == INCORRECT and "max |diff|" in verdict.message


def test_a_missing_reshape_shows_the_broadcasting_error():
    verdict = ch04.add_noise.judge(lambda x0, noise, ac, t: ac[t].sqrt() * x0 + (1 - ac[t]).sqrt() * noise)
    assert verdict.status == INCORRECT and "RuntimeError" in verdict.message


def test_a_correct_caption_dropout_with_the_draws_in_another_order_is_accepted():
    def other_order(givens, action, rng, dropout):
        given = rng.choice(givens)
        return "" if rng.random() < dropout else f"{given.strip()} {action.strip()}"
    assert ch01.training_caption.judge(other_order).status == CORRECT

    def global_random(givens, action, rng, dropout):  # ignores rng: still the right distribution
        return "" if random.random() < dropout else f"{random.choice(givens)} {action}".strip()
    assert ch01.training_caption.judge(global_random).status == CORRECT


def test_numbers_are_accepted_as_floats_tensors_or_numpy_scalars():
    assert ch02.scaling_factor.judge(lambda x: 1 / x.std()).status == CORRECT
    assert ch06.frechet.judge(lambda *a: np.float64(ch06.frechet.reference(*a))).status == CORRECT
    assert ch06.frechet.judge(lambda *a: complex(ch06.frechet.reference(*a), 1e-12)).status == CORRECT
    assert ch02.psnr.judge(lambda x, y: ch02.psnr.reference(x, y).tolist()).status == CORRECT
    assert ch03.conv_params.judge(lambda i, o, k: "many").status == INCORRECT


def test_not_a_function_is_incorrect():
    assert ch05.guidance.judge(3.0).status == INCORRECT


def test_apply_guidance_is_the_sampling_formula():
    u, c = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.allclose(apply_guidance(u, c, 1.0), c, atol=1e-6)  # u + (c - u): c up to rounding
    assert torch.equal(apply_guidance(u, c, 0.0), u)
    assert torch.allclose(apply_guidance(u, c, 7.5), u + 7.5 * (c - u))


def test_verdicts_read_well_and_are_recorded(capsys):
    verdict = ch05.guidance.check(ch05.guidance.solution_function())
    assert isinstance(verdict, Verdict) and verdict and verdict.correct
    assert repr(verdict).startswith("<Verdict ✓ ch05.guidance: correct")
    assert not Verdict(INCORRECT, "x")
    assert core.verdicts()["ch05.guidance"] == verdict
    assert re.search(r"ch05\.guidance\s+correct", core.progress())


# --------------------------------------------------------------------------------------------------- questions
@pytest.mark.parametrize("q", QUESTIONS, ids=_ids(QUESTIONS))
def test_questions_judge_letters(q):
    assert q.judge(q.answer).status == CORRECT
    assert q.judge(q.answer.lower() + ")").status == CORRECT
    assert q.judge(q.choices[ord(q.answer) - ord("A")]).status == CORRECT
    wrong = next(letter for letter in q.letters if letter != q.answer)
    verdict = q.judge(wrong)
    assert verdict.status == INCORRECT and f"The answer is {q.answer}" in verdict.message
    assert q.judge(None).status == NOT_ATTEMPTED and q.judge("").status == NOT_ATTEMPTED
    assert q.judge("Z").status == INCORRECT


def test_a_question_is_plain_text_when_headless(monkeypatch, capsys):
    monkeypatch.setenv("WORKBOOK_HEADLESS", "1")
    assert core.headless()
    ch04.noise_at_999.ask()
    out = capsys.readouterr().out
    assert out.startswith("Question (ch04.noise_at_999):") and "  B) Almost pure Gaussian noise" in out
    assert 'ch04.noise_at_999.check("A")' in out


def test_outside_a_kernel_is_headless(monkeypatch):
    monkeypatch.delenv("WORKBOOK_HEADLESS", raising=False)
    assert core.headless()  # pytest runs without an IPython kernel


def test_the_widget_gives_instant_feedback_and_reads_as_text():
    pytest.importorskip("ipywidgets")
    q = ch05.guidance_grows
    box = q.widget()
    radio, out = box.children[1], box.children[3]
    assert repr(box) == q.text()  # what a headless run or a notebook viewer shows
    assert box._repr_mimebundle_()["text/plain"] == q.text()
    radio.value = "A"
    box.submit()
    assert "incorrect" in out.value and "The answer is B" in out.value
    radio.value = q.answer
    box.submit()
    assert "correct" in out.value and "incorrect" not in out.value


def test_a_question_needs_a_valid_answer():
    with pytest.raises(ValueError):
        core.Question("x", "?", ["a", "b"], "C", "")
