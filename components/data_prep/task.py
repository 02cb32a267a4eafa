"""The data_prep step: loads a labelled text dataset, checks it, carves a validation split and tokenizes it.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.data_prep.task --data DATA_DIR --report report.md --source synthetic \
        --text-column text --label-column label --num-labels 2 --tokenizer wordpiece --teacher "" \
        --max-length 512 --truncation-side right --max-train-samples 0 --max-eval-samples 0 \
        --validation-fraction 0.1 --seed 42 --data-version ""

The source is `synthetic` (generated movie reviews, see synthetic.py), a folder or gs:// URI holding train
and test files (parquet, jsonl or csv; e.g. train.parquet and test.parquet), or else a Hugging Face hub
dataset with train and test splits. Rows are tokenized without padding (batches are padded when they are
made) and carry their token count in a `length` column for length-grouped batching. The output folder is
the layout `kdflow.components.common.data` reads; a Markdown report describes what came out.
"""

import math
import sys
import tempfile
from collections import Counter
from pathlib import Path

import datasets
import numpy as np

from kdflow.components.common import models, step, storage
from kdflow.components.common.data import LABEL, LENGTH, SPLITS, TEXT, save_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import record

from . import synthetic
from .settings import Files, Result, Settings  # noqa: F401 (Result: the step's interface)

SYNTHETIC = "synthetic"
WORDPIECE = "wordpiece"
# File extension -> the `datasets` builder that reads it.
FILE_BUILDERS = {"parquet": "parquet", "jsonl": "json", "json": "json", "csv": "csv"}
SOURCE_SPLITS = ("train", "test")
SYNTHETIC_ROWS = {"train": 4000, "test": 1000}  # before row limits
PERCENTILES = (50, 90, 99)
# Tokens of a WordPiece vocabulary trained on the texts (tokenizer=wordpiece): a fixed size, not a pipeline parameter.
WORDPIECE_VOCAB_SIZE = 8000
INFO_FILE = "data_info.json"  # written by save_prepared; moved into place last, it marks the folder complete
FULL_LENGTH = "full_length"  # tokens before truncation; only kept until the report's figures are taken


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
        raw = load_source(settings.source, Path(scratch, "cache"), settings.max_train_samples,
                          settings.max_eval_samples, settings.validation_fraction, settings.seed)
        label_names = check_columns(raw, settings.source, settings.text_column, settings.label_column,
                                    settings.num_labels)
        raw = {name: standard_columns(split, settings.text_column, settings.label_column, label_names)
               for name, split in raw.items()}
        splits = limit_rows(raw, settings.max_train_samples, settings.max_eval_samples, settings.validation_fraction,
                            settings.seed)
        check_classes(splits["train"], label_names)
        check_duplicates(splits, settings.source)
        if text_tokenizer is None:
            text_tokenizer = train_wordpiece(splits["train"][TEXT], WORDPIECE_VOCAB_SIZE, max_length)
        # Saved with the tokenizer, so a step that tokenizes again (online distillation) cuts the same side.
        text_tokenizer.truncation_side = settings.truncation_side

        splits = {name: encode(split, text_tokenizer, max_length) for name, split in splits.items()}
        # Every setting, then what the data gave: a setting added to data_prep is recorded without an edit here.
        info = {**record(settings), "label_names": label_names, "vocab_size": len(text_tokenizer),
                **split_figures(splits, settings.num_labels, max_length)}
        prepared = datasets.DatasetDict({name: split.remove_columns(FULL_LENGTH) for name, split in splits.items()})
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
                validation_fraction: float, seed: int) -> dict:
    """The source's train and test splits, as they come."""
    if source == SYNTHETIC:
        return synthetic_splits(max_train_samples, max_eval_samples, validation_fraction, seed)
    if storage.is_gcs(source) or Path(source).exists():
        return load_folder(source, cache_dir)
    return load_hub(source)


def synthetic_splits(max_train_samples: int, max_eval_samples: int, validation_fraction: float, seed: int) -> dict:
    """Generated reviews: enough train rows that `max_train_samples` remain once validation is carved out."""
    train_rows = SYNTHETIC_ROWS["train"]
    if max_train_samples:
        train_rows = math.ceil(max_train_samples / (1 - validation_fraction))
    train = synthetic.generate(train_rows, seed)
    test = synthetic.generate(max_eval_samples or SYNTHETIC_ROWS["test"], seed + 1, exclude=set(train[TEXT]))
    features = datasets.Features({
        TEXT: datasets.Value("string"), LABEL: datasets.ClassLabel(names=synthetic.LABEL_NAMES),
    })
    return {"train": datasets.Dataset.from_dict(train, features=features),
            "test": datasets.Dataset.from_dict(test, features=features)}


def find_split_files(folder: str) -> tuple[str, dict[str, list[str]]] | None:
    """The builder and files of the first format that has train and test files (`train.csv`, `train-0001.csv`...)."""
    for extension, builder in FILE_BUILDERS.items():
        files = {
            split: sorted(str(path) for pattern in (f"{split}.{extension}", f"{split}-*.{extension}")
                          for path in Path(folder).rglob(pattern))
            for split in SOURCE_SPLITS
        }
        if all(files.values()):
            return builder, files
    return None


def load_folder(source: str, cache_dir: Path) -> dict:
    found = find_split_files(storage.local_copy(source))
    if found is None:
        raise KdflowInputError(
            f"source={source!r} holds no train and test files: put train.parquet and test.parquet "
            "(or .jsonl, .csv) in it."
        )
    builder, files = found
    return {split: load_files(source, builder, split, paths, cache_dir) for split, paths in files.items()}


def load_files(source: str, builder: str, split: str, files: list[str], cache_dir: Path):
    try:
        # One split at a time: train and test files need not have the same columns.
        return datasets.load_dataset(builder, data_files={split: files}, split=split, cache_dir=str(cache_dir))
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        if "corresponds to no data" in str(error):  # how `datasets` says the files hold no rows
            raise empty_split_error(source, split) from None
        raise KdflowInputError(
            f"The {split} files of source={source!r} could not be read ({models.first_line(error)}): "
            "fix or replace them."
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
            f"({models.first_line(error)}): fix the name or path."
        ) from None
    missing = [name for name in SOURCE_SPLITS if name not in loaded]
    if missing:
        raise KdflowInputError(
            f"The dataset source={source!r} has splits {', '.join(loaded)} but no {' or '.join(missing)}: "
            "give a dataset with train and test splits, or a folder with train and test files."
        )
    return {name: loaded[name] for name in SOURCE_SPLITS}


def check_columns(raw: dict, source: str, text_column: str, label_column: str, num_labels: int) -> list[str]:
    """Checks every split's text and label columns; returns the label names."""
    for name, split in raw.items():
        columns = ", ".join(split.column_names)
        if len(split) == 0:
            raise empty_split_error(source, name)
        if text_column not in split.column_names:
            raise KdflowInputError(
                f"text_column={text_column!r} is not a column of the {name} split (it has {columns}): "
                "set text_column to the column that holds the texts."
            )
        if label_column not in split.column_names:
            raise KdflowInputError(
                f"label_column={label_column!r} is not a column of the {name} split (it has {columns}): "
                "set label_column to the column that holds the labels."
            )
        text_type = getattr(split.features[text_column], "dtype", type(split.features[text_column]).__name__)
        if text_type not in ("string", "large_string"):
            raise KdflowInputError(
                f"text_column={text_column!r} holds {text_type} values, not text: "
                "set text_column to the column that holds the texts."
            )
        missing_texts = split.data.column(text_column).null_count
        if missing_texts:
            raise KdflowInputError(
                f"text_column={text_column!r} has {missing_texts} null texts in the {name} split: "
                "drop those rows from the source."
            )
        check_labels(split, name, label_column, num_labels)
    label_feature = raw["train"].features[label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        return list(label_feature.names)
    return [f"label_{index}" for index in range(num_labels)]


def check_labels(split, split_name: str, label_column: str, num_labels: int) -> None:
    feature = split.features[label_column]
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes != num_labels:
        raise KdflowInputError(
            f"label_column={label_column!r} has {feature.num_classes} classes ({', '.join(feature.names)}) but "
            f"num_labels={num_labels}: set num_labels={feature.num_classes}."
        )
    for value in split[label_column]:
        if not is_integer(value):
            raise KdflowInputError(
                f"label_column={label_column!r} holds {value!r} in the {split_name} split, not an integer: "
                f"map the labels to integers 0..{num_labels - 1} first."
            )
        if not 0 <= value < num_labels:
            raise KdflowInputError(
                f"label_column={label_column!r} holds {value} in the {split_name} split, outside [0, {num_labels}): "
                "set num_labels to the number of classes, or fix the labels."
            )


def is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def standard_columns(split, text_column: str, label_column: str, label_names: list[str]):
    """Only the text and the label, named `text` and `label`, the label a ClassLabel (needed to stratify)."""
    split = split.select_columns([text_column, label_column])
    renames = {old: new for old, new in ((text_column, TEXT), (label_column, LABEL)) if old != new}
    if renames:
        split = split.rename_columns(renames)
    return split.cast_column(LABEL, datasets.ClassLabel(names=label_names))


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
    counts = Counter(train[LABEL])
    # Stratifying needs two rows of every class and room for one of each on both sides.
    stratify = min(counts.values()) >= 2 and min(validation_rows, len(train) - validation_rows) >= len(counts)
    parts = train.train_test_split(test_size=validation_rows, stratify_by_column=LABEL if stratify else None, seed=seed)
    test = raw["test"]
    if max_eval_samples and max_eval_samples < len(test):
        test = test.shuffle(seed=seed).select(range(max_eval_samples))  # sources are often sorted by label
    return {"train": first_rows(parts["train"], max_train_samples), "validation": parts["test"], "test": test}


def first_rows(split, limit: int):
    return split.select(range(limit)) if limit and limit < len(split) else split


def check_classes(train, label_names: list[str]) -> None:
    present = sorted(set(train[LABEL]))
    if len(present) < 2:
        raise KdflowInputError(
            f"The train split holds only label {present[0]} ({label_names[present[0]]}): a classifier needs two "
            "classes or more; check label_column, or raise max_train_samples."
        )


def check_duplicates(splits: dict, source: str) -> None:
    """Refuses data so full of copies that every validation row repeats a training row: such a validation split
    would measure recall of copies, not learning."""
    training_texts = set(splits["train"][TEXT])
    if all(text in training_texts for text in splits["validation"][TEXT]):
        raise KdflowInputError(
            f"Every validation text of source={source!r} also appears in train ({len(training_texts)} distinct texts "
            f"in {len(splits['train'])} train rows): remove the duplicate rows from the source."
        )


def train_wordpiece(texts: list[str], vocab_size: int, max_length: int):
    """A lower-casing BERT WordPiece tokenizer trained on `texts`, as a transformers tokenizer."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False)
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
    """Rows, rows per label and token-length figures of each split."""
    return {
        "rows": {name: len(split) for name, split in splits.items()},
        "label_counts": {name: label_counts(split, num_labels) for name, split in splits.items()},
        "token_lengths": {name: length_figures(split, max_length) for name, split in splits.items()},
    }


def label_counts(split, num_labels: int) -> list[int]:
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
        tokenizer_text = f"`{tokenizer}`"
    else:
        tokenizer_text = f"the teacher's, `{info['teacher']}`"
    names = info["label_names"]
    lines = [
        "# Prepared data",
        "",
        f"- Source: `{info['source']}` (text from `{info['text_column']}`, label from `{info['label_column']}`)",
        f"- Tokenizer: {tokenizer_text} ({info['vocab_size']:,} tokens)",
        f"- Truncation: {info['max_length']} tokens, no padding; seed {info['seed']}",
        *([f"- Data version: {info['data_version']}"] if info["data_version"] else []),
        "",
        "## Rows and label balance",
        "",
        "| split | rows | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    for split in SPLITS:
        rows = info["rows"][split]
        shares = " | ".join(f"{count:,} ({count / rows:.1%})" for count in info["label_counts"][split])
        lines.append(f"| {split} | {rows:,} | {shares} |")
    lines += [
        "",
        "## Token lengths before truncation",
        "",
        "| split | " + " | ".join(f"p{p}" for p in PERCENTILES) + f" | max | truncated at {info['max_length']} |",
        "|---|" + "---:|" * (len(PERCENTILES) + 2),
    ]
    for split in SPLITS:
        figures = info["token_lengths"][split]
        percentiles = " | ".join(str(figures[f"p{p}"]) for p in PERCENTILES)
        lines.append(f"| {split} | {percentiles} | {figures['max']} | {figures['truncated_share']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
