"""The Trainer every kdflow training step uses: Hugging Face's, stopped by a loss that is no longer finite."""

import math

from transformers import Trainer

from .errors import KdflowInputError


class GuardedTrainer(Trainer):
    """A Trainer that stops at the first training step whose loss is NaN or infinite.

    Such a step would leave NaN weights behind, and the run would go on to evaluate, export and maybe publish a
    broken model. `learning_rate_parameter` names the pipeline parameter the error tells the user to lower.
    """

    def __init__(self, *args, learning_rate_parameter: str = "learning_rate", **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rate_parameter = learning_rate_parameter

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
