"""`kdflow run` end to end on the smoke preset; the bad input it refuses is in test_bad_input.py."""

import json
from pathlib import Path

import pytest

from kdflow.pipelines.cli import main


@pytest.fixture(scope="module")
def smoke_output(tmp_path_factory):
    """The smoke run with both baselines, logging every training to TensorBoard event files beside it."""
    output = tmp_path_factory.mktemp("smoke")
    assert main(["run", "--preset", "smoke", "--set", "compare_baseline=true", "--output", str(output),
                 "--set", "report_to=tensorboard", "--set", f"tracking_uri={output / 'tensorboard'}"]) == 0
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
def test_the_pretrained_baseline_is_the_same_student_made_from_the_checkpoint_before_fine_tuning(smoke_output,
                                                                                                 smoke_summary):
    """The smoke teacher is trained from a random initialisation (pretrained_teacher=config:tiny-bert), so the
    pretrained baseline is the student's architecture from random layers, trained on the labels."""
    pretrained, student = smoke_summary["pretrained_baseline"], smoke_summary["student"]
    assert pretrained["parameters"] == student["parameters"] and pretrained["rows"] == student["rows"]
    assert pretrained["retention"] == pytest.approx(pretrained["accuracy"] / smoke_summary["teacher"]["accuracy"])
    assert smoke_summary["training_rows"]["unlabeled"] == 0
    report = (smoke_output / "quality_report.html").read_text()
    assert "pretrained checkpoint" in report and "fine-tuned teacher" in report


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
    # One confusion matrix picture per model, both baselines included.
    assert report.count("<div class='matrix'><img alt=") == 7
    for model in ("teacher", "student"):
        figures = smoke_summary[model]
        assert figures["parameters"] > 0 and figures["size_mb"] > 0
        assert set(figures["latency_ms"]) == {"1", "32"}
    assert smoke_summary["teacher"]["parameters"] > smoke_summary["student"]["parameters"]


@pytest.mark.slow
def test_every_training_of_the_run_is_in_tensorboard_and_the_summary_and_report_say_where(smoke_output,
                                                                                         smoke_summary):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracking = smoke_summary["tracking"]
    assert tracking["report_to"] == "tensorboard" and tracking["step"] == "student"
    run_folder = Path(tracking["log_dir"]).parent  # TRACKING_URI/EXPERIMENT/PIPELINE_RUN
    assert run_folder.parent.parent == smoke_output / "tensorboard"
    assert sorted(path.name for path in run_folder.iterdir()) == [
        "baseline", "pretrained_baseline", "student", "teacher"]
    for training in run_folder.iterdir():
        events = EventAccumulator(str(training))
        events.Reload()
        assert len(events.Scalars("train/loss")) >= 2 and events.Scalars("train/train_runtime"), training.name
    assert f"--logdir {smoke_output / 'tensorboard'}" in (smoke_output / "quality_report.html").read_text()


@pytest.mark.slow
def test_a_teacher_that_guesses_fails_the_gate_and_nothing_is_published(tmp_path, tokenizer_dir, capsys):
    """A teacher left at chance answers one class for every review, and a student that copies it keeps all of its
    accuracy: retention alone would pass it. The gate's floor above the majority class stops it; publish does not
    run, the champion stays, and the summary, the results table and the report say why."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    teacher = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=64))
    with torch.no_grad():  # "positive" whatever the review says
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    teacher.save_pretrained(str(tmp_path / "teacher"))
    tokenizer.save_pretrained(str(tmp_path / "teacher"))
    champion = tmp_path / "published" / "kdflow-student" / "latest.json"
    champion.parent.mkdir(parents=True)
    champion.write_text('{"version": "the-champion"}')

    output = tmp_path / "run"
    assert main(["run", "--preset", "smoke", "--output", str(output), "--publish-uri", str(tmp_path / "published"),
                 "--set", f"teacher={tmp_path / 'teacher'}", "--set", "train_teacher=false", "--set", "tokenizer=",
                 "--set", "max_train_samples=200", "--set", "max_eval_samples=100", "--set", "epochs=1"]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["teacher"]["accuracy"] == 0.5 and not summary["gate"]["passed"]
    reasons = summary["gate"]["reasons"]
    assert "The teacher's accuracy 0.5000 is not min_accuracy_margin=0.05 above 0.5000" in reasons[0]
    assert "The teacher answers one class for 100.0% of the test rows." in reasons
    assert summary["publish"]["promoted"] is False and "did not pass its gate" in summary["publish"]["reason"]
    assert champion.read_text() == '{"version": "the-champion"}'
    assert [path.name for path in champion.parent.iterdir()] == ["latest.json"]
    assert f"gate: {reasons[0]}" in capsys.readouterr().out
    assert "<p class=failed>Gate failed: The teacher&#x27;s accuracy 0.5000" in (output / "quality_report.html").read_text()


@pytest.mark.slow
def test_a_smoke_run_with_unlabeled_data_and_intermediate_terms_passes_its_gate(tmp_path):
    """Online distillation with every intermediate term, on labeled and teacher-labeled synthetic reviews, through the
    whole pipeline: the summary and the data report count the unlabeled rows, the exported student has no projection."""
    import pandas as pd

    from kdflow.components.data_prep import synthetic

    # Reviews of another seed than the run's: data_prep drops the few that repeat a labeled text.
    pd.DataFrame({"text": synthetic.generate(800, seed=7)["text"]}).to_parquet(tmp_path / "unsup.parquet")
    settings = ["unlabeled_source=" + str(tmp_path / "unsup.parquet"), "max_unlabeled_samples=600",
                "distill_mode=online", "hidden_cosine_weight=0.5", "hidden_mse_weight=0.5",
                "embedding_mse_weight=0.5", "attention_kl_weight=0.5"]
    output = tmp_path / "run"
    assert main(["run", "--preset", "smoke", *(word for pair in settings for word in ("--set", pair)),
                 "--output", str(output)]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["gate"]["passed"] and summary["student"]["accuracy"] >= 0.90
    assert summary["training_rows"]["unlabeled"] == 600
    assert summary["onnx"]["max_abs_diff"] <= 1e-4
    log = json.loads((Path(summary["artifacts"]["student"]) / "training_log.json").read_text())
    assert {"hidden_cosine_loss", "hidden_mse_loss", "embedding_mse_loss", "attention_kl_loss"} <= set(
        next(entry for entry in log if "loss" in entry))
    assert "600" in Path(summary["artifacts"]["data_report"]).read_text()


@pytest.mark.slow
def test_a_multi_label_smoke_run_passes_its_gate_on_macro_f1_and_publishes_its_thresholds(tmp_path):
    """Synthetic reviews labeled with the topics they judge (smoke-multi-label): a sigmoid per topic through every
    step, the gate on macro F1 above what answering every topic scores, the ONNX files scored on the same metrics,
    and each topic's threshold, chosen on validation, published in the model's config."""
    from kdflow.components.common.models import MULTI_LABEL_PROBLEM, THRESHOLDS
    from kdflow.components.common.text_model import TextClassifier
    from kdflow.components.data_prep.synthetic import TOPIC_NAMES

    output, published = tmp_path / "run", tmp_path / "published"
    assert main(["run", "--preset", "smoke-multi-label", "--output", str(output), "--publish-uri",
                 str(published)]) == 0
    summary = json.loads((output / "summary.json").read_text())
    gate, student, teacher = summary["gate"], summary["student"], summary["teacher"]
    assert gate["passed"] and gate["metric"] == "macro_f1", gate
    assert summary["retention"] == pytest.approx(student["macro_f1"] / teacher["macro_f1"])
    assert min(teacher["macro_f1"], student["macro_f1"]) >= gate["majority_rate"] + gate["min_accuracy_margin"]
    assert len(student["per_label_f1"]) == len(student["label_confusion"]) == len(TOPIC_NAMES)
    onnx = summary["onnx"]
    assert onnx["max_abs_diff"] <= 1e-4 and abs(onnx["fp32_macro_f1"] - student["macro_f1"]) <= 0.01
    assert min(onnx["int8_macro_f1"], onnx["int8_qdq_macro_f1"]) >= student["macro_f1"] - 0.05
    version = json.loads((published / "kdflow-student" / "latest.json").read_text())["uri"]
    config = json.loads((Path(version) / "config.json").read_text())
    assert config["problem_type"] == MULTI_LABEL_PROBLEM
    assert sorted(config["id2label"].values()) == sorted(TOPIC_NAMES)
    assert len(config[THRESHOLDS]) == len(TOPIC_NAMES) and all(0 < value < 1 for value in config[THRESHOLDS])
    # The published text model: sigmoid outputs, decided at those thresholds as the int8 model on its ids.
    text = onnx["text_model"]
    assert text["token_ids_equal"] == 1.0 and text["decisions_equal"] == 1.0
    assert text["macro_f1"] == onnx["int8_qdq_macro_f1"]
    classifier = TextClassifier(version)
    probabilities = classifier.probabilities(["the acting was superb", "a dull plot"])
    assert classifier.multi_label and all(len(answer.labels) <= len(TOPIC_NAMES)
                                          for answer in classifier.answers(probabilities))
    assert ((probabilities > 0) & (probabilities < 1)).all() and probabilities.shape == (2, len(TOPIC_NAMES))
    report = (output / "quality_report.html").read_text()
    assert "<h2>F1 per label</h2>" in report and "subset accuracy" in report
    assert "Retention (student / teacher macro F1)" in report
