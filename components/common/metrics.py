"""Classification metrics of predictions against labels (kdflow.components.common.results holds their types)."""

import numpy as np


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


def argmax(logits) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)
