"""Batched inference over a tokenized split: length-sorted batches, results in the split's row order."""

import numpy as np

from .data import LENGTH, MODEL_INPUTS


def best_device() -> "torch.device":  # noqa: F821
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def predict_logits(model, split, tokenizer, batch_size: int = 64) -> np.ndarray:
    """Float32 logits for every row of `split`, in row order.

    Rows are batched by length so little padding is computed; the sort is undone before returning, which
    matters for anything stored per row (the teacher's cached logits).
    """
    import torch
    from transformers import DataCollatorWithPadding

    device = best_device()
    model = model.to(device).eval()
    inputs = split.select_columns(MODEL_INPUTS)
    collate = DataCollatorWithPadding(tokenizer)
    order = np.argsort(split[LENGTH], kind="stable")
    logits = np.empty((len(split), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            columns = inputs[rows.tolist()]
            batch = collate([dict(zip(columns, values)) for values in zip(*columns.values())])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                output = model(**{k: v.to(device) for k, v in batch.items()})
            logits[rows] = output.logits.float().cpu().numpy()
    return logits


def evaluate_on_test(model, data, batch_size: int = 64) -> dict:
    """Accuracy, macro F1 and confusion matrix of `model` on the test split of prepared data."""
    from .metrics import classification_metrics

    test = data.splits["test"]
    predictions = predict_logits(model, test, data.tokenizer, batch_size).argmax(axis=-1)
    return classification_metrics(test["label"], predictions, data.num_labels)
