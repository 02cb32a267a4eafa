"""Classification metrics of a model's logits against labels (kdflow.components.common.results holds their types):
single-label (the most probable class) and multi-label (each label whose probability passes its threshold)."""

import numpy as np

# The thresholds tried per label when they are chosen on the validation split: a grid, not every probability seen,
# so that a small validation split cannot pick a threshold that fits its last few rows.
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)


def scores_of(logits, labels, num_labels: int, thresholds: list[float] | None = None) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows: true label, columns: predicted) of single-label logits;
    with `thresholds` (one per label), the multi-label scores (multi_label_metrics)."""
    return scores_of_decisions(decisions(logits, thresholds), labels, num_labels)


def decisions(logits, thresholds: list[float] | None = None) -> np.ndarray:
    """The class id per row; with `thresholds`, a 0/1 row of labels per row (multi-label)."""
    return argmax(logits) if thresholds is None else multi_label_predictions(logits, thresholds)


def scores_of_decisions(decided: np.ndarray, labels, num_labels: int) -> dict:
    """scores_of for decisions already made (`decisions`): multi-label when they are rows of labels."""
    if decided.ndim == 2:
        return multi_label_metrics(np.asarray(labels), decided)
    return classification_metrics(labels, decided, num_labels)


def classification_metrics(labels, predictions, num_labels: int) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows: true label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    label_ids = list(range(num_labels))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=label_ids, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=label_ids).tolist(),
        "rows": int(len(labels)),
    }


def multi_label_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """For 0/1 label and prediction matrices (rows, labels): subset accuracy (every label of a row right) as
    `accuracy`, macro, micro and per-label F1, each label's [[tn, fp], [fn, tp]], and as `confusion_matrix` how often
    a row with true label i was given label j (rows: true label, columns: predicted)."""
    from sklearn.metrics import accuracy_score, f1_score, multilabel_confusion_matrix

    labels, predictions = labels.astype(int), predictions.astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(labels, predictions, average="micro", zero_division=0)),
        "per_label_f1": [float(value) for value in f1_score(labels, predictions, average=None, zero_division=0)],
        "label_confusion": multilabel_confusion_matrix(labels, predictions).tolist(),
        "confusion_matrix": (labels.T @ predictions).tolist(),
        "rows": int(len(labels)),
    }


def argmax(logits) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def multi_label_predictions(logits, thresholds: list[float]) -> np.ndarray:
    """1 where a label's probability is above its threshold."""
    return (sigmoid(logits) > np.asarray(thresholds)).astype(int)


def choose_thresholds(logits, labels) -> list[float]:
    """Per label, the THRESHOLD_GRID value with the best F1 on these rows (the validation split's); of equal ones, the
    nearest 0.5."""
    probabilities, labels = sigmoid(logits), np.asarray(labels) > 0.5
    chosen = []
    for label in range(labels.shape[1]):
        predicted = probabilities[:, label, None] > THRESHOLD_GRID  # (rows, thresholds)
        true = labels[:, label, None]
        true_positives = (predicted & true).sum(axis=0)
        f1 = 2 * true_positives / np.maximum(predicted.sum(axis=0) + true.sum(), 1)
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        chosen.append(float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]]))
    return chosen
