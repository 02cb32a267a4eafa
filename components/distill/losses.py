"""The distillation loss of the recipe, as a pure function of logits."""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class DistillationLoss(NamedTuple):
    total: torch.Tensor  # alpha * hard + (1 - alpha) * soft, what is optimised
    hard: torch.Tensor  # cross-entropy with the true labels
    soft: torch.Tensor  # T^2 * KL(teacher || student) on temperature-softened distributions


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> DistillationLoss:
    """`alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))`.

    Both terms are means over the batch (KL with `batchmean`, its mathematical definition), so the loss does
    not depend on the batch size. T^2 keeps the soft term's gradients on the scale of the hard term's
    (Hinton et al., 2015). Computed in float32 whatever the autocast precision.
    """
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    hard = F.cross_entropy(student_logits, labels)
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * temperature**2
    return DistillationLoss(alpha * hard + (1 - alpha) * soft, hard, soft)
