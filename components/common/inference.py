"""Batched inference over a tokenized split: batches grouped by length, results in the split's row order."""

import numpy as np

from .data import LENGTH, MODEL_INPUTS, split_for_tokenizer


def torch_runner(model):
    """A function from a batch of int64 numpy inputs to float32 numpy logits, on the model's device, in fp32."""
    import torch

    model.eval()
    device = next(model.parameters()).device

    def logits(batch: dict) -> np.ndarray:
        with torch.inference_mode():
            inputs = {name: torch.from_numpy(values).to(device) for name, values in batch.items()}
            return model(**inputs).logits.float().cpu().numpy()

    return logits


def padded_batch(split, rows: list[int], tokenizer) -> dict:
    """The given rows of a tokenized split, padded to their longest, as int64 numpy arrays."""
    batch = tokenizer.pad(split.select_columns(MODEL_INPUTS)[rows], return_tensors="np")
    return {name: batch[name].astype(np.int64) for name in MODEL_INPUTS}


def predict(runner, split, tokenizer, batch_size: int = 64, by_length: bool = True) -> np.ndarray:
    """Logits of `runner` for every row of `split`, in row order.

    Rows are batched by length so little padding is computed; the sort is undone before returning, which
    matters for anything stored per row (the teacher's cached logits).
    """
    order = np.argsort(split[LENGTH], kind="stable") if by_length else np.arange(len(split))
    batches = [runner(padded_batch(split, order[start:start + batch_size].tolist(), tokenizer))
               for start in range(0, len(order), batch_size)]
    in_batch_order = np.concatenate(batches)
    logits = np.empty_like(in_batch_order)
    logits[order] = in_batch_order
    return logits


def predict_logits(model, split, tokenizer, batch_size: int = 64) -> np.ndarray:
    """Float32 logits of a PyTorch model for every row of `split`, in row order, on a GPU when there is one."""
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    return predict(torch_runner(model), split, tokenizer, batch_size)


def evaluate_on_test(model, tokenizer, data, batch_size: int = 64) -> dict:
    """Accuracy, macro F1 and confusion matrix of `model` (reading text with `tokenizer`) on the test split."""
    from .metrics import classification_metrics

    test = split_for_tokenizer(data, "test", tokenizer)
    predictions = predict_logits(model, test, tokenizer, batch_size).argmax(axis=-1)
    return classification_metrics(test["label"], predictions, data.num_labels)
