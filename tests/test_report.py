"""The report step on written artifacts: the run's summary and the quality report, with both hard-label baselines
labeled so a reader tells them apart, and the training rows the student learned from."""

import html
import json

from test_results import onnx_report, scores, student_evaluation

from kdflow.components.common.results import ONNX_REPORT, Evaluation, RunSummary, TrainingRows
from kdflow.components.common.training import PROVENANCE, TRAINING_LOG
from kdflow.components.report import task
from kdflow.components.report.settings import Files


def run_report(tmp_path, provenance: dict, **baselines: float) -> tuple[RunSummary, str]:
    """The step on a student with this PROVENANCE and the baselines given (metrics file name -> accuracy); returns
    its summary and its report."""
    student, onnx = tmp_path / "student", tmp_path / "onnx"
    student.mkdir()
    (student / PROVENANCE).write_text(json.dumps(provenance))
    (student / TRAINING_LOG).write_text(json.dumps([{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5}]))
    onnx_report().write(onnx / ONNX_REPORT)
    Evaluation(scores(0.93, 110_000_000), ["negative", "positive"]).write(tmp_path / "teacher.json")
    student_evaluation(0.91).write(tmp_path / "student.json")
    for name, accuracy in baselines.items():
        student_evaluation(accuracy).write(tmp_path / f"{name}.json")
    result = task.run(None, Files(
        teacher_metrics=str(tmp_path / "teacher.json"), student_metrics=str(tmp_path / "student.json"),
        student=str(student), onnx_model=str(onnx), quality_report=str(tmp_path / "report.html"),
        **{name: str(tmp_path / f"{name}.json") for name in baselines}))
    return RunSummary.from_json(result.summary), html.unescape((tmp_path / "report.html").read_text())


def test_the_report_shows_both_baselines_labeled_and_the_students_training_rows(tmp_path):
    summary, page = run_report(tmp_path, {"seed": 7, "rows": {"labeled": 1000, "unlabeled": 5000}},
                               baseline_metrics=0.88, pretrained_baseline_metrics=0.85)
    assert (summary.baseline.scores.accuracy, summary.pretrained_baseline.scores.accuracy) == (0.88, 0.85)
    assert summary.training_rows == TrainingRows(labeled=1000, unlabeled=5000) and summary.seed == 7
    assert ("<td>baseline from the fine-tuned teacher's layers, hard labels only (PyTorch)</td><td>0.8800</td>"
            in page)
    assert ("<td>baseline from the pretrained checkpoint's layers, hard labels only (PyTorch)</td><td>0.8500</td>"
            in page)
    for layers, gain in (("fine-tuned teacher's", "+0.0300"), ("pretrained checkpoint's", "+0.0600")):
        assert f"Distillation against the baseline from the {layers} layers, hard labels only: {gain}" in page
    assert "The student trained on 1000 labeled rows and 5000 unlabeled ones" in page
    # A confusion matrix picture per model: teacher, student, two baselines, three ONNX exports.
    assert page.count("<div class='matrix'><img alt=") == 7


def test_a_report_without_baselines_of_a_student_that_did_not_record_its_rows(tmp_path):
    summary, page = run_report(tmp_path, {"seed": 7})
    assert summary.baseline is summary.pretrained_baseline is summary.training_rows is None
    assert "baseline" not in page and "unlabeled" not in page
    assert page.count("<div class='matrix'><img alt=") == 5
