"""Checks of the distillation hyperparameters, light enough for the command line to run before a pipeline starts."""

from kdflow.components.common.errors import KdflowInputError

MODES = ("cached", "online")


def check_distillation_hyperparameters(temperature: float, alpha: float, distill_mode: str = "cached") -> None:
    if not temperature > 0:
        raise KdflowInputError(f"temperature={temperature} must be above 0: the recipe uses 2.0.")
    if not 0 <= alpha <= 1:
        raise KdflowInputError(
            f"alpha={alpha} must lie in [0, 1] (the weight of the hard-label loss): the recipe uses 0.5."
        )
    if distill_mode not in MODES:
        raise KdflowInputError(f"distill_mode={distill_mode!r} is not one of {', '.join(MODES)}: pick one of them.")


def check_attention_dropout(student_attention_dropout: float) -> None:
    if not 0 <= student_attention_dropout < 1:
        raise KdflowInputError(f"student_attention_dropout={student_attention_dropout} must lie in [0, 1): 0 keeps "
                               "PyTorch's fused attention kernel, the recipe's DistilBERT uses 0.1.")


def check_processes(batch_size: int, processes: int) -> None:
    """batch_size is the global batch of an optimizer step: each of the processes takes an equal share."""
    if batch_size % processes:
        raise KdflowInputError(f"batch_size={batch_size} does not split evenly across {processes} processes: it is "
                               f"the global batch of a step, so make it a multiple of {processes} (nproc).")
