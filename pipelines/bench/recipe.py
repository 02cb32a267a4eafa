"""The notebook recipe as written, the yardstick of `kdflow bench train`.

Ported only as far as current transformers requires (`processing_class`, `compute_loss` taking
`num_items_in_batch`) and as far as its student requires (a DistilBERT has no token_type_ids, so the tokenizer
leaves them out). Its costs are kept on purpose: every review is padded inside `dataset.map` to the longest of its
1000-row map batch, the teacher runs a full forward pass at every step of every epoch, batch 8, fp16 on a GPU.
"""

import time

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

BATCH_SIZE = 8
# The recipe's student is DistilBERT as configured by default: dropout 0.1 on the attention weights too.
ATTENTION_DROPOUT = 0.1


class RecipeDistillationTrainer(Trainer):
    def __init__(self, *args, teacher_model=None, temperature=2.0, alpha=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher_model.to(self.model.device).eval()
        self.temperature = temperature
        self.alpha = alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs_student = model(**inputs)
        with torch.no_grad():
            outputs_teacher = self.teacher(**inputs)
        loss_kd = F.kl_div(
            F.log_softmax(outputs_student.logits / self.temperature, dim=-1),
            F.softmax(outputs_teacher.logits / self.temperature, dim=-1),
            reduction="batchmean",
        ) * self.temperature ** 2
        loss = self.alpha * outputs_student.loss + (1 - self.alpha) * loss_kd
        return (loss, outputs_student) if return_outputs else loss


def train(dataset, teacher, student, tokenizer, output_dir: str, *, max_length: int, epochs: float,
          max_steps: int = 0, seed: int = 42) -> dict:
    """Tokenizes `dataset` (text, label) and distills `teacher` into `student` as the recipe does; saves the student.

    Returns the seconds spent tokenizing and training, the optimizer steps and the samples they took.
    """
    started = time.perf_counter()
    tokenized = dataset.map(
        lambda batch: tokenizer(batch["text"], padding=True, truncation=True, max_length=max_length,
                                return_token_type_ids=False),
        batched=True,
    )
    tokenize_s = time.perf_counter() - started
    args = TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, max_steps=max_steps or -1,
        per_device_train_batch_size=BATCH_SIZE, fp16=torch.cuda.is_available(), save_strategy="no",
        report_to="none", disable_tqdm=True, logging_steps=50, seed=seed,
    )
    trainer = RecipeDistillationTrainer(model=student, args=args, train_dataset=tokenized, processing_class=tokenizer,
                                        teacher_model=teacher)
    metrics = trainer.train().metrics
    trainer.save_model(output_dir)
    steps = trainer.state.global_step
    samples = min(steps * BATCH_SIZE, len(dataset) * epochs) if max_steps else len(dataset) * epochs
    return {"tokenize_s": tokenize_s, "train_s": metrics["train_runtime"], "steps": steps, "samples": samples}
