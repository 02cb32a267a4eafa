"""The result types every step writes and every reader reads (kdflow.components.common.results): each round-trips
through its JSON, keeps the keys kdflow wrote before them, and a summary of another schema is refused."""

import json
from dataclasses import replace

import numpy as np
import pytest

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import (
    EXPORT_KINDS, SCHEMA_VERSION, Baseline, Evaluation, ExportScores, Gate, Int8Bound, OnnxReport, RunSummary, Scores,
    TextModelCheck, TrainingRows, score_rows,
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
        rows=100, calibration_rows=64, threads=8, opset_version=17,
        text_model=TextModelCheck(file="model.text.int8.xml", rows=100, token_ids_equal=0.99, differing_rows=[17],
                                  decisions_equal=1.0, accuracy=0.88, macro_f1=0.87),
        int8_bound=Int8Bound(max_drop=0.01, rows=500, precisions=["f32", "bf16"], fp32_accuracy=0.9,
                             int8_accuracy=0.894, int8_layers=40, float_layers=["/classifier/Gemm"],
                             test_accuracy={"f32": 0.88, "bf16": 0.875}))


def student_evaluation(accuracy: float) -> Evaluation:
    return Evaluation(scores(accuracy), ["negative", "positive"],
                      Gate.judge(scores(accuracy), scores(0.93), 0.97, 0.05))


def run_summary(with_baselines: bool = True) -> RunSummary:
    """A run with both baselines and the student's training rows, or (without) as a summary of an older kdflow."""
    return RunSummary.of(
        teacher=Evaluation(scores(0.93, 110_000_000), ["negative", "positive"]), student=student_evaluation(0.91),
        onnx=onnx_report(), seed=42,
        baseline=student_evaluation(0.88) if with_baselines else None,
        pretrained_baseline=student_evaluation(0.85) if with_baselines else None,
        training_rows=TrainingRows(labeled=1000, unlabeled=5000) if with_baselines else None)


@pytest.mark.parametrize("record", [
    scores(0.9), Gate.judge(scores(0.9), scores(0.95), 0.97, 0.05),
    Evaluation(scores(0.93), ["negative", "positive"]),
    Evaluation(scores(0.91), ["negative", "positive"], Gate.judge(scores(0.91), scores(0.93), 0.97, 0.05)),
    onnx_report(), run_summary(), run_summary(with_baselines=False),
], ids=["scores", "gate", "teacher evaluation", "student evaluation", "onnx report", "summary", "no baselines"])
def test_each_type_round_trips_through_its_json(record):
    assert type(record).from_json(record.to_json()) == record
    assert type(record).from_json(record.to_json(indent=None)) == record


def test_a_file_round_trips_too(tmp_path):
    summary = run_summary()
    summary.write(tmp_path / "deeper" / "summary.json")
    assert RunSummary.read(tmp_path / "deeper" / "summary.json") == summary


def test_the_gate_is_the_students_share_of_the_teachers_accuracy():
    assert Gate.judge(scores(0.9), scores(0.95), 0.9, 0.05) == Gate(
        teacher_accuracy=0.95, retention=0.9 / 0.95, min_retention=0.9, passed=True, majority_rate=0.52,
        min_accuracy_margin=0.05)
    failed = Gate.judge(scores(0.6), scores(0.95), 0.9, 0.05)
    assert not failed.passed and failed.reasons == ("The student keeps 0.6316 of the teacher's accuracy, below "
                                                    "min_retention=0.9.",)
    assert Gate.judge(scores(0.6), scores(0.0), 0.9, 0.05).retention == 0.0


def guessing(accuracy_of_one_class: float) -> Scores:
    """A model that answers the second class for every row of a test split that holds it `accuracy_of_one_class`."""
    positives = round(100 * accuracy_of_one_class)
    return Scores(accuracy=positives / 100, macro_f1=None, confusion_matrix=[[0, 100 - positives], [0, positives]],
                  rows=100)


def test_a_student_of_a_teacher_that_guesses_fails_the_gate_however_well_it_copies_it():
    """A teacher left at chance answers one class for every review; its student copies it and keeps all of its
    accuracy. Retention alone would pass it; the floor above the majority class and the single-class check do not."""
    gate = Gate.judge(guessing(0.5), guessing(0.5), 0.97, 0.05)
    assert gate.retention == 1.0 and not gate.passed
    assert gate.reasons == (
        "The teacher's accuracy 0.5000 is not min_accuracy_margin=0.05 above 0.5000, what always answering the "
        "commonest class scores on the test split.",
        "The teacher answers one class for 100.0% of the test rows.",
        "The student's accuracy 0.5000 is not min_accuracy_margin=0.05 above 0.5000, what always answering the "
        "commonest class scores on the test split.",
        "The student answers one class for 100.0% of the test rows.")
    # On a test split that is 99% one class, answering it scores 0.99: the floor judges that, not the share.
    skewed = guessing(0.99)
    assert Gate.judge(skewed, skewed, 0.97, 0.0).passed
    assert Gate.judge(skewed, skewed, 0.97, 0.005).reasons[0].startswith("The teacher's accuracy 0.9900 is not")


def test_a_metrics_file_keeps_its_flat_keys():
    gate = Gate.judge(scores(0.91), scores(0.93), 0.97, 0.05)
    values = Evaluation(scores(0.91), ["negative", "positive"], gate).to_dict()
    assert list(values) == ["accuracy", "macro_f1", "confusion_matrix", "rows", "parameters", "size_mb",
                            "latency_ms", "label_names", "teacher_accuracy", "retention", "min_retention", "passed",
                            "majority_rate", "min_accuracy_margin", "reasons", "metric"]


def test_the_onnx_report_keeps_its_keys_and_is_read_by_export_kind():
    report = onnx_report()
    values = report.to_dict()
    assert list(values) == [
        "max_abs_diff", "parity_tolerance", "parity_rows", "int8_max_abs_diff", "int8_qdq_max_abs_diff",
        "pytorch_accuracy", "fp32_accuracy", "int8_accuracy", "int8_qdq_accuracy", "fp32_macro_f1", "int8_macro_f1",
        "int8_qdq_macro_f1", "confusion_matrix", "rows", "calibration_rows", "latency_ms", "size_mb", "threads",
        "opset_version", "text_model", "text_model_error", "int8_bound"]
    assert list(values["latency_ms"]) == ["pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_qdq"]
    assert list(values["size_mb"]) == list(values["confusion_matrix"]) == ["onnx_fp32", "onnx_int8", "onnx_int8_qdq"]
    assert values["max_abs_diff"] == report.max_abs_diff == report.exports["fp32"].max_abs_diff
    assert values["int8_qdq_accuracy"] == report.exports["int8_qdq"].accuracy
    assert OnnxReport.from_dict(json.loads(json.dumps(values))) == report


def test_an_older_onnx_report_without_macro_f1_or_the_qdq_file_still_reads():
    values = onnx_report().to_dict()
    for name in ("fp32_macro_f1", "int8_macro_f1", "int8_qdq_macro_f1", "int8_qdq_accuracy", "int8_qdq_max_abs_diff"):
        del values[name]
    report = OnnxReport.from_dict(values)
    assert list(report.exports) == ["fp32", "int8"] and report.exports["fp32"].macro_f1 is None


def test_the_summary_has_todays_layout_and_its_schema_version():
    values = json.loads(run_summary().to_json())
    assert values["schema_version"] == SCHEMA_VERSION
    assert list(values) == ["schema_version", "teacher", "student", "retention", "gate", "onnx", "seed", "baseline",
                            "pretrained_baseline", "training_rows"]
    assert list(values["teacher"]) == ["accuracy", "macro_f1", "confusion_matrix", "rows", "parameters", "size_mb",
                                       "latency_ms"]
    assert values["retention"] == pytest.approx(0.91 / 0.93)
    assert values["gate"] == {"passed": True, "min_retention": 0.97,  # 0.91 / 0.93 = 0.978
                              "majority_rate": 0.52, "min_accuracy_margin": 0.05, "reasons": [],
                              "metric": "accuracy"}
    assert values["baseline"]["retention"] == pytest.approx(0.88 / 0.93)
    assert values["pretrained_baseline"] == {**scores(0.85).to_dict(), "retention": pytest.approx(0.85 / 0.93)}
    assert values["training_rows"] == {"labeled": 1000, "unlabeled": 5000}
    assert values["onnx"] == onnx_report().to_dict()
    assert not {"baseline", "pretrained_baseline", "training_rows"} & set(run_summary(with_baselines=False).to_dict())


def test_a_summary_written_before_the_pretrained_baseline_and_training_rows_still_reads():
    """The keys were added without a new schema_version: their absence reads as not trained, not recorded."""
    values = run_summary().to_dict()
    del values["pretrained_baseline"], values["training_rows"]
    assert RunSummary.from_dict(values) == replace(run_summary(), pretrained_baseline=None, training_rows=None)


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
        ("baseline, fine-tuned teacher's layers (labels only)", 0.88, scores(0.88).macro_f1),
        ("baseline, pretrained checkpoint's layers (labels only)", 0.85, scores(0.85).macro_f1)]
    assert summary.baseline == Baseline(scores(0.88), 0.88 / 0.93)
    assert summary.pretrained_baseline == Baseline(scores(0.85), 0.85 / 0.93)


def test_the_results_table_lines_up_every_models_scores():
    """The table `kdflow run` ends with: each model's accuracy and macro F1 end in the same column as the header's."""
    from kdflow.pipelines.cli import results_table

    summary = run_summary()
    table = results_table({**summary.to_dict(), "duration_s": 61.0}).splitlines()
    header, rows = table[0], table[1:1 + len(score_rows(summary))]
    assert [row.split("  ")[0] for row in rows] == [name for name, _, _ in score_rows(summary)]
    for row, (_, accuracy, f1) in zip(rows, score_rows(summary)):
        assert len(row) == len(header) and row.endswith(f"{accuracy:.4f}    {f1:.4f}"), (header, row)
    assert table[len(rows) + 1].startswith("retention 0.9785 (gate passed at 0.97)")


def multi_label_scores(macro_f1: float) -> Scores:
    """Two labels over 100 rows: the first on 40 of them, the second on 60."""
    return Scores(accuracy=macro_f1 - 0.1, macro_f1=macro_f1, confusion_matrix=[[35, 3], [4, 52]], rows=100,
                  micro_f1=macro_f1 + 0.01, per_label_f1=[macro_f1, macro_f1],
                  label_confusion=[[[55, 5], [5, 35]], [[36, 4], [8, 52]]])


def test_a_multi_label_gate_compares_macro_f1_above_answering_every_label():
    student, teacher = multi_label_scores(0.88), multi_label_scores(0.90)
    gate = Gate.judge(student, teacher, 0.97, 0.05)
    assert gate.metric == "macro_f1" and gate.passed, gate.reasons
    assert gate.retention == pytest.approx(0.88 / 0.90) and gate.teacher_accuracy == 0.90
    # Answering both labels for every row: F1 2p / (1 + p) with p = 0.4 and 0.6.
    assert gate.majority_rate == pytest.approx((0.8 / 1.4 + 1.2 / 1.6) / 2)
    weak = Gate.judge(multi_label_scores(0.68), multi_label_scores(0.70), 0.97, 0.05)
    assert not weak.passed and weak.reasons == (
        f"The teacher's macro F1 0.7000 is not min_accuracy_margin=0.05 above {weak.majority_rate:.4f}, what answering "
        "every label scores on the test split.",
        f"The student's macro F1 0.6800 is not min_accuracy_margin=0.05 above {weak.majority_rate:.4f}, what answering "
        "every label scores on the test split.")
    # Its figures survive the metrics file and the run summary.
    evaluation = Evaluation(student, ["plot", "music"], gate)
    assert Evaluation.from_json(evaluation.to_json()) == evaluation
    summary = RunSummary.of(teacher=Evaluation(teacher, ["plot", "music"]), student=evaluation, onnx=onnx_report(),
                            seed=1)
    assert RunSummary.from_json(summary.to_json()) == summary and summary.student.multi_label


def test_multi_label_metrics_and_thresholds_chosen_per_label():
    from kdflow.components.common.metrics import choose_thresholds, scores_of

    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    # Label 0 is told apart at probabilities above 0.8 only, label 1 at any threshold between 0.2 and 0.6.
    probabilities = np.array([[0.9, 0.1], [0.85, 0.7], [0.7, 0.65], [0.1, 0.15]])
    logits = np.log(probabilities / (1 - probabilities))
    thresholds = choose_thresholds(logits, labels)
    assert 0.7 <= thresholds[0] < 0.85 and thresholds[1] == 0.5  # of equal F1, the one nearest 0.5
    scores = scores_of(logits, labels, 2, thresholds)
    assert (scores["accuracy"], scores["macro_f1"], scores["per_label_f1"]) == (1.0, 1.0, [1.0, 1.0])
    at_half = scores_of(logits, labels, 2, [0.5, 0.5])  # row 3 gets label 0 too
    assert at_half["accuracy"] == 0.75 and at_half["per_label_f1"][0] == pytest.approx(0.8)
    assert at_half["label_confusion"][0] == [[1, 1], [0, 2]] and at_half["confusion_matrix"] == [[2, 1], [2, 2]]
    assert at_half["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1))
