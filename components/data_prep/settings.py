"""The data_prep step's interface: its settings (checked on construction), the files it writes.

Light (standard library and kdflow's own light modules only), so that the command line checks a run's settings
before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.data import MULTI_LABEL, PROBLEM_TYPES
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.models import is_config_spec
from kdflow.components.common.settings import (
    CheckedSettings, artifact, check_choice, check_row_count, check_seed, setting,
)

TRUNCATION_SIDES = ("right", "left")


@dataclass(frozen=True)
class Settings(CheckedSettings):
    source: str = setting("synthetic, a folder or gs:// or s3:// URI with train and test files (parquet, jsonl, "
                          "csv), or a hub dataset.")
    text_column: str = setting("Column holding the texts; renamed to text.")
    label_column: str = setting("Column holding the labels (names, or integer codes); renamed to label, its values "
                                "made class ids. For multi_label: a column of lists of names (or codes), or several "
                                "0/1 columns, comma-separated, each named as its label.")
    num_labels: int = setting("Number of classes; 0 reads it from the data (the distinct labels of train).")
    problem_type: str = setting("single_label (one class per text) or multi_label (any set of labels per text, a "
                                "sigmoid per label).")
    decision_threshold: float = setting("multi_label: the probability above which a label is predicted, in (0, 1), "
                                        "for every label; 0 chooses each label's threshold on the validation split "
                                        "(best F1), shipped with the model.")
    tokenizer: str = setting("Checkpoint whose tokenizer to use, or wordpiece to train one on the texts; empty: the "
                             "teacher's.")
    teacher: str = setting("Teacher checkpoint; only its tokenizer is used here, when tokenizer is empty.")
    max_length: int = setting("Tokens kept per row; longer texts are truncated.")
    truncation_side: str = setting("Which end of a longer text is cut: right keeps its beginning, left keeps its "
                                   "end.")
    max_train_samples: int = setting("Rows of train to keep after the validation split is carved out; 0 keeps all.")
    max_eval_samples: int = setting("Rows of validation and of test to keep; 0 keeps all.")
    validation_fraction: float = setting("Share of the source's train split held out for validation, stratified by "
                                         "label.")
    unlabeled_source: str = setting("Empty, or a folder or gs:// or s3:// URI holding unsup.* or unlabeled.* files "
                                    "(parquet, jsonl, csv), or one such file: unlabeled texts in text_column, kept as "
                                    "the unlabeled split (label -100) for the teacher to label.")
    max_unlabeled_samples: int = setting("Rows of the unlabeled source to keep, sampled with seed once empty texts and "
                                         "texts of the labeled splits are dropped; 0 keeps all.")
    seed: int = setting("Seed of the validation split, the row sampling and the synthetic data.")
    data_version: str = setting("Label of the data read, e.g. a recurring run's scheduled time; a new value makes "
                                "the step read the source again instead of reusing a cached result.")

    def check(self):
        """The checks that need no data, so a bad value stops the step (or the run) at once."""
        if self.num_labels < 0 or self.num_labels == 1:
            raise KdflowInputError(f"num_labels={self.num_labels} must be 0 (read it from the data) or at least 2 for "
                                   "a classifier.")
        check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        if self.problem_type == MULTI_LABEL and not (self.decision_threshold == 0 or 0 < self.decision_threshold < 1):
            raise KdflowInputError(f"decision_threshold={self.decision_threshold} must lie in (0, 1), e.g. 0.5, or be "
                                   "0 to choose each label's threshold on the validation split.")
        if self.problem_type != MULTI_LABEL and self.decision_threshold != 0:
            raise KdflowInputError(f"decision_threshold={self.decision_threshold} is for problem_type=multi_label: a "
                                   "single-label model predicts its most probable class; leave it 0.")
        if self.max_length < 1:
            raise KdflowInputError(f"max_length={self.max_length} must be a positive number of tokens, e.g. 512.")
        if self.truncation_side not in TRUNCATION_SIDES:
            raise KdflowInputError(
                f"truncation_side={self.truncation_side!r} is not one of {', '.join(TRUNCATION_SIDES)}: right keeps "
                "the beginning of long texts, left their end."
            )
        check_row_count("max_train_samples", self.max_train_samples)
        check_row_count("max_eval_samples", self.max_eval_samples)
        check_row_count("max_unlabeled_samples", self.max_unlabeled_samples)
        if not 0 < self.validation_fraction < 1:
            raise KdflowInputError(
                f"validation_fraction={self.validation_fraction} must lie in (0, 1): 0.1 keeps a tenth of train for "
                "validation."
            )
        check_seed(self.seed)
        if not self.tokenizer and not self.teacher:
            raise KdflowInputError(
                "Neither tokenizer nor teacher is set: set tokenizer (a checkpoint, or wordpiece) or teacher."
            )
        if not self.tokenizer and is_config_spec(self.teacher):
            raise KdflowInputError(
                f"The teacher {self.teacher!r} is built from a configuration and has no tokenizer: set tokenizer, "
                "e.g. tokenizer=wordpiece to train one on the training texts."
            )


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized train, validation and test splits, and unlabeled with unlabeled_source (no "
                         "padding), their tokenizer, and data_info.json; must be a new or empty folder.", output=True)
    report: str = artifact("Rows and label balance per split, token-length percentiles and the share of truncated "
                           "rows, as Markdown.", output=True)


Result = None
