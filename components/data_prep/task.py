"""The data_prep step: loads a labelled text dataset, checks it, carves a validation split and tokenizes it.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.data_prep.task --data DATA_DIR --report report.md --source synthetic \
        --text-column text --label-column label --num-labels 2 --problem-type single_label --decision-threshold 0 \
        --tokenizer wordpiece --teacher "" \
        --max-length 512 --truncation-side right --max-train-samples 0 --max-eval-samples 0 \
        --validation-fraction 0.1 --unlabeled-source "" --max-unlabeled-samples 0 --seed 42 --data-version ""

The source is `synthetic` (generated movie reviews, see synthetic.py), a folder or gs:// or s3:// URI holding train
and test files (parquet, jsonl or csv, UTF-8; each split in its own format, e.g. train.parquet and test.csv),
or else a Hugging Face hub dataset with train and test splits. Rows whose text is empty or whitespace are
dropped before validation is carved out. Rows are tokenized without padding (batches are padded when they
are made) and carry their token count in a `length` column for length-grouped batching. The output folder
is the layout `kdflow.components.common.data` reads; a Markdown report describes what came out, including
the empty texts dropped and the validation and test texts that repeat a training text.

With `unlabeled_source` (a folder or URI holding unsup.* or unlabeled.* files, or one file, in the same formats) its
texts become an `unlabeled` split for the teacher to label, every label UNLABELED (-100): empty texts and texts of
train, validation or test are dropped (a test text would leak the test split into training), the rest are sampled
to `max_unlabeled_samples` with `seed` and tokenized like the labeled splits. A WordPiece tokenizer is still trained
on train alone.
"""

import json
import math
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from kdflow.components.common import models, step, storage
from kdflow.components.common.data import (
    LABEL, LENGTH, MULTI_LABEL, SPLITS, TEXT, UNLABELED, UNLABELED_SPLIT, save_prepared,
)
from kdflow.components.common.errors import KdflowInputError, first_line
from kdflow.components.common.settings import record

from . import synthetic
from .settings import Files, Result, Settings  # noqa: F401 (Result: the step's interface)

SYNTHETIC = "synthetic"
WORDPIECE = "wordpiece"
# File extension -> the `datasets` builder that reads it.
FILE_BUILDERS = {"parquet": "parquet", "jsonl": "json", "json": "json", "csv": "csv"}
SOURCE_SPLITS = ("train", "test")
UNLABELED_NAMES = ("unsup", "unlabeled")  # the files of an unlabeled folder: IMDb's name, or the plain one
SYNTHETIC_ROWS = {"train": 4000, "test": 1000}  # before row limits
PERCENTILES = (50, 90, 99)
# Tokens of a WordPiece vocabulary trained on the texts (tokenizer=wordpiece): a fixed size, not a pipeline parameter.
WORDPIECE_VOCAB_SIZE = 8000
INFO_FILE = "data_info.json"  # written by save_prepared; moved into place last, it marks the folder complete
FULL_LENGTH = "full_length"  # tokens before truncation; only kept until the report's figures are taken
# Test texts that may repeat a training text, as a share of the test rows; more is refused. A model that memorises
# every repeat gains at most 1% x (1 - accuracy): 0.14 points at the minilm preset's 0.86, below the 0.4-point spread
# of its two seeds, so fewer repeats are only reported. More than 1% means the splits were not made apart (the same
# file twice, test sampled from train), and the test score then measures memorised rows.
MAX_TEST_REPEAT_SHARE = 0.01


def run(settings: Settings, files: Files) -> dict:
    """Prepares the source for training and writes it to `files.data`, with a Markdown report at `files.report`.

    Every check runs before tokenizing; `files.data` receives the finished folder only, so a failed run
    leaves nothing there. Returns the data's description (also saved as data_info.json).
    """
    check_empty_output(files.data)
    tokenizer, teacher, max_length = settings.tokenizer, settings.teacher, settings.max_length
    # A named tokenizer is loaded first, so a wrong name fails before a long download of data.
    text_tokenizer = None if tokenizer == WORDPIECE else load_named_tokenizer(tokenizer or teacher)
    with tempfile.TemporaryDirectory(prefix="kdflow-data-prep-") as scratch:
        multi_label = settings.problem_type == MULTI_LABEL
        raw = load_source(settings.source, Path(scratch, "cache"), settings.max_train_samples,
                          settings.max_eval_samples, settings.validation_fraction, settings.seed, multi_label)
        label_column = check_columns(raw, settings.source, settings.text_column, settings.label_column, multi_label)
        if multi_label:
            raw = {name: with_label_lists(split, name, settings.label_column) for name, split in raw.items()}
        labels = Labels.of(raw, label_column, settings.num_labels, settings.label_column, multi_label)
        raw = {name: standard_columns(split, settings.text_column, label_column, labels)
               for name, split in raw.items()}
        raw, empty_texts = drop_empty_texts(raw, settings.source, settings.text_column)
        splits = limit_rows(raw, settings.max_train_samples, settings.max_eval_samples, settings.validation_fraction,
                            settings.seed)
        check_classes(splits["train"], labels.names)
        repeats = check_repeats(splits, settings.source)
        unlabeled_figures = {}
        if settings.unlabeled_source:
            splits[UNLABELED_SPLIT], unlabeled_figures = unlabeled_split(settings, splits, Path(scratch, "cache"))
        if text_tokenizer is None:
            text_tokenizer = train_wordpiece(splits["train"][TEXT], WORDPIECE_VOCAB_SIZE, max_length)
        # Saved with the tokenizer, so a step that tokenizes again (online distillation) cuts the same side.
        text_tokenizer.truncation_side = settings.truncation_side

        splits = {name: encode(split, text_tokenizer, max_length) for name, split in splits.items()}
        # Every setting, then what the data gave: a setting added to data_prep is recorded without an edit here.
        # num_labels: the classes found when the setting was 0 (read them from the data).
        info = {**record(settings), "num_labels": len(labels.names), "label_names": labels.names,
                "vocab_size": len(text_tokenizer), "empty_texts_dropped": empty_texts, "also_in_train": repeats,
                **unlabeled_figures, **split_figures(splits, len(labels.names), max_length)}
        prepared = datasets.DatasetDict({name: split.remove_columns(FULL_LENGTH) for name, split in splits.items()})
        # The same features in every split, the label a plain int64 (a ClassLabel refuses UNLABELED) or float32 vector,
        # so that distill concatenates train and unlabeled as they are.
        features = prepared["train"].features.copy()
        features[LABEL] = labels.feature
        prepared = prepared.cast(features)
        save_prepared(str(Path(scratch, "prepared")), prepared, text_tokenizer, info)
        storage.move_into(Path(scratch, "prepared"), Path(files.data), last=INFO_FILE)
    Path(files.report).parent.mkdir(parents=True, exist_ok=True)
    Path(files.report).write_text(report_markdown(info))
    return info


def check_empty_output(output_dir: str) -> None:
    output = Path(output_dir)
    if output.is_dir() and any(output.iterdir()):
        raise KdflowInputError(f"The output folder {output_dir} is not empty: choose a new folder.")


def load_source(source: str, cache_dir: Path, max_train_samples: int, max_eval_samples: int,
                validation_fraction: float, seed: int, multi_label: bool) -> dict:
    """The source's train and test splits, as they come."""
    if source == SYNTHETIC:
        return synthetic_splits(max_train_samples, max_eval_samples, validation_fraction, seed, multi_label)
    if storage.is_remote(source) or Path(source).exists():
        return load_folder(source, cache_dir)
    return load_hub(source)


def synthetic_splits(max_train_samples: int, max_eval_samples: int, validation_fraction: float, seed: int,
                     multi_label: bool) -> dict:
    """Generated reviews (their sentiment; for multi-label, the topics they judge): enough train rows that
    `max_train_samples` remain once validation is carved out."""
    train_rows = SYNTHETIC_ROWS["train"]
    if max_train_samples:
        train_rows = math.ceil(max_train_samples / (1 - validation_fraction))
    generate = synthetic.generate_topics if multi_label else synthetic.generate
    train = generate(train_rows, seed)
    test = generate(max_eval_samples or SYNTHETIC_ROWS["test"], seed + 1, exclude=set(train[TEXT]))
    if multi_label:
        features = datasets.Features({TEXT: datasets.Value("string"),
                                      LABEL: datasets.List(datasets.Value("string"))})
        train, test = ({TEXT: rows[TEXT], LABEL: rows["labels"]} for rows in (train, test))
    else:
        features = datasets.Features({
            TEXT: datasets.Value("string"), LABEL: datasets.ClassLabel(names=synthetic.LABEL_NAMES),
        })
    return {"train": datasets.Dataset.from_dict(train, features=features),
            "test": datasets.Dataset.from_dict(test, features=features)}


def find_split_files(folder: str) -> dict[str, tuple[str, list[str]]]:
    """Per split found, the builder and files of its first format that has any (`train.csv`, `train-0001.csv`...).

    Each split has its own format: train.parquet with test.csv is a source.
    """
    found = {}
    for split in SOURCE_SPLITS:
        for extension, builder in FILE_BUILDERS.items():
            files = sorted(str(path) for pattern in (f"{split}.{extension}", f"{split}-*.{extension}")
                           for path in Path(folder).rglob(pattern))
            if files:
                found[split] = builder, files
                break
    return found


def load_folder(source: str, cache_dir: Path) -> dict:
    folder = storage.local_copy(source)
    found = find_split_files(folder)
    missing = [split for split in SOURCE_SPLITS if split not in found]
    if missing:
        raise KdflowInputError(
            f"source={source!r} holds no {' and '.join(missing)} files: put "
            f"{' and '.join(f'{split}.parquet' for split in missing)} (or .jsonl, .csv) in it."
        )
    for builder, files in found.values():
        for path in files:
            if builder != "parquet":
                check_text_file(Path(path), Path(path).relative_to(folder).as_posix(), "source", source)
    return {split: load_files("source", source, builder, split, files, cache_dir)
            for split, (builder, files) in found.items()}


def check_text_file(path: Path, name: str, parameter: str, source: str) -> None:
    """Refuses bytes that are not UTF-8 and (in .jsonl) a line that is not a JSON object, naming the file and line:
    `datasets` reports both without either ("An error occurred while generating the dataset"). `parameter` is the
    setting that gave `source`."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")  # a byte-order mark first is read fine
            except UnicodeDecodeError as error:
                raise KdflowInputError(
                    f"{name} line {number} of {parameter}={source!r} is not valid UTF-8 "
                    f"(byte 0x{line[error.start]:02x} at position {error.start + 1}): save the file as UTF-8."
                ) from None
            problem = json_object_problem(text) if path.suffix == ".jsonl" and text.strip() else None
            if problem:
                raise KdflowInputError(
                    f"{name} line {number} of {parameter}={source!r} is not a JSON object ({problem}): write one JSON "
                    "object per line."
                )


def json_object_problem(line: str) -> str | None:
    """Why a JSON Lines line is not a JSON object, or None when it is one."""
    try:
        value = json.loads(line.rstrip())  # without the line break, so an error's column is on this line
    except json.JSONDecodeError as error:
        return f"{error.msg} at position {error.colno}"
    return None if isinstance(value, dict) else f"it starts with {line.strip()[0]!r}"


def load_files(parameter: str, source: str, builder: str, split: str, files: list[str], cache_dir: Path):
    """The rows of `files` as one split, none when they hold none (the caller says what is missing); `parameter` is
    the setting that gave `source`."""
    try:
        # One split at a time: train and test files need not have the same columns.
        return datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=str(cache_dir))
    except StopIteration:  # how `datasets` says .jsonl files hold no rows
        return datasets.Dataset.from_dict({})
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        if "corresponds to no data" in str(error):  # how it says other files hold no rows
            return datasets.Dataset.from_dict({})
        # `datasets` wraps the reader's own error (e.g. pandas' "Expected 2 fields in line 3, saw 3") in a generic one.
        reason = first_line(error.__cause__ or error)
        raise KdflowInputError(
            f"The {split} files of {parameter}={source!r} could not be read ({reason}): fix or replace them."
        ) from None


def empty_split_error(source: str, split: str) -> KdflowInputError:
    return KdflowInputError(
        f"The {split} split of source={source!r} is empty: give a source with rows in train and test."
    )


def load_hub(source: str) -> dict:
    try:
        loaded = datasets.load_dataset(source)
    except (OSError, ValueError) as error:
        raise KdflowInputError(
            f"source={source!r} is not 'synthetic', an existing folder or a dataset the hub gave "
            f"({first_line(error)}): fix the name or path."
        ) from None
    missing = [name for name in SOURCE_SPLITS if name not in loaded]
    if missing:
        raise KdflowInputError(
            f"The dataset source={source!r} has splits {', '.join(loaded)} but no {' or '.join(missing)}: "
            "give a dataset with train and test splits, or a folder with train and test files."
        )
    return {name: loaded[name] for name in SOURCE_SPLITS}


def check_columns(raw: dict, source: str, text_column: str, label_column: str, multi_label: bool) -> str:
    """Checks every split's text and label columns; returns the column the labels are read from (a multi-label task's
    several 0/1 columns become one of lists, LABEL)."""
    label_columns = zero_one_columns(label_column) if multi_label else [label_column]
    for name, split in raw.items():
        columns = ", ".join(split.column_names)
        if len(split) == 0:
            raise empty_split_error(source, name)
        if text_column not in split.column_names:
            raise KdflowInputError(
                f"text_column={text_column!r} is not a column of the {name} split (it has {columns}): "
                "set text_column to the column that holds the texts."
            )
        for column in label_columns:
            if column not in split.column_names:
                named = f"label_column={label_column!r}" + (f": {column!r}" if len(label_columns) > 1 else "")
                raise KdflowInputError(f"{named} is not a column of the {name} split (it has {columns}): set "
                                       "label_column to the column that holds the labels.")
        check_text_type(split, text_column, "")
        missing_texts = split.data.column(text_column).null_count
        if missing_texts:
            raise KdflowInputError(
                f"text_column={text_column!r} has {missing_texts} null texts in the {name} split: "
                "drop those rows from the source."
            )
    return LABEL if len(label_columns) > 1 else label_column


def zero_one_columns(label_column: str) -> list[str]:
    """The columns a multi-label task's label_column names: several, comma-separated, each a label's 0/1 column; or
    one, of lists."""
    return [name.strip() for name in label_column.split(",")]


def with_label_lists(split, split_name: str, label_column: str):
    """A multi-label split whose labels are one column of lists: several 0/1 columns (comma-separated in
    `label_column`) become LABEL, the names of the columns that are 1; a column of lists is kept. Anything else is
    refused."""
    columns = zero_one_columns(label_column)
    if len(columns) == 1:
        feature = split.features[label_column]
        if not isinstance(feature, (datasets.List, datasets.LargeList)):
            kind = getattr(feature, "dtype", type(feature).__name__)
            raise KdflowInputError(
                f"label_column={label_column!r} holds {kind} values in the {split_name} split, not lists of labels: "
                "for problem_type=multi_label give a column of lists of names, or several 0/1 columns, "
                "comma-separated."
            )
        return split
    for column in columns:
        odd = [value for value in split.unique(column) if value not in (0, 1)]  # True and False are 1 and 0
        if odd:
            raise KdflowInputError(
                f"label_column={label_column!r}: column {column!r} holds {odd[0]!r} in the {split_name} split; "
                "each of the 0/1 columns holds 1 where its label applies and 0 elsewhere."
            )
    return split.map(lambda row: {LABEL: [column for column in columns if row[column]]},
                     remove_columns=[column for column in columns if column != LABEL])


@dataclass(frozen=True)
class Labels:
    """The classes: their names by class id, and the id of each value the label column holds."""

    names: list[str]
    ids: dict  # label value (a name, a code, a ClassLabel's index) -> class id
    multi_label: bool = False  # then a row's label is a list of such values

    @classmethod
    def of(cls, raw: dict, column: str, num_labels: int, label_column: str, multi_label: bool) -> "Labels":
        """A ClassLabel's names; integers in 0..num_labels-1 (or 0..k-1 when num_labels is 0, read from train) as
        themselves, named label_I; any other codes or names in sorted order, named as written. A value that test
        or validation holds and train does not is refused: no model could learn it. `column` holds the labels,
        `label_column` is the setting that named it (for messages)."""
        feature = raw["train"].features[column]
        if isinstance(feature, datasets.ClassLabel):
            if num_labels and feature.num_classes != num_labels:
                raise KdflowInputError(
                    f"label_column={label_column!r} has {feature.num_classes} classes ({', '.join(feature.names)}) "
                    f"but num_labels={num_labels}: set num_labels={feature.num_classes}, or 0 to read it from the data."
                )
            return cls(list(feature.names), {index: index for index in range(feature.num_classes)})
        check_values = check_label_lists if multi_label else check_label_values
        values = {name: check_values(split, name, column, label_column) for name, split in raw.items()}
        train = sorted(values["train"])  # one kind of value: a parquet, csv or jsonl column holds one type
        held_anywhere = set().union(*values.values())
        if num_labels:  # integers below it are class ids, whether or not train holds each
            class_ids = all(isinstance(value, int) and 0 <= value < num_labels for value in held_anywhere)
        else:
            class_ids = train == list(range(len(train)))
        if class_ids:
            count = num_labels or len(train)
            labels = cls([f"label_{index}" for index in range(count)], {index: index for index in range(count)},
                         multi_label)
        else:
            if num_labels and num_labels != len(train):
                shown = ", ".join(map(str, train[:12])) + (", ..." if len(train) > 12 else "")
                raise KdflowInputError(
                    f"label_column={label_column!r} holds {len(train)} classes in the train split ({shown}) but "
                    f"num_labels={num_labels}: set num_labels={len(train)}, or 0 to read it from the data."
                )
            labels = cls([str(value) for value in train], {value: index for index, value in enumerate(train)},
                         multi_label)
        for name, held in values.items():
            unknown = sorted(set(held) - set(labels.ids), key=str)
            if unknown:
                raise KdflowInputError(
                    f"label_column={label_column!r} holds {unknown[0]!r} in the {name} split, a label the train split "
                    f"never has ({', '.join(labels.names)}): drop those rows, or add training rows with that label."
                )
        return labels

    @property
    def renumbers(self) -> bool:
        return any(value != index for value, index in self.ids.items())

    @property
    def feature(self):
        """The prepared label's type: a class id, or a 0/1 float per class (UNLABELED stands in either)."""
        if self.multi_label:
            return datasets.List(datasets.Value("float32"), length=len(self.names))
        return datasets.Value("int64")

    def encoded(self, values: list) -> list:
        """A multi-label row's values as a 0/1 float per class."""
        ids = {self.ids[value] for value in values}
        return [float(index in ids) for index in range(len(self.names))]


def check_label_values(split, split_name: str, column: str, label_column: str) -> set:
    """The distinct labels of a split: whole numbers (as int) or names; anything else is refused."""
    return {label_value(value, split_name, label_column) for value in split.unique(column)}


def check_label_lists(split, split_name: str, column: str, label_column: str) -> set:
    """The distinct labels in a multi-label split's lists; an empty list (or none) is refused."""
    values = set()
    for row, labels in enumerate(split[column]):
        if not labels:
            raise KdflowInputError(
                f"label_column={label_column!r} holds an empty label list in row {row} of the {split_name} split: "
                "give every row at least one label (a label such as 'none' where nothing applies), or drop the row."
            )
        values.update(label_value(value, split_name, label_column) for value in labels)
    return values


def label_value(value, split_name: str, label_column: str):
    """A label as a class value: a whole number (as int) or a name; anything else is refused."""
    if value is None:
        raise KdflowInputError(
            f"label_column={label_column!r} holds None in the {split_name} split: drop the rows without a label."
        )
    if is_integer(value):
        return int(value)
    if isinstance(value, str) and value.strip():
        return value
    raise KdflowInputError(
        f"label_column={label_column!r} holds {value!r} in the {split_name} split, neither a whole number nor "
        "a name: give each label as an integer code or a name."
    )


def check_text_type(split, text_column: str, of: str) -> None:
    """`of` says whose column it is when it is not the labeled data's."""
    feature = split.features[text_column]
    text_type = getattr(feature, "dtype", type(feature).__name__)  # string, int64..., or the feature's class name
    if text_type not in ("string", "large_string"):
        raise KdflowInputError(f"text_column={text_column!r}{of} holds {text_type} values, not text: set text_column "
                               "to the column that holds the texts.")


def is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def standard_columns(split, text_column: str, label_column: str, labels: Labels):
    """Only the text and the label, named `text` and `label`, the label its class id as a ClassLabel (needed to
    stratify), or for multi-label a 0/1 float per class."""
    split = split.select_columns([text_column, label_column])
    renames = {old: new for old, new in ((text_column, TEXT), (label_column, LABEL)) if old != new}
    if renames:
        split = split.rename_columns(renames)
    if labels.multi_label:
        encoded = split.map(lambda batch: {LABEL: [labels.encoded(values) for values in batch[LABEL]]}, batched=True,
                            remove_columns=[LABEL])  # the new column replaces the lists, of another type
        return encoded.cast_column(LABEL, labels.feature)
    if labels.renumbers:
        split = split.map(lambda batch: {LABEL: [labels.ids[value] for value in batch[LABEL]]}, batched=True)
    return split.cast_column(LABEL, datasets.ClassLabel(names=labels.names))


def drop_empty_texts(raw: dict, source: str, text_column: str) -> tuple[dict, dict[str, int]]:
    """The splits without rows whose text is empty or whitespace (nothing to classify), and how many each lost."""
    kept, dropped = {}, {}
    for name, split in raw.items():
        rows = [row for row, text in enumerate(split[TEXT]) if text.strip()]
        if not rows:
            raise KdflowInputError(
                f"Every text of the {name} split of source={source!r} is empty or whitespace ({len(split)} rows): "
                f"set text_column={text_column!r} to the column that holds the texts, or fill them in."
            )
        kept[name] = split.select(rows) if len(rows) < len(split) else split
        dropped[name] = len(split) - len(rows)
    return kept, dropped


def limit_rows(raw: dict, max_train_samples: int, max_eval_samples: int, validation_fraction: float,
               seed: int) -> dict:
    """Train, validation (carved from the full train split, stratified by label) and test, within the row limits."""
    train = raw["train"]
    validation_rows = max(1, round(validation_fraction * len(train)))
    if max_eval_samples:
        validation_rows = min(validation_rows, max_eval_samples)
    if validation_rows >= len(train):
        raise KdflowInputError(
            f"The train split has {len(train)} rows, too few to keep {validation_rows} for validation: "
            "give more rows or lower validation_fraction."
        )
    single_label = isinstance(train.features[LABEL], datasets.ClassLabel)  # a set of labels has no stratum
    counts = Counter(train[LABEL]) if single_label else {}
    # Stratifying needs two rows of every class and room for one of each on both sides.
    stratify = (single_label and min(counts.values()) >= 2
                and min(validation_rows, len(train) - validation_rows) >= len(counts))
    parts = train.train_test_split(test_size=validation_rows, stratify_by_column=LABEL if stratify else None, seed=seed)
    test = raw["test"]
    if max_eval_samples and max_eval_samples < len(test):
        test = test.shuffle(seed=seed).select(range(max_eval_samples))  # sources are often sorted by label
    return {"train": first_rows(parts["train"], max_train_samples), "validation": parts["test"], "test": test}


def first_rows(split, limit: int):
    return split.select(range(limit)) if limit and limit < len(split) else split


def check_classes(train, label_names: list[str]) -> None:
    present = [index for index, count in enumerate(label_counts(train, len(label_names))) if count]
    if len(present) < 2:
        raise KdflowInputError(
            f"The train split holds only label {label_names[present[0]]!r}: a classifier needs two "
            "classes or more; check label_column, or raise max_train_samples."
        )


def comparable(text: str) -> str:
    """A text as repeats are found: whitespace runs made one space, the ends stripped; case is kept."""
    return " ".join(text.split())


def check_repeats(splits: dict, source: str) -> dict[str, int]:
    """Counts the validation and test texts that repeat a training text; returns the counts.

    Refuses a validation split made only of repeats (it would measure recall of copies, not learning), and a test
    split with more than MAX_TEST_REPEAT_SHARE of them.
    """
    training_texts = {comparable(text) for text in splits["train"][TEXT]}
    repeats = {name: sum(comparable(text) in training_texts for text in splits[name][TEXT])
               for name in ("validation", "test")}
    if repeats["validation"] == len(splits["validation"]):
        raise KdflowInputError(
            f"Every validation text of source={source!r} also appears in train ({len(training_texts)} distinct texts "
            f"in {len(splits['train'])} train rows): remove the duplicate rows from the source."
        )
    share = repeats["test"] / len(splits["test"])
    if share > MAX_TEST_REPEAT_SHARE:
        raise KdflowInputError(
            f"{repeats['test']} of the {len(splits['test'])} test texts of source={source!r} ({share:.1%}) also appear "
            f"in train, more than {MAX_TEST_REPEAT_SHARE:.0%}: remove them from the test split, so that it scores "
            "texts the models have not seen."
        )
    return repeats


def unlabeled_split(settings: Settings, labeled: dict, cache_dir: Path) -> tuple:
    """The texts of `settings.unlabeled_source` as a split of `text` and `label` (UNLABELED), without empty texts and
    texts of the labeled splits, sampled to max_unlabeled_samples; and the rows read and dropped, for data_info."""
    source = settings.unlabeled_source
    split = load_unlabeled(source, settings.text_column, settings.label_column, cache_dir)
    test_texts = {comparable(text) for text in labeled["test"][TEXT]}
    training_texts = {comparable(text) for name in ("train", "validation") for text in labeled[name][TEXT]}
    kept, dropped = [], {"empty": 0, "in_test": 0, "in_train_or_validation": 0}
    for row, text in enumerate(split[TEXT]):
        text = comparable(text or "")  # a null text is as empty as ""
        if not text:
            dropped["empty"] += 1
        elif text in test_texts:
            dropped["in_test"] += 1
        elif text in training_texts:
            dropped["in_train_or_validation"] += 1
        else:
            kept.append(row)
    if not kept:
        raise KdflowInputError(
            f"Every text of unlabeled_source={source!r} ({len(split)} rows) is empty or repeats a text of train, "
            "validation or test: give other texts, or leave unlabeled_source empty."
        )
    # Shuffled before the limit: sources are often sorted (by topic, by date).
    sample = first_rows(split.select(kept).shuffle(seed=settings.seed), settings.max_unlabeled_samples)
    feature = labeled["train"].features[LABEL]
    if isinstance(feature, datasets.ClassLabel):  # which refuses UNLABELED
        feature, unlabeled = datasets.Value("int64"), UNLABELED
    else:
        unlabeled = [float(UNLABELED)] * feature.length
    sample = sample.add_column(LABEL, [unlabeled] * len(sample), feature=feature)
    return sample, {"unlabeled_source_rows": len(split), "unlabeled_dropped": dropped}


def load_unlabeled(source: str, text_column: str, label_column: str, cache_dir: Path):
    """The unlabeled source's texts, checked, as a split with the one column `text`."""
    builder, files, folder = find_unlabeled_files(source)
    for path in files:
        if builder != "parquet":
            check_text_file(Path(path), Path(path).relative_to(folder).as_posix(), "unlabeled_source", source)
    split = load_files("unlabeled_source", source, builder, UNLABELED_SPLIT, files, cache_dir)
    columns = ", ".join(split.column_names)
    if len(split) == 0:
        raise KdflowInputError(
            f"unlabeled_source={source!r} holds no rows: give files with texts, or leave unlabeled_source empty."
        )
    if text_column not in split.column_names and label_column in split.column_names:
        raise KdflowInputError(
            f"unlabeled_source={source!r} holds labels ({label_column!r}) but no texts (it has {columns}): give its "
            f"texts in a column named text_column={text_column!r}."
        )
    if text_column not in split.column_names:
        raise KdflowInputError(
            f"unlabeled_source={source!r} has no text_column={text_column!r} (it has {columns}): name its text "
            "column as the labeled data's."
        )
    check_text_type(split, text_column, f" of unlabeled_source={source!r}")
    split = split.select_columns([text_column])
    return split.rename_column(text_column, TEXT) if text_column != TEXT else split


def find_unlabeled_files(source: str) -> tuple[str, list[str], Path]:
    """The builder and files of an unlabeled source, and the local folder they are in: a file itself, or a folder's
    unsup.* or unlabeled.* files (not those of its subfolders) of the first format that has any."""
    if not storage.is_remote(source) and not Path(source).exists():
        raise KdflowInputError(
            f"unlabeled_source={source!r} does not exist: give a folder holding unsup.parquet (or .jsonl, .csv), "
            "such a file, or a gs:// or s3:// URI of either."
        )
    try:
        local = Path(storage.local_copy(source))  # a remote file comes as that file, a prefix as a folder
    except KdflowInputError as error:  # nothing under the prefix, a missing bucket, refused credentials
        raise KdflowInputError(f"unlabeled_source={source!r}: {error}") from None
    if local.is_file():
        builder = FILE_BUILDERS.get(local.suffix.lstrip("."))
        if builder is None:
            raise KdflowInputError(
                f"unlabeled_source={source!r} is not a parquet, jsonl or csv file: give one, or a folder holding "
                "unsup.parquet (or .jsonl, .csv)."
            )
        return builder, [str(local)], local.parent
    for extension, builder in FILE_BUILDERS.items():
        files = sorted(str(path) for name in UNLABELED_NAMES
                       for pattern in (f"{name}.{extension}", f"{name}-*.{extension}") for path in local.glob(pattern))
        if files:
            return builder, files, local
    raise KdflowInputError(
        f"unlabeled_source={source!r} holds no unsup.* or unlabeled.* files: put unsup.parquet (or .jsonl, .csv) in "
        "it, or give the file itself."
    )


def train_wordpiece(texts: list[str], vocab_size: int, max_length: int):
    """A lower-casing BERT WordPiece tokenizer trained on `texts`, as a transformers tokenizer; the same texts give the
    same vocabulary."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    # The trainer numbers each `##c` (a character inside a word) as it meets it in its word-count hash map, whose order
    # is random in every training, and it breaks ties between merges of equal count by those numbers. Measured on the
    # smoke data (3,000 texts): 10 processes gave 10 different vocabularies (598 or 599 tokens, 388 ids moved between
    # two), with TOKENIZERS_PARALLELISM unset, true or false and any PYTHONHASHSEED alike, and 4 trainings in one
    # process 4. Listing every `##c` first, in character order, numbers them the same each time: then 6 processes with
    # those settings varied (and RAYON_NUM_THREADS=1) gave one vocabulary.
    characters = sorted({character for text in texts for character in wordpiece.normalizer.normalize_str(text)
                         if not character.isspace()})
    special_tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"##{character}" for character in characters)]
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=special_tokens,
                                  show_progress=False)
    return BertTokenizer(vocab=wordpiece.get_vocab(), do_lower_case=True, model_max_length=max_length)


def load_named_tokenizer(name: str):
    tokenizer = models.load_tokenizer(name)
    if tokenizer.pad_token is None:
        raise KdflowInputError(
            f"The tokenizer of {name!r} has no padding token, which batching needs: set tokenizer to one that has."
        )
    return tokenizer


def encode(split, tokenizer, max_length: int):
    """Adds input_ids, attention_mask and length (tokens kept), unpadded, and the full length before truncation."""

    def tokenize(batch):
        encoded = tokenizer(batch[TEXT], truncation=True, max_length=max_length, return_token_type_ids=False)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        # Only rows that reached max_length can have been cut: encode those again, whole, to count their tokens.
        reached = [row for row, length in enumerate(lengths) if length == max_length]
        whole = tokenizer([batch[TEXT][row] for row in reached], return_attention_mask=False,
                          return_token_type_ids=False, verbose=False)["input_ids"] if reached else []
        whole_lengths = dict(zip(reached, map(len, whole)))
        full_lengths = [whole_lengths.get(row, length) for row, length in enumerate(lengths)]
        return {**encoded, LENGTH: lengths, FULL_LENGTH: full_lengths}

    return split.map(tokenize, batched=True, desc="tokenizing")


def split_figures(splits: dict, num_labels: int, max_length: int) -> dict:
    """Rows and token-length figures of each split, and rows per label of each labeled one."""
    return {
        "rows": {name: len(split) for name, split in splits.items()},
        "label_counts": {name: label_counts(splits[name], num_labels) for name in SPLITS},
        "token_lengths": {name: length_figures(split, max_length) for name, split in splits.items()},
    }


def label_counts(split, num_labels: int) -> list[int]:
    """Rows per class; for multi-label, the rows that have each label."""
    if isinstance(split.features[LABEL], datasets.List):
        return [int(count) for count in np.asarray(split[LABEL]).sum(axis=0)]
    counts = Counter(split[LABEL])
    return [counts.get(label, 0) for label in range(num_labels)]


def length_figures(split, max_length: int) -> dict:
    """Token-length percentiles before truncation, and the share of rows cut at max_length."""
    full = np.asarray(split[FULL_LENGTH])
    figures = {f"p{p}": int(np.percentile(full, p)) for p in PERCENTILES}
    return {**figures, "max": int(full.max()), "truncated_share": float((full > max_length).mean())}


def report_markdown(info: dict) -> str:
    tokenizer = info["tokenizer"]
    if tokenizer == WORDPIECE:
        tokenizer_text = "WordPiece, trained on the training texts"
    elif tokenizer:
        tokenizer_text = markdown_text(tokenizer)
    else:
        tokenizer_text = f"the teacher's, {markdown_text(info['teacher'])}"
    names = [markdown_text(name) for name in info["label_names"]]
    empty, repeats, rows = info["empty_texts_dropped"], info["also_in_train"], info["rows"]
    shown = [split for split in (*SPLITS, UNLABELED_SPLIT) if split in rows]
    lines = [
        "# Prepared data",
        "",
        f"- Source: {markdown_text(info['source'])} (text from {markdown_text(info['text_column'])}, label from "
        f"{markdown_text(info['label_column'])})",
        f"- Tokenizer: {tokenizer_text} ({info['vocab_size']:,} tokens)",
        f"- Truncation: {info['max_length']} tokens, no padding; seed {info['seed']}",
        *([multi_label_line(info)] if info["problem_type"] == MULTI_LABEL else []),
        *([f"- Data version: {markdown_text(info['data_version'])}"] if info["data_version"] else []),
        f"- Empty or whitespace-only texts, dropped before validation was carved out: {empty['train']:,} in train, "
        f"{empty['test']:,} in test",
        f"- Texts that repeat a training text (whitespace ignored): {repeats['validation']:,} of "
        f"{rows['validation']:,} in validation, {repeats['test']:,} of {rows['test']:,} in test "
        f"({repeats['test'] / rows['test']:.1%}; above {MAX_TEST_REPEAT_SHARE:.0%} is refused)",
        *([unlabeled_line(info)] if UNLABELED_SPLIT in rows else []),
        "",
        "## Rows and label balance",
        "",
        "| split | rows | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for split in shown:
        counts = info["label_counts"].get(split, [None] * len(names))  # unlabeled rows have no label to count
        shares = " | ".join("–" if count is None else f"{count:,} ({count / rows[split]:.1%})" for count in counts)
        lines.append(f"| {split} | {rows[split]:,} | {shares} |")
    lines += [
        "",
        "## Token lengths before truncation",
        "",
        "| split | " + " | ".join(f"p{p}" for p in PERCENTILES) + f" | max | truncated at {info['max_length']} |",
        "|---|" + "---:|" * (len(PERCENTILES) + 2),
    ]
    for split in shown:
        figures = info["token_lengths"][split]
        percentiles = " | ".join(str(figures[f"p{p}"]) for p in PERCENTILES)
        lines.append(f"| {split} | {percentiles} | {figures['max']} | {figures['truncated_share']:.1%} |")
    return "\n".join(lines) + "\n"


def multi_label_line(info: dict) -> str:
    threshold = info["decision_threshold"]
    decision = (f"a label is predicted above probability {threshold}" if threshold else
                "each label's decision threshold is chosen on the validation split")
    return f"- Multi-label: a row counts under each of its labels below; {decision}"


def unlabeled_line(info: dict) -> str:
    dropped = info["unlabeled_dropped"]
    return (f"- Unlabeled texts, labeled by the teacher only (label {UNLABELED}): {info['rows'][UNLABELED_SPLIT]:,} "
            f"kept of the {info['unlabeled_source_rows']:,} rows of {markdown_text(info['unlabeled_source'])}; "
            f"dropped {dropped['empty']:,} empty, {dropped['in_test']:,} repeating a test text and "
            f"{dropped['in_train_or_validation']:,} repeating a train or validation text (whitespace ignored)")


def markdown_text(value) -> str:
    """`value` as literal Markdown on one line: a user's or the data's text (a source, a column or label name, a data
    version) must not add lines, table cells, links, emphasis or HTML to the report."""
    return re.sub(r"([\\`*_\[\]<>|~&$])", r"\\\1", " ".join(str(value).split()))


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
