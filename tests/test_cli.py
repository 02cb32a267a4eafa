"""`kdflow run` end to end on the smoke preset, and the sentences it answers bad input with."""

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


@pytest.mark.slow
def test_smoke_summary_points_at_the_artifacts(smoke_summary):
    artifacts = smoke_summary["artifacts"]
    assert (Path(artifacts["student"]) / "model.safetensors").exists()
    assert (Path(artifacts["onnx_model"]) / "model.onnx").exists()
    assert "data:image/png;base64," in Path(artifacts["training_curves"]).read_text()
    assert smoke_summary["parameters"]["source"] == "synthetic"


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
    for model in ("teacher", "distilled", "hard labels only", "ONNX fp32", "ONNX int8"):
        assert model in report
    assert f"{smoke_summary['onnx']['int8_accuracy']:.4f}" in report
    assert f"{smoke_summary['teacher']['parameters']:,}" in report
    assert "data:image/png;base64," in report
    assert report.count("true \\ predicted") == 5  # one confusion matrix per model
    for model in ("teacher", "student"):
        figures = smoke_summary[model]
        assert figures["parameters"] > 0 and figures["size_mb"] > 0
        assert set(figures["latency_ms"]) == {"1", "32"}
    assert smoke_summary["teacher"]["parameters"] > smoke_summary["student"]["parameters"]


@pytest.mark.parametrize("arguments, needle", [
    (["--preset", "nope"], "--preset 'nope' is unknown"),
    (["--set", "temprature=3"], "did you mean temperature"),
    (["--set", "epochs=two"], "epochs=two is not a valid float"),
    (["--set", "temperature=0"], "temperature=0.0 must be above 0"),
    (["--set", "alpha=1.5"], "alpha=1.5 must lie in [0, 1]"),
    (["--set", "distill_mode=fast"], "distill_mode='fast'"),
    (["--set", "epochs"], "is not NAME=VALUE"),
    (["--preset", "imdb"], "needs a teacher"),
    (["--preset", "minilm"], "The minilm preset needs --data"),
    (["--set", "truncation_side=middle"], "truncation_side='middle'"),
    (["--nproc", "3"], "batch_size=32 does not split evenly across 3 processes"),
])
def test_bad_parameters_stop_before_the_pipeline_starts(tmp_path, capsys, arguments, needle):
    assert main(["run", "--output", str(tmp_path / "out"), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert needle in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_data_error_inside_the_pipeline_is_reported_in_one_sentence(tmp_path, capsys, data_without_a_text_column):
    output = tmp_path / "out"
    assert main(["run", "--preset", "smoke", "--data", str(data_without_a_text_column), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "text_column" in error and "review" in error
    assert not (output / "summary.json").exists()

