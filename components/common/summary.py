"""summary.json: the figures of a run in one file, built from the steps' metric artifacts."""

import json
from pathlib import Path

from .training import PROVENANCE

SCORES = ("accuracy", "macro_f1", "confusion_matrix", "rows", "parameters", "size_mb", "latency_ms")
ONNX_REPORT = "onnx_report.json"


def build_summary(*, teacher_metrics_path: str, student_metrics_path: str, onnx_dir: str, student_dir: str,
                  baseline_metrics_path: str | None = None, **extra) -> dict:
    """Teacher and student test scores, retention, the gate, the ONNX report, the seed the student was trained with,
    the hard-label baseline when it was trained, and any `extra` fields."""
    teacher = json.loads(Path(teacher_metrics_path).read_text())
    student = json.loads(Path(student_metrics_path).read_text())
    summary = {
        "teacher": scores(teacher),
        "student": scores(student),
        "retention": student["retention"],
        "gate": {"passed": student["passed"], "min_retention": student["min_retention"]},
        "onnx": json.loads(Path(onnx_dir, ONNX_REPORT).read_text()),
        # With the same data and settings, the same seed gives the same student (tests/test_distill_trainer.py).
        "seed": training_settings(student_dir).get("seed"),
    }
    if baseline_metrics_path:
        baseline = json.loads(Path(baseline_metrics_path).read_text())
        summary["baseline"] = {**scores(baseline), "retention": baseline["retention"]}
    return {**summary, **extra}


def training_settings(student_dir: str) -> dict:
    """The settings a student was distilled with; empty for a student kdflow did not train."""
    path = Path(student_dir, PROVENANCE)
    return json.loads(path.read_text()) if path.exists() else {}


def scores(metrics: dict) -> dict:
    return {name: metrics[name] for name in SCORES if name in metrics}


def score_rows(summary: dict) -> list[tuple[str, float, float | None]]:
    """(model, accuracy, macro F1 or None) for the teacher, the student, its ONNX exports, and the baseline."""
    onnx = summary["onnx"]
    rows = [
        ("teacher", summary["teacher"]["accuracy"], summary["teacher"]["macro_f1"]),
        ("student", summary["student"]["accuracy"], summary["student"]["macro_f1"]),
        ("student onnx fp32", onnx["fp32_accuracy"], onnx.get("fp32_macro_f1")),
        ("student onnx int8", onnx["int8_accuracy"], onnx.get("int8_macro_f1")),
        ("student onnx int8 qdq (openvino)", onnx["int8_qdq_accuracy"], onnx.get("int8_qdq_macro_f1")),
    ]
    if "baseline" in summary:
        rows.append(("baseline (no teacher)", summary["baseline"]["accuracy"], summary["baseline"]["macro_f1"]))
    return rows
