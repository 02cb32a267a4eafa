"""The report step: the run's summary and a quality report comparing teacher, student, its ONNX exports and the
hard-label baselines that were trained.

Run as a KFP component (component.py) or directly:

    python -m kdflow.components.report.task --teacher-metrics teacher.json --student-metrics student.json \
        --student STUDENT_DIR --onnx-model ONNX_DIR --quality-report report.html \
        [--baseline-metrics baseline.json] [--pretrained-baseline-metrics pretrained_baseline.json] \
        [--summary summary.json]
"""

import html
import json
import sys
from pathlib import Path

from kdflow.components.common import step
from kdflow.components.common.results import EXPORTS, Evaluation, RunSummary, Scores, read_run_summary
from kdflow.components.common.training import TRAINING_LOG, Tracking, figure_img, loss_plot_img

from .settings import Files, Result, Settings  # noqa: F401 (Settings: the step's interface)

COLUMNS = ("model", "accuracy", "macro F1", "parameters", "size (MB)", "latency batch 1 (ms)",
           "latency batch 32 (ms)")
SUBSET_ACCURACY = "subset accuracy"  # a multi-label model's accuracy column: every label of a row right


def run(settings: None, files: Files) -> Result:
    """Writes the quality report; returns the run's summary (a RunSummary) as JSON."""
    summary = read_run_summary(teacher_metrics=files.teacher_metrics, student_metrics=files.student_metrics,
                               onnx_model=files.onnx_model, student=files.student,
                               baseline_metrics=files.baseline_metrics,
                               pretrained_baseline_metrics=files.pretrained_baseline_metrics)
    label_names = Evaluation.read(files.student_metrics).label_names
    log_history = json.loads(Path(files.student, TRAINING_LOG).read_text())
    Path(files.quality_report).parent.mkdir(parents=True, exist_ok=True)
    Path(files.quality_report).write_text(report_html(summary, label_names, log_history))
    return Result(summary=summary.to_json(indent=None))


def model_rows(summary: RunSummary) -> list[tuple[str, Scores]]:
    """One row per model: its name and scores, size and latency; the ONNX exports have the student's parameters."""
    student = summary.student
    rows = [("teacher (PyTorch)", summary.teacher), ("student, distilled (PyTorch)", student)]
    rows += [(f"{kind.title} (PyTorch)", baseline.scores) for kind, baseline in summary.baselines()]
    for name, export in summary.onnx.exports.items():
        rows.append((f"student, {EXPORTS[name].title}", Scores(
            accuracy=export.accuracy, macro_f1=export.macro_f1, confusion_matrix=export.confusion_matrix,
            rows=summary.onnx.rows, parameters=student.parameters, size_mb=export.size_mb,
            latency_ms=export.latency_ms)))
    return rows


def cells(model: str, scores: Scores) -> list[str]:
    latency = scores.latency_ms or {}
    return [
        model, f"{scores.accuracy:.4f}", f"{scores.macro_f1:.4f}", number(scores.parameters, "{:,}"),
        number(scores.size_mb, "{:.1f}"), number(latency.get("1"), "{:.1f}"), number(latency.get("32"), "{:.1f}"),
    ]


def number(value, form: str) -> str:
    return "n/a" if value is None else form.format(value)


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def confusion_img(matrix: list[list[int]], label_names: list[str], title: str) -> str:
    """The confusion matrix as a picture: rows are the true labels, columns the predicted ones, each cell its count,
    shaded by its share of the row, so that a rare class's errors show as plainly as a common one's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.55 * len(label_names)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        axes.text(column, row, str(count), ha="center", va="center", fontsize=8,
                  color="white" if shares[row, column] > 0.5 else "black")
    axes.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    axes.set_yticks(range(len(label_names)), label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    return figure_img(figure, title)


def per_label_table(rows: list[tuple[str, Scores]], label_names: list[str]) -> str:
    """A multi-label run's F1 of each label, per model that has them."""
    return table(["model", *label_names, "micro F1"],
                 [[model, *(f"{value:.4f}" for value in scores.per_label_f1), f"{scores.micro_f1:.4f}"]
                  for model, scores in rows if scores.per_label_f1 is not None])


def report_html(summary: RunSummary, label_names: list[str], log_history: list[dict]) -> str:
    rows = model_rows(summary)
    onnx, gate = summary.onnx, summary.gate
    metric, name = gate.metric, gate.metric_name
    fp32_score = getattr(onnx.exports["fp32"], metric)
    verdict = "passed" if gate.passed else "failed"
    findings = [
        f"Retention (student / teacher {name}): {gate.retention:.4f}; the gate at "
        f"{gate.min_retention} {verdict}.",
        f"ONNX fp32 parity with PyTorch: max |logit difference| {onnx.max_abs_diff:.2e} on {onnx.parity_rows} "
        f"rows; int8 {name} {getattr(onnx.exports['int8'], metric) - fp32_score:+.4f} against fp32 (QDQ int8 on "
        f"OpenVINO: {getattr(onnx.exports['int8_qdq'], metric) - fp32_score:+.4f}).",
        f"Scores on {summary.student.rows} test rows; latency is the median of timed batches of test rows on "
        f"{onnx.threads} CPU threads (the teacher's on the device it was evaluated on).",
    ]
    if summary.training_rows:
        findings.append(f"The student trained on {summary.training_rows.labeled} labeled rows and "
                        f"{summary.training_rows.unlabeled} unlabeled ones (those learn from the teacher's logits "
                        "alone).")
    findings += [f"Distillation against the {kind.title}: "
                 f"{getattr(summary.student, metric) - getattr(baseline.scores, metric):+.4f} {name}."
                 for kind, baseline in summary.baselines()]
    header = list(COLUMNS)
    per_label = ""
    if summary.student.multi_label:
        header[1] = SUBSET_ACCURACY
        findings.append("Multi-label: a label is predicted where its probability is above its threshold, chosen on "
                        "the validation split and shipped with the model; each matrix counts the test rows with true "
                        "label i that were given label j.")
        per_label = f"<h2>F1 per label</h2>{per_label_table(rows, label_names)}"
    matrices = "".join(f"<div class='matrix'>{confusion_img(scores.confusion_matrix, label_names, model)}</div>"
                       for model, scores in rows)
    return (
        "<html><head><meta charset='utf-8'><title>kdflow quality report</title><style>"
        "body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:0.5em 0}"
        "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right} td:first-child{text-align:left}"
        ".matrix{display:inline-block;margin-right:2em;vertical-align:top} .failed{color:#b00020;font-weight:bold}"
        "</style></head><body>"
        "<h1>kdflow quality report</h1>"
        f"{table(header, [cells(model, scores) for model, scores in rows])}"
        f"{''.join(f'<p class=failed>Gate failed: {html.escape(reason)}</p>' for reason in gate.reasons)}"
        f"<ul>{''.join(f'<li>{html.escape(line)}</li>' for line in findings)}</ul>"
        f"<h2>Distillation losses</h2>{loss_plot_img(log_history, 'Distillation losses')}"
        f"{tracking_html(summary.tracking)}"
        f"{per_label}<h2>Confusion matrices</h2>{matrices}</body></html>"
    )


def tracking_html(tracking: Tracking | None) -> str:
    """Where the run's trainings logged their parameters, losses and metrics, the student's MLflow run linked when
    it is on a server; nothing when they were not logged."""
    if tracking is None:
        return ""
    uri = html.escape(tracking.tracking_uri)
    if tracking.report_to == "mlflow":
        run = html.escape(f"{tracking.run_name}/{tracking.step}")
        if tracking.tracking_uri.startswith(("http://", "https://")):
            server = tracking.tracking_uri.rstrip("/")
            address = f"{server}/#/experiments/{tracking.experiment_id}/runs/{tracking.run_id}"
            run = f"<a href='{html.escape(address)}'>{run}</a>"
        where = (f"MLflow at {uri}, experiment {html.escape(tracking.experiment)} (id {tracking.experiment_id}): "
                 f"the student's run {run} (id {tracking.run_id}); each training of this pipeline run (teacher, "
                 f"student, baselines) carries the tag kdflow.pipeline_run={html.escape(tracking.run_name)}.")
    else:
        where = (f"TensorBoard: the student's event files are in {html.escape(tracking.log_dir)}; <code>tensorboard "
                 f"--logdir {uri}</code> shows every training of every run.")
    return f"<h2>Experiment tracking</h2><p>{where}</p>"


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
