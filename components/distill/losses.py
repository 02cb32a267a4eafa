"""The distillation losses, as pure functions of tensors: the recipe's logit loss and the intermediate-layer terms
(DistilBERT's hidden-state cosine, TinyBERT's hidden-state and embedding MSE, MiniLM/TinyBERT's attention KL)."""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdflow.components.common.data import UNLABELED


class DistillationLoss(NamedTuple):
    total: torch.Tensor  # alpha * hard + (1 - alpha) * soft, what is optimised
    hard: torch.Tensor  # cross-entropy with the true labels, over the labeled rows
    soft: torch.Tensor  # T^2 * KL(teacher || student) on temperature-softened distributions, over every row


def hard_label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the rows that have a label; unlabeled rows (label UNLABELED) never enter it. A batch of
    unlabeled rows only gives 0 (cross_entropy's ignore_index would give NaN: a mean over no rows)."""
    labeled = labels != UNLABELED
    if not labeled.any():
        return student_logits.sum() * 0.0  # keeps the graph, so every process's backward matches under DDP
    return F.cross_entropy(student_logits[labeled], labels[labeled])


def multi_label_hard_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per label (labels a 0/1 float each), the mean over the labels of the labeled rows; an
    unlabeled row's labels are all UNLABELED."""
    labeled = labels[:, 0] != UNLABELED
    if not labeled.any():
        return student_logits.sum() * 0.0  # as in hard_label_loss
    return F.binary_cross_entropy_with_logits(student_logits[labeled], labels[labeled].float())


def binary_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of each label's two-outcome distribution (sigmoid(z), 1 - sigmoid(z)), averaged over
    the rows and labels; log-sigmoids keep it finite where a probability rounds to 0 or 1."""
    teacher_yes, teacher_no = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    student_yes, student_no = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    kl = teacher_yes.exp() * (teacher_yes - student_yes) + teacher_no.exp() * (teacher_no - student_no)
    return kl.mean()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, multi_label: bool = False) -> DistillationLoss:
    """`alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))`.

    Both terms are means over the batch's rows (KL with `batchmean`, its mathematical definition; the hard term over
    the labeled rows), so the loss does not depend on the batch size. T^2 keeps the soft term's gradients on the
    scale of the hard term's (Hinton et al., 2015). Computed in float32 whatever the autocast precision.

    `multi_label`: each label is its own yes/no question: the hard term is binary cross-entropy, the soft term the
    binary KL of sigmoid(teacher/T) and sigmoid(student/T), T^2-scaled; both means over rows and labels, so they do
    not depend on the number of labels either.
    """
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    if multi_label:
        hard = multi_label_hard_loss(student_logits, labels)
        soft = binary_kl(student_logits / temperature, teacher_logits / temperature) * temperature**2
        return DistillationLoss(alpha * hard + (1 - alpha) * soft, hard, soft)
    hard = hard_label_loss(student_logits, labels)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    return DistillationLoss(alpha * hard + (1 - alpha) * soft, hard, soft)


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of per-token `values` (batch, tokens) over the real tokens of `mask` (1 = token, 0 = padding)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def hidden_cosine_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """DistilBERT's cosine loss: 1 - cos(student, teacher) per token, averaged over the real tokens.

    Hidden states are (batch, tokens, width), of one width (project the student's first when they differ).
    """
    cosine = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return token_mean(1.0 - cosine, mask)


def hidden_mse_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's hidden-state (and embedding) loss: the squared difference averaged over the real tokens' features.

    Hidden states are (batch, tokens, width), of one width: TinyBERT projects the student's with a learned matrix.
    """
    squared = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(dim=-1)
    return token_mean(squared, mask)


def attention_kl_loss(student_attention: torch.Tensor, teacher_attention: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) between self-attention distributions (MiniLM; TinyBERT matches the same maps with MSE).

    Attention maps are (batch, heads, queries, keys) probabilities, padded keys at 0. The KL of each query's
    distribution over the keys is averaged over the heads and the real query tokens. With as many heads on both
    sides, head h is matched to head h; when the counts differ no head corresponds to another, so each side's
    heads are averaged into one distribution per query first (still a distribution: a mean of distributions).
    """
    student_attention, teacher_attention = student_attention.float(), teacher_attention.float()
    if student_attention.shape[1] != teacher_attention.shape[1]:
        student_attention = student_attention.mean(dim=1, keepdim=True)
        teacher_attention = teacher_attention.mean(dim=1, keepdim=True)
    # xlogy gives 0 where the teacher gives a key 0 (padding); the clamp keeps log finite where the student does.
    kl = (torch.special.xlogy(teacher_attention, teacher_attention)
          - teacher_attention * student_attention.clamp_min(1e-12).log()).sum(dim=-1)  # (batch, heads, queries)
    return token_mean(kl.mean(dim=1), mask)
