"""The recipe's Trainer subclass: hyperparameters, the collator, and `compute_loss`, which only orchestrates."""

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments
from transformers.modeling_outputs import SequenceClassifierOutput

from kdflow.components.common.models import is_multi_label
from kdflow.components.common.settings import help_of
from kdflow.components.common.trainer import GuardedTrainer
from kdflow.components.common.training import pad_batch

from .intermediate import MATCHER
from .losses import distillation_loss
from .settings import Settings, check_loss

TEACHER_LOGITS = "teacher_logits"
# In online mode with a student tokenizer of its own, the teacher reads the data's original token ids.
TEACHER_INPUT_PREFIX = "teacher_"
TEACHER_INPUTS = ["teacher_input_ids", "teacher_attention_mask"]


@dataclass
class DistillationArguments(TrainingArguments):
    """TrainingArguments with the loss's settings, required: their defaults are the pipeline's (settings.py)."""

    temperature: float = field(default=None, metadata={"help": help_of(Settings)["temperature"]})
    alpha: float = field(default=None, metadata={"help": help_of(Settings)["alpha"]})

    def __post_init__(self):
        if self.temperature is None or self.alpha is None:
            raise TypeError("DistillationArguments needs temperature and alpha.")
        check_loss(self.temperature, self.alpha)
        super().__post_init__()


class DistillationCollator:
    """Pads a batch for the student; passes cached teacher logits, or pads the teacher's own token ids."""

    def __init__(self, tokenizer, max_length: int, teacher_tokenizer=None):
        self.tokenizer = tokenizer
        self.max_length = max_length  # the data's: padding never goes beyond it
        self.teacher_tokenizer = teacher_tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        batch = pad_batch(self.tokenizer, rows, self.max_length)
        if TEACHER_LOGITS in rows[0]:
            batch[TEACHER_LOGITS] = torch.tensor([row[TEACHER_LOGITS] for row in rows], dtype=torch.float32)
        if TEACHER_INPUTS[0] in rows[0]:
            teacher_rows = [{name[len(TEACHER_INPUT_PREFIX):]: row[name] for name in TEACHER_INPUTS} for row in rows]
            padded = self.teacher_tokenizer.pad(teacher_rows, return_tensors="pt")
            batch.update({TEACHER_INPUT_PREFIX + name: value for name, value in padded.items()})
        return batch


class DistillationTrainer(GuardedTrainer):
    """A Trainer whose loss mixes the hard labels with the teacher's softened distribution.

    The teacher's logits come with the batch (cached, computed once by teacher_eval) or, in online mode,
    from `teacher`, run in eval mode without gradients. The student is the `model` argument, so DDP
    wrapping works. A student carrying an intermediate.IntermediateMatcher (attribute MATCHER) also learns from
    the teacher's hidden states and attention maps, which only online mode has. Each term is logged beside the
    total; a non-finite loss stops training (GuardedTrainer).
    """

    # The loss is a per-batch mean: Trainer must divide it by the accumulation steps (FACTS: otherwise
    # gradient accumulation 2 doubles the loss, since DistilBERT's forward accepts loss kwargs).
    loss_is_scaled_for_ga = False

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        if teacher is not None:
            self.teacher.to(self.args.device).eval().requires_grad_(False)
        self._loss_terms = {}  # each loss term's values since the last log, by its logged name

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop(TEACHER_LOGITS, None)
        teacher_inputs = {name[len(TEACHER_INPUT_PREFIX):]: inputs.pop(name) for name in TEACHER_INPUTS if name in inputs}
        matcher = getattr(self.accelerator.unwrap_model(model), MATCHER, None)
        internals = dict(output_hidden_states=True, output_attentions=matcher.needs_attentions) if matcher else {}
        outputs = model(**inputs, **internals)
        if teacher_logits is None:
            with torch.no_grad():
                teacher_outputs = self.teacher(**(teacher_inputs or inputs), **internals)
            teacher_logits = teacher_outputs.logits
        multi_label = is_multi_label(self.accelerator.unwrap_model(model).config)
        loss = distillation_loss(outputs.logits, teacher_logits, labels, self.args.temperature, self.args.alpha,
                                 multi_label)
        total, terms = loss.total, {"hard_loss": loss.hard, "soft_loss": loss.soft}
        if matcher:
            intermediate = matcher(outputs, teacher_outputs, inputs["attention_mask"])
            total = total + matcher.weighted(intermediate)
            terms.update(intermediate)
        if model.training:
            for name, value in terms.items():
                self._loss_terms.setdefault(name, []).append(value.detach())
        # Only the logits go on to evaluation, which would otherwise gather every layer's hidden states.
        return (total, SequenceClassifierOutput(logits=outputs.logits)) if return_outputs else total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_terms:
            for name, values in self._loss_terms.items():
                if not values:
                    continue
                # Every process logs at the same step: the mean over all of them, as Trainer does for `loss`.
                mean = self.accelerator.reduce(torch.stack(values).mean(), reduction="mean")
                logs[name] = round(mean.item(), 6)
                values.clear()
        super().log(logs, start_time)
