"""The prepared-data artifact: tokenized splits, the tokenizer that made them, and what describes them.

Layout of the folder (a KFP `Dataset` artifact):

    splits/          datasets.DatasetDict with train, validation and test, and unlabeled when data_prep was given
                     unlabeled_source; columns text, label (int64, or for multi-label a 0/1 float32 per class;
                     UNLABELED in every unlabeled row), input_ids,
                     attention_mask, length (no padding), with the same features in every split, so that
                     `datasets.concatenate_datasets([train, unlabeled])` takes them as they are
    tokenizer/       the tokenizer that produced input_ids
    data_info.json   every data_prep setting (num_labels, source, max_length...), label names, rows, label
                     counts (labeled splits) and token lengths per split, empty texts dropped and texts repeating
                     train; with an unlabeled split, the rows read from its source and those dropped
"""

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import KdflowInputError

TEXT = "text"
LABEL = "label"
LENGTH = "length"
MODEL_INPUTS = ["input_ids", "attention_mask"]
SPLITS = ("train", "validation", "test")  # the labeled splits, always there
UNLABELED_SPLIT = "unlabeled"  # optional: texts the teacher labels for the student (transfer data)
# The label of an unlabeled row: PyTorch's and Hugging Face's ignore index, so a cross-entropy over a batch that mixes
# labeled and unlabeled rows skips the unlabeled ones by default.
UNLABELED = -100
# problem_type: one class per text (softmax), or any set of labels per text (a sigmoid per label). A multi-label
# row's label is a 0/1 float per class (an unlabeled row's every entry UNLABELED), as Hugging Face's multi-label loss
# takes it.
SINGLE_LABEL, MULTI_LABEL = "single_label", "multi_label"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL)


@dataclass
class PreparedData:
    splits: "datasets.DatasetDict"  # noqa: F821 (imported lazily)
    tokenizer: "transformers.PreTrainedTokenizerBase"  # noqa: F821
    info: dict

    @property
    def num_labels(self) -> int:
        return int(self.info["num_labels"])

    @property
    def label_names(self) -> list[str]:
        """Class id -> the name data_prep read from the label column."""
        return list(self.info["label_names"])

    @property
    def multi_label(self) -> bool:
        return self.info.get("problem_type", SINGLE_LABEL) == MULTI_LABEL  # data of older kdflows is single-label

    @property
    def decision_threshold(self) -> float:
        """A multi-label model's threshold on every label's probability; 0: one per label, chosen on validation."""
        return float(self.info.get("decision_threshold", 0.0))

    @property
    def max_length(self) -> int:
        return int(self.info["max_length"])

    @property
    def has_unlabeled(self) -> bool:
        return UNLABELED_SPLIT in self.splits


def save_prepared(path: str, splits, tokenizer, info: dict) -> None:
    root = Path(path)
    splits.save_to_disk(str(root / "splits"))
    tokenizer.save_pretrained(str(root / "tokenizer"))
    (root / "data_info.json").write_text(json.dumps(info, indent=2))


def load_prepared(path: str) -> PreparedData:
    import datasets
    from transformers import AutoTokenizer

    root = Path(path)
    if not (root / "data_info.json").exists():
        raise KdflowInputError(f"{path} is not a kdflow prepared-data folder: produce it with the data_prep step.")
    return PreparedData(
        splits=datasets.load_from_disk(str(root / "splits")),
        tokenizer=AutoTokenizer.from_pretrained(str(root / "tokenizer")),
        info=json.loads((root / "data_info.json").read_text()),
    )


def model_columns(split):
    """The split with only what a model's forward pass and the padding collator need."""
    keep = set(MODEL_INPUTS) | {LABEL}
    return split.remove_columns([c for c in split.column_names if c not in keep])


def retokenize(split, tokenizer, max_length: int):
    """The split's text encoded by another tokenizer: new input_ids, attention_mask and length."""

    def tokenize(batch):
        encoded = tokenizer(batch[TEXT], truncation=True, max_length=max_length, return_token_type_ids=False)
        return {**encoded, LENGTH: [len(ids) for ids in encoded["input_ids"]]}

    return split.map(tokenize, batched=True, desc="tokenizing for the student")


def split_for_tokenizer(data: PreparedData, name: str, tokenizer):
    """A split as `tokenizer` encodes it: as prepared when it is the data's vocabulary, else re-tokenized."""
    split = data.splits[name]
    if tokenizer.get_vocab() == data.tokenizer.get_vocab():
        return split
    return retokenize(split, tokenizer, data.max_length)
