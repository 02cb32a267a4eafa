"""The Trainer every kdflow training step uses: Hugging Face's, stopped by a loss that is no longer finite, reporting
its progress (kdflow.components.common.progress)."""

import math
import time

from transformers import Trainer, TrainerCallback

from .errors import KdflowInputError
from .progress import Progress


class GuardedTrainer(Trainer):
    """A Trainer that stops at the first training step whose loss is NaN or infinite.

    Such a step would leave NaN weights behind, and the run would go on to evaluate, export and maybe publish a
    broken model. `learning_rate_parameter` names the pipeline parameter the error tells the user to lower.
    """

    def __init__(self, *args, learning_rate_parameter: str = "learning_rate", **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate_parameter = learning_rate_parameter
        self.add_callback(TrainingProgress())

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # One device sync a step, as Trainer's own logging_nan_inf_filter already costs.
        value = loss.item()
        if not math.isfinite(value):
            raise non_finite_loss_error(value, self.state.global_step + 1, self.state.max_steps, self.args,
                                        self.learning_rate_parameter)
        return loss


def non_finite_loss_error(value: float, step: int, max_steps: int, args, learning_rate_parameter: str):
    return KdflowInputError(
        f"The training loss became {value} at step {step} of {max_steps}, so training stopped: the usual causes are "
        f"a learning rate too high (lower {learning_rate_parameter}, now {args.learning_rate:g}) and fp16 overflow "
        "(set precision=bf16 or fp32)."
    )


class TrainingProgress(TrainerCallback):
    """Optimizer steps done of the training's total, with the latest loss and the samples per second, from the
    first process only (under torchrun every process trains)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = Progress("training", state.max_steps, "steps")
        self.samples_per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.first_step, self.loss = state.global_step, None  # a resumed training starts past 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        elapsed = time.monotonic() - self.progress.started
        samples = (state.global_step - self.first_step) * self.samples_per_step
        figures = {"samples_per_s": round(samples / elapsed, 1) if elapsed else None}
        if self.loss is not None:
            figures["loss"] = round(self.loss, 4)
        self.progress.update(state.global_step, **figures)
