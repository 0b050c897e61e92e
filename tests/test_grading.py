"""The graded exercises' helpers: a reference made unreachable for a test, a stub falling back."""

from __future__ import annotations

import pytest
import torch

import qatcore.quantizers
from qatcore.course.grading import ReferenceUnavailable, unreachable, yours_or_reference
from qatcore.quantizers import uniform_quantize

W = torch.linspace(-1.5, 1.5, 11, dtype=torch.float64)


def delegating(w, bits, m):
    return uniform_quantize(w, bits, m)


def through_the_module(w, bits, m):
    return qatcore.quantizers.uniform_quantize(w, bits, m)


def written(w, bits, m):
    delta = 2 * m / (2**bits - 1)
    return delta * torch.round((w.clamp(-m, m) + m) / delta) - m


def test_a_delegating_answer_raises_inside_and_works_again_after():
    expected = uniform_quantize(W, 2, 1.0)
    for answer in (delegating, through_the_module):
        with unreachable("qatcore.quantizers.uniform_quantize"):
            with pytest.raises(ReferenceUnavailable, match="uniform_quantize"):
                answer(W, 2, 1.0)
        assert torch.equal(answer(W, 2, 1.0), expected)
    with unreachable("qatcore.quantizers.uniform_quantize"):
        assert torch.equal(written(W, 2, 1.0), expected)


def test_other_modules_that_imported_the_reference_are_covered_too():
    from qatcore.estimators import layers

    original = layers.uniform_quantize
    assert original is uniform_quantize
    with unreachable("qatcore.quantizers.uniform_quantize"):
        assert layers.uniform_quantize is not original
        with pytest.raises(ReferenceUnavailable):
            layers.uniform_quantize(W, 2, 1.0)
    assert layers.uniform_quantize is uniform_quantize


def test_a_method_of_a_class_is_unreachable_and_restored():
    from qatcore.cost.cost_models import ACEv2, Operation

    op = Operation("x", "mul", 3, (4, 8))
    before = ACEv2().cost(op)
    with unreachable("qatcore.cost.cost_models.ACEv2.cost"):
        with pytest.raises(ReferenceUnavailable):
            ACEv2().cost(op)
    assert ACEv2().cost(op) == before == 96


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="qatcore"):
        unreachable("numpy.sum").__enter__()
    with pytest.raises(ValueError, match="does not exist"):
        unreachable("qatcore.quantizers.no_such_function").__enter__()
    with pytest.raises(ValueError, match="at least one"):
        unreachable()


def test_a_stub_falls_back_to_the_reference_with_one_note(capsys):
    def my_quantize(w, bits, m):
        raise NotImplementedError()

    quantize = yours_or_reference(my_quantize, uniform_quantize)
    assert torch.equal(quantize(W, 2, 1.0), uniform_quantize(W, 2, 1.0))
    quantize(W, 2, 1.0)
    out = capsys.readouterr().out
    assert out.count("note: my_quantize is not written yet") == 1
    assert "qatcore.quantizers.uniform_quantize" in out
    mine = yours_or_reference(written, uniform_quantize)
    assert torch.equal(mine(W, 3, 1.0), uniform_quantize(W, 3, 1.0))
    assert capsys.readouterr().out == ""
    named = yours_or_reference(
        my_quantize, lambda w, bits, m: uniform_quantize(w, bits, m), "qatcore's Q"
    )
    named(W, 2, 1.0)
    assert "the cells below use qatcore's Q until it is" in capsys.readouterr().out


def test_a_wrong_answer_is_not_hidden_by_the_fallback():
    def my_quantize(w, bits, m):
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        yours_or_reference(my_quantize, uniform_quantize)(W, 2, 1.0)
