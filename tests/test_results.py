"""The result types every step writes and every reader reads (kdflow.components.common.results): each round-trips
through its JSON, keeps the keys kdflow wrote before them, and a summary of another schema is refused."""

import json

import pytest

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import (
    EXPORT_KINDS, SCHEMA_VERSION, Baseline, Evaluation, ExportScores, Gate, OnnxReport, RunSummary, Scores,
    score_rows,
)


def scores(accuracy: float, parameters: int = 66_000_000) -> Scores:
    return Scores(accuracy=accuracy, macro_f1=accuracy - 0.01, confusion_matrix=[[40, 8], [2, 50]], rows=100,
                  parameters=parameters, size_mb=255.4, latency_ms={"1": 9.5, "32": 120.25})


def onnx_report() -> OnnxReport:
    return OnnxReport(
        exports={kind.name: ExportScores(accuracy=0.9 - 0.01 * index, macro_f1=0.89 - 0.01 * index,
                                         confusion_matrix=[[45, 5], [5, 45]], max_abs_diff=1e-6 * (1 + 1000 * index),
                                         latency_ms={"1": 2.0 + index, "32": 30.0 + index}, size_mb=250.0 / (1 + index))
                 for index, kind in enumerate(EXPORT_KINDS)},
        pytorch_accuracy=0.9, pytorch_latency_ms={"1": 5.0, "32": 60.0}, parity_tolerance=1e-4, parity_rows=64,
        rows=100, calibration_rows=64, threads=8, opset_version=17)


def run_summary(with_baseline: bool = True) -> RunSummary:
    return RunSummary.of(
        teacher=Evaluation(scores(0.93, 110_000_000), ["negative", "positive"]),
        student=Evaluation(scores(0.91), ["negative", "positive"], Gate.judge(0.91, 0.93, 0.97)),
        onnx=onnx_report(), seed=42,
        baseline=Evaluation(scores(0.88), ["negative", "positive"], Gate.judge(0.88, 0.93, 0.97))
        if with_baseline else None)


@pytest.mark.parametrize("record", [
    scores(0.9), Gate.judge(0.9, 0.95, 0.97),
    Evaluation(scores(0.93), ["negative", "positive"]),
    Evaluation(scores(0.91), ["negative", "positive"], Gate.judge(0.91, 0.93, 0.97)),
    onnx_report(), run_summary(), run_summary(with_baseline=False),
], ids=["scores", "gate", "teacher evaluation", "student evaluation", "onnx report", "summary", "no baseline"])
def test_each_type_round_trips_through_its_json(record):
    assert type(record).from_json(record.to_json()) == record
    assert type(record).from_json(record.to_json(indent=None)) == record


def test_a_file_round_trips_too(tmp_path):
    summary = run_summary()
    summary.write(tmp_path / "deeper" / "summary.json")
    assert RunSummary.read(tmp_path / "deeper" / "summary.json") == summary


def test_the_gate_is_the_students_share_of_the_teachers_accuracy():
    assert Gate.judge(0.9, 0.95, 0.9) == Gate(teacher_accuracy=0.95, retention=0.9 / 0.95, min_retention=0.9,
                                              passed=True)
    assert not Gate.judge(0.5, 0.95, 0.9).passed
    assert Gate.judge(0.5, 0.0, 0.9).retention == 0.0


def test_a_metrics_file_keeps_its_flat_keys():
    values = Evaluation(scores(0.91), ["negative", "positive"], Gate.judge(0.91, 0.93, 0.97)).to_dict()
    assert list(values) == ["accuracy", "macro_f1", "confusion_matrix", "rows", "parameters", "size_mb",
                            "latency_ms", "label_names", "teacher_accuracy", "retention", "min_retention", "passed"]


def test_the_onnx_report_keeps_its_keys_and_is_read_by_export_kind():
    report = onnx_report()
    values = report.to_dict()
    assert list(values) == [
        "max_abs_diff", "parity_tolerance", "parity_rows", "int8_max_abs_diff", "int8_qdq_max_abs_diff",
        "pytorch_accuracy", "fp32_accuracy", "int8_accuracy", "int8_qdq_accuracy", "fp32_macro_f1", "int8_macro_f1",
        "int8_qdq_macro_f1", "confusion_matrix", "rows", "calibration_rows", "latency_ms", "size_mb", "threads",
        "opset_version"]
    assert list(values["latency_ms"]) == ["pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_qdq"]
    assert list(values["size_mb"]) == list(values["confusion_matrix"]) == ["onnx_fp32", "onnx_int8", "onnx_int8_qdq"]
    assert values["max_abs_diff"] == report.max_abs_diff == report.exports["fp32"].max_abs_diff
    assert values["int8_qdq_accuracy"] == report.exports["int8_qdq"].accuracy


def test_an_older_onnx_report_without_macro_f1_or_the_qdq_file_still_reads():
    values = onnx_report().to_dict()
    for name in ("fp32_macro_f1", "int8_macro_f1", "int8_qdq_macro_f1", "int8_qdq_accuracy", "int8_qdq_max_abs_diff"):
        del values[name]
    report = OnnxReport.from_dict(values)
    assert list(report.exports) == ["fp32", "int8"] and report.exports["fp32"].macro_f1 is None


def test_the_summary_has_todays_layout_and_its_schema_version():
    values = json.loads(run_summary().to_json())
    assert values["schema_version"] == SCHEMA_VERSION
    assert list(values) == ["schema_version", "teacher", "student", "retention", "gate", "onnx", "seed", "baseline"]
    assert list(values["teacher"]) == ["accuracy", "macro_f1", "confusion_matrix", "rows", "parameters", "size_mb",
                                       "latency_ms"]
    assert values["retention"] == pytest.approx(0.91 / 0.93)
    assert values["gate"] == {"passed": True, "min_retention": 0.97}  # 0.91 / 0.93 = 0.978
    assert values["baseline"]["retention"] == pytest.approx(0.88 / 0.93)
    assert values["onnx"] == onnx_report().to_dict()
    assert "baseline" not in run_summary(with_baseline=False).to_dict()


def test_a_summary_keeps_other_keys_out_of_the_type():
    """summary.json of `kdflow run` and of a published version carry settings and the decision beside the summary."""
    summary = run_summary()
    assert RunSummary.from_dict({**summary.to_dict(), "preset": "smoke", "publish": {"promoted": True}}) == summary


def test_a_summary_written_before_the_schema_version_reads_as_version_1():
    values = run_summary().to_dict()
    del values["schema_version"]
    assert RunSummary.from_dict(values) == run_summary()


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0])
def test_a_summary_of_another_schema_version_is_refused_in_one_sentence(version):
    text = json.dumps({**run_summary().to_dict(), "schema_version": version})
    with pytest.raises(KdflowInputError) as refused:
        RunSummary.from_json(text)
    assert str(refused.value) == (f"This run summary has schema_version {version} and this kdflow reads "
                                  f"schema_version {SCHEMA_VERSION}: read it with the kdflow release that wrote it.")


def test_score_rows_list_every_model():
    summary = run_summary()
    exports = summary.onnx.exports
    assert score_rows(summary) == [
        ("teacher", 0.93, scores(0.93).macro_f1), ("student", 0.91, scores(0.91).macro_f1),
        ("student onnx fp32", exports["fp32"].accuracy, exports["fp32"].macro_f1),
        ("student onnx int8", exports["int8"].accuracy, exports["int8"].macro_f1),
        ("student onnx int8 qdq (openvino)", exports["int8_qdq"].accuracy, exports["int8_qdq"].macro_f1),
        ("baseline (no teacher)", 0.88, scores(0.88).macro_f1)]
    assert summary.baseline == Baseline(scores(0.88), 0.88 / 0.93)
