"""`kdflow run` end to end on the smoke preset; the bad input it refuses is in test_bad_input.py."""

import json
from pathlib import Path

import pytest

from kdflow.pipelines.cli import main


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory):
    output = tmp_path_factory.mktemp("smoke")
    assert main(["run", "--preset", "smoke", "--set", "compare_baseline=true", "--output", str(output)]) == 0
    return output


@pytest.fixture(scope="module")
def smoke_summary(smoke_output):
    return json.loads((smoke_output / "summary.json").read_text())


@pytest.mark.slow
def test_smoke_run_learns_and_exports(smoke_summary):
    assert smoke_summary["student"]["accuracy"] >= 0.90
    assert smoke_summary["teacher"]["accuracy"] >= 0.90
    assert smoke_summary["retention"] == pytest.approx(
        smoke_summary["student"]["accuracy"] / smoke_summary["teacher"]["accuracy"])
    assert smoke_summary["gate"]["passed"] == (smoke_summary["retention"] >= smoke_summary["gate"]["min_retention"])
    assert smoke_summary["onnx"]["max_abs_diff"] <= 1e-4
    assert smoke_summary["onnx"]["int8_accuracy"] >= 0.85
    assert smoke_summary["onnx"]["int8_qdq_accuracy"] >= 0.85


@pytest.mark.slow
def test_smoke_summary_points_at_the_artifacts(smoke_summary):
    artifacts = smoke_summary["artifacts"]
    assert (Path(artifacts["student"]) / "model.safetensors").exists()
    assert (Path(artifacts["onnx_model"]) / "model.onnx").exists()
    assert "data:image/png;base64," in Path(artifacts["training_curves"]).read_text()
    assert smoke_summary["parameters"]["source"] == "synthetic"
    assert smoke_summary["seed"] == smoke_summary["parameters"]["seed"] == 42


@pytest.mark.slow
def test_the_baseline_is_the_same_student_trained_without_the_teacher(smoke_summary):
    baseline, student = smoke_summary["baseline"], smoke_summary["student"]
    assert baseline["parameters"] == student["parameters"]
    assert baseline["rows"] == student["rows"]
    assert baseline["retention"] == pytest.approx(baseline["accuracy"] / smoke_summary["teacher"]["accuracy"])
    assert baseline["confusion_matrix"] != student["confusion_matrix"] or baseline["accuracy"] == student["accuracy"]


@pytest.mark.slow
def test_the_quality_report_compares_every_model(smoke_output, smoke_summary):
    report = (smoke_output / "quality_report.html").read_text()
    assert report == Path(smoke_summary["artifacts"]["quality_report"]).read_text()
    for model in ("teacher", "distilled", "hard labels only", "ONNX fp32", "ONNX int8", "ONNX int8 QDQ, OpenVINO"):
        assert model in report
    for kind in ("int8", "int8_qdq"):
        assert f"{smoke_summary['onnx'][f'{kind}_accuracy']:.4f}" in report
    assert f"{smoke_summary['teacher']['parameters']:,}" in report
    assert "data:image/png;base64," in report
    assert report.count("true \\ predicted") == 6  # one confusion matrix per model
    for model in ("teacher", "student"):
        figures = smoke_summary[model]
        assert figures["parameters"] > 0 and figures["size_mb"] > 0
        assert set(figures["latency_ms"]) == {"1", "32"}
    assert smoke_summary["teacher"]["parameters"] > smoke_summary["student"]["parameters"]
