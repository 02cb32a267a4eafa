"""The distillation loss against values worked out by hand, and its properties."""

import math

import pytest
import torch

from kdflow.components.common.data import UNLABELED
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.distill.intermediate import IntermediateMatcher, default_layer_map
from kdflow.components.distill.losses import attention_kl_loss, distillation_loss, hidden_cosine_loss, hidden_mse_loss
from kdflow.components.distill.settings import TERMS, parse_layer_map


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


# The intermediate-layer terms (losses.py), each against values worked out by hand.

def test_unlabeled_rows_never_enter_the_hard_term():
    student, teacher = torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.zeros(2, 2)
    labeled_only = distillation_loss(student[:1], teacher[:1], torch.tensor([0]), 2.0, 0.5)
    mixed = distillation_loss(student, teacher, torch.tensor([0, UNLABELED]), 2.0, 0.5)
    assert mixed.hard.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert mixed.hard.item() == pytest.approx(labeled_only.hard.item(), abs=1e-6)
    # The soft term takes every row, the unlabeled one included.
    assert mixed.soft.item() > labeled_only.soft.item()
    # Any change to an unlabeled row's label-free logits moves the soft term only.
    unlabeled_only = distillation_loss(student[1:], teacher[1:], torch.tensor([UNLABELED]), 2.0, 0.5)
    assert unlabeled_only.hard.item() == 0.0 and math.isfinite(unlabeled_only.total.item())


def test_hidden_cosine_loss_is_one_minus_the_cosine_over_real_tokens():
    # Token 1: (1, 0) vs (1, 1): cos = 1/sqrt(2). Token 2: (0, 2) vs (0, 5): cos = 1. Token 3 is padding.
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[1.0, 1.0], [0.0, 5.0], [-9.0, 1.0]]])
    mask = torch.tensor([[1, 1, 0]])
    expected = ((1 - 1 / math.sqrt(2)) + 0.0) / 2
    assert hidden_cosine_loss(student, teacher, mask).item() == pytest.approx(expected, abs=1e-6)


def test_hidden_mse_loss_averages_squared_differences_over_real_tokens_and_features():
    student = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 3.0], [7.0, 7.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 3.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1], [1, 0]])
    # Real tokens: (0 + 4) / 2 = 2, (1 + 1) / 2 = 1, (9 + 0) / 2 = 4.5; the padded (7, 7) is left out.
    assert hidden_mse_loss(student, teacher, mask).item() == pytest.approx((2 + 1 + 4.5) / 3, abs=1e-6)


def test_attention_kl_is_the_kl_of_each_query_row_averaged_over_heads_and_real_queries():
    # One sequence, 2 heads, 2 real queries and a padded third token (its key gets 0, its query row is ignored).
    teacher = torch.tensor([[[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.3, 0.7, 0.0]],
                             [[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.1, 0.9, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.9, 0.1, 0.0]],
                             [[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]]])
    mask = torch.tensor([[1, 1, 0]])

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)

    head_0 = (kl([0.5, 0.5], [0.25, 0.75]) + kl([1.0, 0.0], [0.5, 0.5])) / 2
    head_1 = 0.0  # identical maps on the real queries
    assert attention_kl_loss(student, teacher, mask).item() == pytest.approx((head_0 + head_1) / 2, abs=1e-6)


def test_attention_kl_with_other_head_counts_compares_the_head_averaged_maps():
    teacher = torch.softmax(torch.randn(1, 4, 3, 3), dim=-1)
    student = torch.softmax(torch.randn(1, 2, 3, 3), dim=-1)
    mask = torch.ones(1, 3, dtype=torch.long)
    p, q = teacher.mean(dim=1), student.mean(dim=1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert attention_kl_loss(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("term", [hidden_cosine_loss, hidden_mse_loss])
def test_hidden_terms_are_zero_for_identical_states_and_positive_otherwise(term):
    hidden, mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.long)
    assert term(hidden, hidden.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)
    assert term(hidden, torch.randn(2, 4, 8), mask).item() > 0


def test_every_intermediate_term_reaches_the_students_parameters_and_the_projections():
    """Gradients flow from each weighted term into the student's encoder and, where widths differ, the projections."""
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig
    from transformers import DistilBertForSequenceClassification

    teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4,
                                                       num_attention_heads=4, intermediate_size=32)).eval()
    student = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=8, n_layers=2, n_heads=2,
                                                                   hidden_dim=16))
    for model in (teacher, student):
        model.set_attn_implementation("eager")
    inputs = {"input_ids": torch.randint(0, 50, (2, 6)), "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])}
    for setting, name in TERMS.items():
        matcher = IntermediateMatcher({setting: 1.0}, {1: 2, 2: 4}, student_width=8, teacher_width=16)
        student.zero_grad()
        with torch.no_grad():
            teacher_outputs = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        outputs = student(**inputs, output_hidden_states=True, output_attentions=True)
        terms = matcher(outputs, teacher_outputs, inputs["attention_mask"])
        assert list(terms) == [name]
        matcher.weighted(terms).backward()
        embeddings = student.distilbert.embeddings.word_embeddings.weight.grad
        assert embeddings is not None and embeddings.abs().sum() > 0, name
        if setting != "attention_kl_weight":  # the width-bound terms go through a projection of the student's states
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in matcher.projections.parameters())


def test_layer_maps_parse_and_default_to_the_layers_a_student_was_made_from():
    assert parse_layer_map("1:2, 2:4,3:6") == {1: 2, 2: 4, 3: 6}
    assert parse_layer_map("") == {}
    assert default_layer_map(3, 6, made_from=[1, 3, 5]) == {1: 1, 2: 3, 3: 5}
    assert default_layer_map(3, 6) == {1: 2, 2: 4, 3: 6}  # uniform: the last student layer learns the last teacher's
    assert default_layer_map(2, 12) == {1: 6, 2: 12}


@pytest.mark.parametrize("text, needle", [
    ("1-2", "is not STUDENT:TEACHER pairs"), ("0:1", "names layer 0"), ("1:2,1:3", "maps student layer 1 twice"),
    ("a:b", "is not STUDENT:TEACHER pairs"),
])
def test_a_layer_map_that_does_not_read_is_refused(text, needle):
    with pytest.raises(KdflowInputError, match=needle):
        parse_layer_map(text)


def test_multi_label_loss_matches_hand_computed_values():
    # One row, two labels: student logits [2, -1], teacher [0, 1], labels [1, 0], T = 2, alpha = 0.5.
    # Hard: the mean of the two binary cross-entropies. Soft: the mean of the two labels' binary KL between
    # sigmoid(teacher / 2) and sigmoid(student / 2), times T^2.
    def sigmoid(x):
        return 1 / (1 + math.exp(-x))

    def binary_kl(p, q):
        return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))

    hard = (-math.log(sigmoid(2)) - math.log(1 - sigmoid(-1))) / 2
    soft = 4 * (binary_kl(sigmoid(0), sigmoid(1)) + binary_kl(sigmoid(0.5), sigmoid(-0.5))) / 2
    loss = distillation_loss(torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]),
                             2.0, 0.5, multi_label=True)
    assert loss.hard.item() == pytest.approx(hard, abs=1e-6)
    assert loss.soft.item() == pytest.approx(soft, abs=1e-6)
    assert loss.total.item() == pytest.approx(0.5 * hard + 0.5 * soft, abs=1e-6)


def test_multi_label_unlabeled_rows_teach_through_the_teacher_only():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [UNLABELED] * 3, [UNLABELED] * 3])
    mixed = distillation_loss(student, teacher, labels, 2.0, 0.5, multi_label=True)
    labeled = distillation_loss(student[:2], teacher[:2], labels[:2], 2.0, 0.5, multi_label=True)
    assert mixed.hard.item() == pytest.approx(labeled.hard.item(), abs=1e-6)  # the unlabeled rows left out
    unlabeled = distillation_loss(student[2:], teacher[2:], labels[2:], 2.0, 0.5, multi_label=True)
    assert unlabeled.hard.item() == 0.0 and unlabeled.soft.item() > 0
    same = distillation_loss(teacher, teacher, labels, 2.0, 0.5, multi_label=True)
    assert same.soft.item() == pytest.approx(0.0, abs=1e-6)  # no KL between equal distributions
    # Extreme logits stay finite: the KL is computed from log-sigmoids. Each label's teacher is sure (1 - e^-80) of
    # what the student gives probability e^-80: KL = -log(e^-80) = 80.
    extreme = distillation_loss(torch.tensor([[80.0, -80.0]]), torch.tensor([[-80.0, 80.0]]),
                                torch.tensor([[1.0, 0.0]]), 1.0, 0.5, multi_label=True)
    assert extreme.soft.item() == pytest.approx(80.0, rel=1e-4)
