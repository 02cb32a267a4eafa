"""The report step: the run's summary and a quality report comparing teacher, student, its ONNX exports and,
when it was trained, the hard-label baseline.

    python -m kdflow.components.report.task --teacher-metrics teacher.json --student-metrics student.json \
        --student STUDENT_DIR --onnx ONNX_DIR --report report.html [--baseline-metrics baseline.json]
"""

import argparse
import html
import json
from pathlib import Path

from kdflow.components.common.summary import build_summary
from kdflow.components.common.training import TRAINING_LOG, loss_plot_img

COLUMNS = ("model", "accuracy", "macro F1", "parameters", "size (MB)", "latency batch 1 (ms)",
           "latency batch 32 (ms)")


def run(*, teacher_metrics_path: str, student_metrics_path: str, student_dir: str, onnx_dir: str, report_path: str,
        baseline_metrics_path: str | None = None) -> dict:
    """Writes the quality report at `report_path`; returns the run's summary (see `build_summary`)."""
    summary = build_summary(teacher_metrics_path=teacher_metrics_path, student_metrics_path=student_metrics_path,
                            onnx_dir=onnx_dir, student_dir=student_dir, baseline_metrics_path=baseline_metrics_path)
    label_names = json.loads(Path(student_metrics_path).read_text())["label_names"]
    log_history = json.loads(Path(student_dir, TRAINING_LOG).read_text())
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report_html(summary, label_names, log_history))
    return summary


def model_rows(summary: dict) -> list[dict]:
    """One row per model: its name, scores, size and latency; the ONNX exports have the student's parameters."""
    onnx, student = summary["onnx"], summary["student"]
    rows = [{"model": "teacher (PyTorch)", **summary["teacher"]},
            {"model": "student, distilled (PyTorch)", **student}]
    if "baseline" in summary:
        rows.append({"model": "student, hard labels only (PyTorch)", **summary["baseline"]})
    for kind, name in (("fp32", "ONNX fp32"), ("int8", "ONNX int8"), ("int8_qdq", "ONNX int8 QDQ, OpenVINO")):
        rows.append({
            "model": f"student, {name}", "accuracy": onnx[f"{kind}_accuracy"],
            "macro_f1": onnx[f"{kind}_macro_f1"], "confusion_matrix": onnx["confusion_matrix"][f"onnx_{kind}"],
            "parameters": student.get("parameters"), "size_mb": onnx["size_mb"][f"onnx_{kind}"],
            "latency_ms": onnx["latency_ms"][f"onnx_{kind}"],
        })
    return rows


def cells(row: dict) -> list[str]:
    latency = row.get("latency_ms") or {}
    return [
        row["model"], f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}", number(row.get("parameters"), "{:,}"),
        number(row.get("size_mb"), "{:.1f}"), number(latency.get("1"), "{:.1f}"), number(latency.get("32"), "{:.1f}"),
    ]


def number(value, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def confusion_table(matrix: list[list[int]], label_names: list[str]) -> str:
    """Rows are the true labels, columns the predicted ones."""
    return table(["true \\ predicted", *label_names], [[name, *counts] for name, counts in zip(label_names, matrix)])


def report_html(summary: dict, label_names: list[str], log_history: list[dict]) -> str:
    rows = model_rows(summary)
    onnx, gate = summary["onnx"], summary["gate"]
    verdict = "passed" if gate["passed"] else "failed"
    findings = [
        f"Retention (student / teacher accuracy): {summary['retention']:.4f}; the gate at "
        f"{gate['min_retention']} {verdict}.",
        f"ONNX fp32 parity with PyTorch: max |logit difference| {onnx['max_abs_diff']:.2e} on {onnx['parity_rows']} "
        f"rows; int8 accuracy {onnx['int8_accuracy'] - onnx['fp32_accuracy']:+.4f} against fp32 (QDQ int8 on "
        f"OpenVINO: {onnx['int8_qdq_accuracy'] - onnx['fp32_accuracy']:+.4f}).",
        f"Scores on {summary['student']['rows']} test rows; latency is the median of timed batches of test rows on "
        f"{onnx['threads']} CPU threads (the teacher's on the device it was evaluated on).",
    ]
    if "baseline" in summary:
        gain = summary["student"]["accuracy"] - summary["baseline"]["accuracy"]
        findings.append(f"Distillation against the same student trained on hard labels only: {gain:+.4f} accuracy.")
    matrices = "".join(f"<div class='matrix'><h3>{html.escape(row['model'])}</h3>"
                       f"{confusion_table(row['confusion_matrix'], label_names)}</div>" for row in rows)
    return (
        "<html><head><meta charset='utf-8'><title>kdflow quality report</title><style>"
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:0.5em 0}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right} td:first-child{text-align:left}"
        ".matrix{display:inline-block;margin-right:2em;vertical-align:top}</style></head><body>"
        "<h1>kdflow quality report</h1>"
        f"{table(list(COLUMNS), [cells(row) for row in rows])}"
        f"<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in findings)}</ul>"
        f"<h2>Distillation losses</h2>{loss_plot_img(log_history, 'Distillation losses')}"
        f"<h2>Confusion matrices</h2>{matrices}</body></html>"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-metrics", required=True, help="teacher_eval's metrics JSON")
    parser.add_argument("--student-metrics", required=True, help="student_eval's metrics JSON for the student")
    parser.add_argument("--student", required=True, help="the distilled student's folder (for its training log)")
    parser.add_argument("--onnx", required=True, help="onnx_export's folder")
    parser.add_argument("--report", required=True, help="path of the HTML report")
    parser.add_argument("--baseline-metrics", help="student_eval's metrics JSON for the hard-label baseline")
    args = parser.parse_args(argv)
    summary = run(teacher_metrics_path=args.teacher_metrics, student_metrics_path=args.student_metrics,
                  student_dir=args.student, onnx_dir=args.onnx, report_path=args.report,
                  baseline_metrics_path=args.baseline_metrics)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
