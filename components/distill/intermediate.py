"""Intermediate-layer matching: which student layer learns from which teacher layer, the projections that bridge
their widths, and the weighted terms of losses.py that the distillation Trainer adds to the logit loss.

Layers are counted from 1 as in a model's `hidden_states` (index 0 is the embeddings' output, matched by the
embedding term alone). A layer map is written `STUDENT:TEACHER` pairs, e.g. `1:2,2:4,3:6`.
"""

import torch
from torch import nn

from kdflow.components.common.errors import KdflowInputError

from .losses import attention_kl_loss, hidden_cosine_loss, hidden_mse_loss
from .settings import TERMS

# Terms that compare hidden states feature by feature, so the widths must agree (through a projection if not).
WIDTH_BOUND = ("hidden_cosine_weight", "hidden_mse_weight", "embedding_mse_weight")
# The attribute of the student that holds the matcher while it trains: as a submodule of the student its
# projections are trained, synchronised under DDP and checkpointed with it; it is removed before the student is
# saved, so no projection is ever exported.
MATCHER = "kdflow_intermediate_matcher"


def default_layer_map(student_layers: int, teacher_layers: int, made_from: list[int] | None = None) -> dict[int, int]:
    """A from_teacher student's layer i learns from the teacher layer it was made from (`made_from`, counted from 1);
    any other student is spread uniformly over the teacher (TinyBERT): layer i from teacher layer i * T / S."""
    if made_from:
        return {index + 1: layer for index, layer in enumerate(made_from)}
    return {layer: round(layer * teacher_layers / student_layers) for layer in range(1, student_layers + 1)}


def check_layer_map(layer_map: dict[int, int], student_layers: int, teacher_layers: int, text: str) -> None:
    for student_layer, teacher_layer in layer_map.items():
        if student_layer > student_layers or teacher_layer > teacher_layers:
            side, layer, count = (("student", student_layer, student_layers) if student_layer > student_layers
                                  else ("teacher", teacher_layer, teacher_layers))
            raise KdflowInputError(f"layer_map={text!r} names {side} layer {layer}, but the {side} has {count} "
                                   f"layers: use layers 1 to {count}.")


class IntermediateMatcher(nn.Module):
    """The weighted intermediate terms of a student against its teacher, with the linear projections (student width
    to teacher width, one per matched layer and one for the embeddings, as TinyBERT's W_h and W_e) that the
    width-bound terms need when the two widths differ."""

    def __init__(self, weights: dict[str, float], layer_map: dict[int, int], student_width: int, teacher_width: int):
        super().__init__()
        self.weights = {name: weight for name, weight in weights.items() if weight > 0}
        self.layer_map = layer_map
        bridged = student_width != teacher_width and any(name in self.weights for name in WIDTH_BOUND)
        self.projections = nn.ModuleDict({
            str(layer): nn.Linear(student_width, teacher_width) for layer in [0, *layer_map]
        } if bridged else {})

    @property
    def needs_attentions(self) -> bool:
        return "attention_kl_weight" in self.weights

    def project(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        return self.projections[str(layer)](hidden) if self.projections else hidden

    def forward(self, student_outputs, teacher_outputs, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term asked for, by its logged name, unweighted; each a mean over the mapped layers, so a weight means
        the same for any number of them. `weighted(terms)` sums them with their weights."""
        student_hidden, teacher_hidden = student_outputs.hidden_states, teacher_outputs.hidden_states
        pairs = list(self.layer_map.items())
        terms = {}
        if "hidden_cosine_weight" in self.weights:
            terms["hidden_cosine_loss"] = torch.stack([
                hidden_cosine_loss(self.project(student_hidden[s], s), teacher_hidden[t], mask) for s, t in pairs
            ]).mean()
        if "hidden_mse_weight" in self.weights:
            terms["hidden_mse_loss"] = torch.stack([
                hidden_mse_loss(self.project(student_hidden[s], s), teacher_hidden[t], mask) for s, t in pairs
            ]).mean()
        if "embedding_mse_weight" in self.weights:
            terms["embedding_mse_loss"] = hidden_mse_loss(self.project(student_hidden[0], 0), teacher_hidden[0], mask)
        if "attention_kl_weight" in self.weights:
            terms["attention_kl_loss"] = torch.stack([
                attention_kl_loss(student_outputs.attentions[s - 1], teacher_outputs.attentions[t - 1], mask)
                for s, t in pairs
            ]).mean()
        return terms

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[setting] * terms[name] for setting, name in TERMS.items() if name in terms)
