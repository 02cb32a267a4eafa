"""Batched inference over a tokenized split: batches grouped by length, results in the split's row order; and the
teacher's logits artifact that teacher_eval (or the teacher_shard steps, merged by merge_logits) writes for distill."""

import statistics
import time
from pathlib import Path

import numpy as np

from . import models
from .data import LABEL, LENGTH, MODEL_INPUTS, UNLABELED_SPLIT, split_for_tokenizer
from .metrics import choose_thresholds, scores_of
from .progress import Progress

# Rows per batch when a step runs a model over a split (teacher_eval, teacher_shard, the evaluations). Not a pipeline
# parameter: batches are grouped by length, and their size changes speed and memory, not the logits (beyond rounding).
INFERENCE_BATCH_SIZE = 64

SHARD_INFO = "shard.json"  # which shard a teacher_shard step's logits folder holds, read by merge_logits


def logit_splits(data) -> tuple[str, ...]:
    """The splits whose teacher logits the distill step reads: train to learn from, validation for its evaluation
    loss, and unlabeled, when the data has it, to learn from the teacher alone."""
    return ("train", "validation", *([UNLABELED_SPLIT] if data.has_unlabeled else []))


def torch_runner(model, precision: str = "fp32"):
    """A function from a batch of int64 numpy inputs to float32 numpy logits, on the model's device.

    It computes in `precision` (see training.resolve_precision): bf16 or fp16 run under autocast, so the weights
    stay fp32 and only the matrix products drop to half precision.
    """
    import torch

    from .training import resolve_precision

    model.eval()
    device = next(model.parameters()).device
    precision = resolve_precision(precision)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def logits(batch: dict) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=half, enabled=half is not None):
            inputs = {name: torch.from_numpy(values).to(device) for name, values in batch.items()}
            return model(**inputs).logits.float().cpu().numpy()

    return logits


def padded_batch(split, rows: list[int], tokenizer) -> dict:
    """The given rows of a tokenized split, padded to their longest, as int64 numpy arrays."""
    batch = tokenizer.pad(split.select_columns(MODEL_INPUTS)[rows], return_tensors="np")
    return {name: batch[name].astype(np.int64) for name in MODEL_INPUTS}


def batches_in_order(split, tokenizer, batch_size: int) -> list[dict]:
    """Every row of `split` in its order, in batches padded to their longest row."""
    return [padded_batch(split, list(range(start, min(start + batch_size, len(split)))), tokenizer)
            for start in range(0, len(split), batch_size)]


def predict(runner, split, tokenizer, batch_size: int = INFERENCE_BATCH_SIZE, by_length: bool = True) -> np.ndarray:
    """Logits of `runner` for every row of `split`, in row order.

    Rows are batched by length so little padding is computed; the sort is undone before returning, which
    matters for anything stored per row (the teacher's cached logits).
    """
    order = np.argsort(split[LENGTH], kind="stable") if by_length else np.arange(len(split))
    progress = Progress("scoring", len(order), "rows")
    batches = []
    for start in range(0, len(order), batch_size):
        batches.append(runner(padded_batch(split, order[start:start + batch_size].tolist(), tokenizer)))
        progress.update(min(start + batch_size, len(order)))
    in_batch_order = np.concatenate(batches)
    logits = np.empty_like(in_batch_order)
    logits[order] = in_batch_order
    return logits


def predict_logits(model, split, tokenizer, batch_size: int = INFERENCE_BATCH_SIZE,
                   precision: str = "fp32") -> np.ndarray:
    """Float32 logits of a PyTorch model for every row of `split`, in row order, on a GPU when there is one,
    computed in `precision` (torch_runner)."""
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    return predict(torch_runner(model, precision), split, tokenizer, batch_size)


def evaluate_on_test(model, tokenizer, data, batch_size: int = INFERENCE_BATCH_SIZE, precision: str = "fp32") -> dict:
    """The scores of `model` (reading text with `tokenizer`) on the test split (metrics.scores_of), a multi-label
    model's with its decision thresholds."""
    test = split_for_tokenizer(data, "test", tokenizer)
    logits = predict_logits(model, test, tokenizer, batch_size, precision)
    return scores_of(logits, test[LABEL], data.num_labels, models.decision_thresholds(model.config))


def fit_decision_thresholds(model, tokenizer, data) -> None:
    """For multi-label data, gives a trained model its decision thresholds: the data's decision_threshold for every
    label, or each label's best on the validation split (metrics.choose_thresholds)."""
    if not data.multi_label:
        return
    if data.decision_threshold:
        thresholds = [data.decision_threshold] * data.num_labels
    else:
        validation = split_for_tokenizer(data, "validation", tokenizer)
        thresholds = choose_thresholds(predict_logits(model, validation, tokenizer), validation[LABEL])
    models.set_decision_thresholds(model, thresholds)


def teacher_logits(model, data, batch_size: int = INFERENCE_BATCH_SIZE, rows=None, precision: str = "auto"):
    """The model's logits on `logit_splits(data)`, one float column `teacher_logits` per split, in row order.

    `rows` maps a split's length to the rows to take (a shard); all of them by default. The model runs in
    `precision`: in bf16 the logits differ from fp32 by under 1e-2, far below what the softened targets resolve,
    and on a CPU with AMX they come about 2.4x faster.
    """
    import datasets

    def split_logits(split):
        if rows is not None:
            split = split.select(rows(len(split)))
        return datasets.Dataset.from_dict({"teacher_logits": predict_logits(model, split, data.tokenizer, batch_size,
                                                                               precision)})

    return datasets.DatasetDict({name: split_logits(data.splits[name]) for name in logit_splits(data)})


LATENCY_BATCH_SIZES = (1, 32)
LATENCY_WARMUP_RUNS = 2
LATENCY_TIMED_RUNS = 5
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.onnx")


def latencies_ms(runner, split, tokenizer, batch_sizes=LATENCY_BATCH_SIZES) -> dict[str, float]:
    """Median milliseconds per batch of the first rows of `split`, for each batch size (keys are the sizes)."""
    return {str(size): median_latency_ms(runner, split, tokenizer, size) for size in batch_sizes}


def median_latency_ms(runner, split, tokenizer, batch_size: int) -> float:
    """Median milliseconds per batch of the first `batch_size` rows (repeated if there are fewer)."""
    batch = padded_batch(split, np.resize(np.arange(len(split)), batch_size).tolist(), tokenizer)
    for _ in range(LATENCY_WARMUP_RUNS):
        runner(batch)
    timings = []
    for _ in range(LATENCY_TIMED_RUNS):
        start = time.perf_counter()
        runner(batch)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def footprint(model, folder: str) -> dict:
    """The model's parameter count and the size on disk of the weight files in its folder (None if it has none,
    as for a hub id)."""
    weights = [path for pattern in WEIGHT_FILES for path in Path(folder).glob(pattern)]
    return {"parameters": sum(parameter.numel() for parameter in model.parameters()),
            "size_mb": sum(path.stat().st_size for path in weights) / 1e6 if weights else None}
