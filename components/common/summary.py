"""summary.json: the figures of a run in one file, built from the steps' metric artifacts."""

import json
from pathlib import Path

SCORES = ("accuracy", "macro_f1", "confusion_matrix", "rows")
ONNX_REPORT = "onnx_report.json"


def build_summary(*, teacher_metrics_path: str, student_metrics_path: str, onnx_dir: str, **extra) -> dict:
    """Teacher and student test scores, retention, the gate, the ONNX report, and any `extra` fields."""
    teacher = json.loads(Path(teacher_metrics_path).read_text())
    student = json.loads(Path(student_metrics_path).read_text())
    return {
        "teacher": {name: teacher[name] for name in SCORES},
        "student": {name: student[name] for name in SCORES},
        "retention": student["retention"],
        "gate": {"passed": student["passed"], "min_retention": student["min_retention"]},
        "onnx": json.loads(Path(onnx_dir, ONNX_REPORT).read_text()),
        **extra,
    }


def score_rows(summary: dict) -> list[tuple[str, float, float | None]]:
    """(model, accuracy, macro F1 or None) for the teacher, the student and its two ONNX exports."""
    onnx = summary["onnx"]
    return [
        ("teacher", summary["teacher"]["accuracy"], summary["teacher"]["macro_f1"]),
        ("student", summary["student"]["accuracy"], summary["student"]["macro_f1"]),
        ("student onnx fp32", onnx["fp32_accuracy"], None),
        ("student onnx int8", onnx["int8_accuracy"], None),
    ]
