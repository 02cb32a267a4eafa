"""KFP definition of the data_prep step; its settings are declared in settings.py, the work is in task.py."""

from kfp.dsl import Dataset, Markdown, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.data_prep import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def data_prep(
    data: Output[Dataset],
    report: Output[Markdown],
    source: str,
    text_column: str,
    label_column: str,
    num_labels: int,
    problem_type: str,
    decision_threshold: float,
    tokenizer: str,
    teacher: str,
    max_length: int,
    truncation_side: str,
    max_train_samples: int,
    max_eval_samples: int,
    validation_fraction: float,
    unlabeled_source: str,
    max_unlabeled_samples: int,
    seed: int,
    data_version: str,
):
    """Loads, checks and tokenizes a labelled text dataset into train, validation and test splits, and unlabeled
    texts, when given, into an unlabeled split.

    Bad data (a missing column, more classes than num_labels, a test label train never has, a single class) stops the
    step before any tokenizing, with one sentence naming the parameter to fix.
    """
    from kdflow.components.common.component import run_step
    from kdflow.components.data_prep import task

    return run_step(task, locals())
