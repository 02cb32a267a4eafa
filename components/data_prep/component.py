"""KFP definition of the data_prep step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.data_prep.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(renamed={"data": "--output"})


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def data_prep(
    data: Output[Dataset],
    report: Output[Markdown],
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    num_labels: int = 2,
    tokenizer: str = "",
    teacher: str = "",
    max_length: int = 512,
    truncation_side: str = "right",
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    validation_fraction: float = 0.1,
    seed: int = 42,
    data_version: str = "",
):
    """Loads, checks and tokenizes a labelled text dataset into train, validation and test splits.

    Bad data (a missing column, labels outside 0..num_labels-1, an empty split, a single class) stops the
    step before any tokenizing, with one sentence naming the parameter to fix.

    Args:
        source: synthetic, a folder or gs:// URI with train and test files (parquet, jsonl, csv), or a hub dataset.
        text_column: Column holding the texts; renamed to text.
        label_column: Column holding the integer labels; renamed to label.
        num_labels: Number of classes; labels must lie in 0..num_labels-1.
        tokenizer: Checkpoint whose tokenizer to use, or wordpiece to train one on the texts; empty: the teacher's.
        teacher: Teacher checkpoint; only its tokenizer is used here, when tokenizer is empty.
        max_length: Tokens kept per row; longer texts are truncated.
        truncation_side: Which end of a longer text is cut: right keeps its beginning, left keeps its end.
        max_train_samples: Rows of train to keep after the validation split is carved out; 0 keeps all.
        max_eval_samples: Rows of validation and of test to keep; 0 keeps all.
        validation_fraction: Share of the source's train split held out for validation, stratified by label.
        seed: Seed of the validation split, the row sampling and the synthetic data.
        data_version: Label of the data read, e.g. a recurring run's scheduled time; a new value makes the step
            read the source again instead of reusing a cached result.

    Returns:
        data: Tokenized train, validation and test splits (no padding), their tokenizer, and data_info.json.
        report: Rows and label balance per split, token-length percentiles and the share of truncated rows.
    """
    from kdflow.components.data_prep import task

    task.run(
        source=source, output_dir=data.path, report_path=report.path, text_column=text_column,
        label_column=label_column, num_labels=num_labels, tokenizer=tokenizer, teacher=teacher,
        max_length=max_length, truncation_side=truncation_side, max_train_samples=max_train_samples,
        max_eval_samples=max_eval_samples, validation_fraction=validation_fraction, seed=seed,
        data_version=data_version,
    )
