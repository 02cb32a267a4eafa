"""The distillation loss against values worked out by hand, and its properties."""

import math

import pytest
import torch

from kdflow.components.distill.losses import distillation_loss


def test_loss_matches_hand_computed_values():
    # Student [1, 0], teacher [0, 1], label 0, T = 2, alpha = 0.5.
    # CE = log(1 + e^-1). Softened: p_teacher = softmax([0, .5]), p_student = softmax([.5, 0]), the same pair
    # mirrored, so KL = (p1 - p0) * 0.5 with p1 = e^.5 / (1 + e^.5); the soft term is T^2 * KL.
    ce = math.log(1 + math.exp(-1))
    p1 = math.exp(0.5) / (1 + math.exp(0.5))
    kl = (p1 - (1 - p1)) * 0.5
    loss = distillation_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0]), 2.0, 0.5)
    assert loss.hard.item() == pytest.approx(ce, abs=1e-6)
    assert loss.soft.item() == pytest.approx(4 * kl, abs=1e-6)
    assert loss.total.item() == pytest.approx(0.5 * ce + 0.5 * 4 * kl, abs=1e-6)


def test_soft_term_is_zero_for_identical_logits_and_scales_with_t_squared():
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 2, 0, 1])
    assert distillation_loss(logits, logits.clone(), labels, 2.0, 0.5).soft.item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(5, 3)
    # KL at temperature T times T^2, computed independently with explicit sums.
    for temperature in (1.0, 2.0, 4.0):
        p_teacher = torch.softmax(teacher / temperature, -1)
        log_p_student = torch.log_softmax(logits / temperature, -1)
        expected = (p_teacher * (p_teacher.log() - log_p_student)).sum() / 5 * temperature**2
        got = distillation_loss(logits, teacher, labels, temperature, 0.5).soft
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_batchmean_makes_the_loss_independent_of_batch_size():
    student, teacher, labels = torch.randn(4, 2), torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    once = distillation_loss(student, teacher, labels, 2.0, 0.5)
    twice = distillation_loss(student.repeat(2, 1), teacher.repeat(2, 1), labels.repeat(2), 2.0, 0.5)
    assert twice.total.item() == pytest.approx(once.total.item(), rel=1e-6)


def test_alpha_weights_the_hard_and_soft_terms():
    student, teacher, labels = torch.randn(6, 2), torch.randn(6, 2), torch.randint(0, 2, (6,))
    hard_only = distillation_loss(student, teacher, labels, 2.0, 1.0)
    soft_only = distillation_loss(student, teacher, labels, 2.0, 0.0)
    mixed = distillation_loss(student, teacher, labels, 2.0, 0.3)
    assert hard_only.total.item() == pytest.approx(torch.nn.functional.cross_entropy(student, labels).item(), rel=1e-6)
    assert soft_only.total.item() == pytest.approx(soft_only.soft.item(), rel=1e-6)
    assert mixed.total.item() == pytest.approx(0.3 * hard_only.total.item() + 0.7 * soft_only.total.item(), rel=1e-5)


def test_loss_is_computed_in_float32_from_half_precision_logits():
    student, teacher = torch.randn(3, 2).bfloat16(), torch.randn(3, 2).bfloat16()
    assert distillation_loss(student, teacher, torch.tensor([0, 1, 0]), 2.0, 0.5).total.dtype == torch.float32
