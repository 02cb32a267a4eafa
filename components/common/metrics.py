"""Classification metrics, written for the KFP UI (`Metrics`, `ClassificationMetrics`) and as JSON files."""

import json

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


def write_metrics(metrics_artifact, values: dict) -> None:
    """Logs the scalar values on a KFP `Metrics` artifact and writes all values as JSON at its path.

    kfp.local keeps logged metrics only in its executor output, so the JSON file is what later steps and
    the command line read.
    """
    for name, value in values.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics_artifact.log_metric(name, float(value))
    write_metrics_file(metrics_artifact.path, values)


def write_metrics_file(path: str, values: dict) -> None:
    """The JSON file that later steps read: at a `Metrics` artifact's path, or where a step's command is told."""
    with open(path, "w") as handle:
        json.dump(values, handle, indent=2)


def read_metrics(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def write_confusion_matrix(artifact, matrix: list[list[int]], label_names: list[str]) -> None:
    artifact.log_confusion_matrix(label_names, matrix)
    with open(artifact.path, "w") as handle:
        json.dump({"labels": label_names, "matrix": matrix}, handle, indent=2)


def argmax(logits) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)
