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
