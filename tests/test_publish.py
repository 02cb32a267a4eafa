"""The publish step against each store's real server (fake-gcs-server, moto's S3 server): complete versions, the
champion/challenger gate, faults."""

import json
import uuid
from pathlib import Path

import pytest
from test_results import run_summary

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import (
    EXPORT_KINDS, ONNX_REPORT, Evaluation, ExportScores, Gate, OnnxReport, RunSummary, Scores,
)
from kdflow.components.publish import task
from kdflow.components.publish.settings import Files, Settings

CONFUSION = [[24, 0], [0, 24]]


def scores(value):
    return Scores(accuracy=value, macro_f1=value, confusion_matrix=CONFUSION, rows=48)


def write_metrics(folder, accuracy):
    """The metrics files of teacher_eval and student_eval (teacher.json, student.json) of a student this accurate."""
    Evaluation(scores(0.95), ["negative", "positive"]).write(folder / "teacher.json")
    Evaluation(scores(accuracy), ["negative", "positive"], Gate.judge(scores(accuracy), scores(0.95), 0.9, 0.05)).write(
        folder / "student.json")


def write_results(folder, onnx_dir, accuracy):
    """write_metrics, and onnx_export's report of a student this accurate."""
    write_metrics(folder, accuracy)
    OnnxReport(
        exports={kind.name: ExportScores(accuracy=accuracy, macro_f1=accuracy, confusion_matrix=CONFUSION,
                                         max_abs_diff=1e-7, latency_ms={"1": 1.0}, size_mb=1.0)
                 for kind in EXPORT_KINDS},
        pytorch_accuracy=accuracy, pytorch_latency_ms={"1": 2.0}, parity_tolerance=1e-4, parity_rows=48, rows=48,
        calibration_rows=48, threads=2, opset_version=17,
    ).write(onnx_dir / ONNX_REPORT)


@pytest.fixture()
def model_folders(tmp_path):
    """A student folder and an ONNX folder with a few megabytes of bytes standing in for weights."""
    student, onnx = tmp_path / "student", tmp_path / "onnx"
    student.mkdir()
    onnx.mkdir()
    (student / "model.safetensors").write_bytes(uuid.uuid4().bytes * 65536)
    (student / "config.json").write_text("{}")
    (student / "distillation.json").write_text(json.dumps({"teacher": "config:tiny-bert", "temperature": 2.0, "seed": 7,
                                                           "data": {"source": "synthetic", "rows": {"train": 10}},
                                                           "rows": {"labeled": 10, "unlabeled": 30}}))
    (onnx / "model.onnx").write_bytes(uuid.uuid4().bytes * 131072)
    (onnx / "model.int8.onnx").write_bytes(uuid.uuid4().bytes * 32768)
    (onnx / "tokenizer.json").write_text("{}")
    return str(student), str(onnx)


@pytest.fixture()
def destination(bucket_uri):
    return f"{bucket_uri}/published"


def publish(model_folders, destination, tmp_path, version, accuracy, data, **options):
    """The step on a student this accurate, scored on the test rows of `data`; returns the decision it recorded at
    the destination."""
    student, onnx = model_folders
    write_results(tmp_path, Path(onnx), accuracy)
    settings = {"publish_uri": destination, "model_name": "sentiment", "model_version": version,
                "promotion_tolerance": 0.0, "run_id": "run-1", **options}
    result = task.run(Settings(**settings), Files(
        data=str(data), student=student, onnx_model=onnx, teacher_metrics=str(tmp_path / "teacher.json"),
        student_metrics=str(tmp_path / "student.json"), publish_report=str(tmp_path / f"{version}.md")))
    named = settings["model_version"] or settings["run_id"]
    decision = json.loads(storage.read_text(f"{destination}/sentiment/decisions/{named}.json"))
    assert (result.promoted, result.version_uri) == (decision["promoted"], decision["version_uri"])
    return decision


def latest(destination):
    return json.loads(storage.read_text(f"{destination}/sentiment/latest.json"))


def test_first_version_is_published_complete_and_promoted(tmp_path, model_folders, destination, prepared_data_dir):
    decision = publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)
    assert decision["promoted"] and decision["champion"] is None
    assert latest(destination) == {"version": "v1", "uri": f"{destination}/sentiment/v1", "accuracy": 0.90}
    files = storage.list_files(f"{destination}/sentiment/v1")
    assert {"model.onnx", "model.int8.onnx", "pytorch/model.safetensors", "summary.json", "README.md",
            "manifest.json"} <= set(files)
    download = storage.local_copy(f"{destination}/sentiment/v1")
    assert open(f"{download}/model.onnx", "rb").read() == open(f"{model_folders[1]}/model.onnx", "rb").read()
    manifest = json.loads(open(f"{download}/manifest.json").read())
    assert {entry["path"] for entry in manifest["files"]} == set(files) - {"manifest.json"}
    card = open(f"{download}/README.md").read()
    assert "| student | 0.9000 |" in card and "temperature" in card and "Seed: 7 " in card
    assert "| student onnx int8 qdq (openvino) | 0.9000 | 0.9000 |" in card
    assert "Training rows: 10 labeled and 30 unlabeled" in card and "| rows |" not in card
    published = json.loads(open(f"{download}/summary.json").read())
    assert published["publish"]["promoted"] and published["schema_version"] == 1
    summary = RunSummary.from_dict(published)  # the type reads it back, the decision left aside
    assert summary.student.accuracy == 0.90 and summary.seed == 7 and summary.onnx.max_abs_diff == 1e-7
    assert (summary.training_rows.labeled, summary.training_rows.unlabeled) == (10, 30)
    assert "promoted" in (tmp_path / "v1.md").read_text()


def test_the_model_card_gives_both_baselines_and_the_rows_the_student_learned_from(tmp_path):
    (tmp_path / "distillation.json").write_text(json.dumps({"teacher": "config:tiny-bert", "seed": 7}))
    card = task.model_card("sentiment", run_summary(), str(tmp_path))
    assert "| baseline, fine-tuned teacher's layers (labels only) | 0.8800 |" in card
    assert "| baseline, pretrained checkpoint's layers (labels only) | 0.8500 |" in card
    assert "Training rows: 1000 labeled and 5000 unlabeled" in card
    # A student of an older kdflow did not record its rows: the card says so.
    older = task.model_card("sentiment", run_summary(with_baselines=False), str(tmp_path))
    assert "Training rows: not recorded" in older and "baseline" not in older


def test_a_worse_challenger_is_not_promoted_and_latest_stays(tmp_path, model_folders, destination, prepared_data_dir):
    publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)
    decision = publish(model_folders, destination, tmp_path, "v2", 0.85, prepared_data_dir)
    assert not decision["promoted"]
    assert decision["champion"]["version"] == "v1" and decision["champion"]["accuracy"] == 0.90
    assert decision["champion"]["scored"] == "as recorded, on the same test rows"
    assert latest(destination)["version"] == "v1"
    assert storage.list_files(f"{destination}/sentiment/v2") == []
    recorded = json.loads(storage.read_text(f"{destination}/sentiment/decisions/v2.json"))
    assert recorded["promoted"] is False
    assert "not promoted" in (tmp_path / "v2.md").read_text()


def test_promotion_tolerance_lets_a_slightly_worse_challenger_through(
        tmp_path, model_folders, destination, prepared_data_dir):
    publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)
    assert publish(model_folders, destination, tmp_path, "v2", 0.89, prepared_data_dir,
                   promotion_tolerance=0.02)["promoted"]
    assert latest(destination)["version"] == "v2"


def test_failing_storage_mid_publish_keeps_the_old_version_and_a_rerun_completes(
        tmp_path, model_folders, destination, faulty_store, monkeypatch, prepared_data_dir):
    publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)
    monkeypatch.setenv("KDFLOW_STORAGE_RETRY_TIMEOUT_S", "2")
    # Two files of v2 go through, then every upload fails (until the retries give up).
    faulty_store.pass_first, faulty_store.fail_next = 2, 10**6
    with pytest.raises(RuntimeError, match="latest.json still points at the previous version"):
        publish(model_folders, destination, tmp_path, "v2", 0.95, prepared_data_dir)
    partial = storage.list_files(f"{destination}/sentiment/v2")
    assert len(partial) == 2 and "manifest.json" not in partial
    assert latest(destination)["version"] == "v1"
    faulty_store.fail_next = 0
    assert publish(model_folders, destination, tmp_path, "v2", 0.95, prepared_data_dir)["promoted"]
    assert latest(destination)["version"] == "v2"
    assert "manifest.json" in storage.list_files(f"{destination}/sentiment/v2")


def other_test_rows(prepared_data_dir, folder):
    """The prepared data with a third of its test rows left out: a data refresh, as a scheduled run sees one."""
    from kdflow.components.common.data import load_prepared, save_prepared

    data = load_prepared(str(prepared_data_dir))
    data.splits["test"] = data.splits["test"].select(range(32))
    save_prepared(str(folder), data.splits, data.tokenizer, data.info)
    return folder


def tiny_classifier(tokenizer_dir, folder):
    """A randomly initialised BERT classifier saved with its tokenizer, as a published pytorch/ folder holds it."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32, num_labels=2))
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(folder))
    return model


def test_a_champion_scored_on_other_test_rows_is_scored_again_on_this_runs(
        tmp_path, model_folders, destination, prepared_data_dir, tokenizer_dir):
    from transformers import AutoTokenizer

    from kdflow.components.common.data import load_prepared
    from kdflow.components.common.inference import evaluate_on_test

    champion = tiny_classifier(tokenizer_dir, tmp_path / "champion")
    publish((str(tmp_path / "champion"), model_folders[1]), destination, tmp_path, "v1", 0.99, prepared_data_dir)
    refreshed = other_test_rows(prepared_data_dir, tmp_path / "refreshed")
    decision = publish(model_folders, destination, tmp_path, "v2", 0.60, refreshed)

    on_these_rows = evaluate_on_test(champion, AutoTokenizer.from_pretrained(str(tokenizer_dir)),
                                     load_prepared(str(refreshed)))
    assert decision["test_rows"]["count"] == 32
    assert decision["champion"]["scored"].startswith("here, on this run's test rows (it recorded accuracy 0.9900")
    assert decision["champion"]["accuracy"] == on_these_rows["accuracy"] != 0.99
    assert decision["promoted"] == (0.60 >= on_these_rows["accuracy"])
    assert "The champion was scored here, on this run's test rows" in (tmp_path / "v2.md").read_text()


def test_a_champion_that_cannot_be_scored_on_this_runs_test_rows_is_not_replaced(
        tmp_path, model_folders, destination, prepared_data_dir):
    publish(model_folders, destination, tmp_path, "v1", 0.60, prepared_data_dir)  # its weights are random bytes
    decision = publish(model_folders, destination, tmp_path, "v2", 0.95, other_test_rows(prepared_data_dir,
                                                                                         tmp_path / "refreshed"))
    assert not decision["promoted"] and not decision["champion"]["comparable"]
    assert decision["champion"]["scored"].startswith("not comparable: it was scored on other test rows, and scoring "
                                                     "it on this run's failed (")
    assert latest(destination)["version"] == "v1"


def test_rerunning_the_same_version_is_safe(tmp_path, model_folders, destination, prepared_data_dir):
    publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)
    assert publish(model_folders, destination, tmp_path, "v1", 0.90, prepared_data_dir)["promoted"]
    assert latest(destination)["version"] == "v1"


@pytest.mark.parametrize("options, needle", [
    ({"publish_uri": ""}, "publish_uri is empty"),
    ({"model_name": "a/b"}, "model_name='a/b'"),
    ({"model_version": "", "run_id": ""}, "model_version=''"),
    ({"model_version": "v/1"}, "model_version='v/1'"),
    ({"model_version": "v1\n"}, r"model_version='v1\\n'"),  # a trailing newline, which a regex's $ lets through
    ({"promotion_tolerance": -0.1}, "promotion_tolerance=-0.1"),
])
def test_bad_publish_parameters_are_refused_before_any_upload(
        tmp_path, model_folders, destination, prepared_data_dir, options, needle):
    with pytest.raises(KdflowInputError, match=needle):
        publish(model_folders, destination, tmp_path, "v1", 0.9, prepared_data_dir, **options)
    assert storage.read_text(f"{destination}/sentiment/latest.json") is None


def test_a_missing_bucket_is_refused_before_any_upload(tmp_path, model_folders, destination, prepared_data_dir):
    missing = f"{destination.partition('://')[0]}://no-such-bucket-kdflow"
    with pytest.raises(KdflowInputError, match=f"^Bucket {missing} does not exist: create it or fix the URI"):
        publish(model_folders, destination, tmp_path, "v1", 0.9, prepared_data_dir, publish_uri=f"{missing}/models")


def test_without_a_model_version_the_run_id_names_the_version(tmp_path, model_folders, destination, prepared_data_dir):
    decision = publish(model_folders, destination, tmp_path, "", 0.9, prepared_data_dir, run_id="run-7")
    assert decision["version"] == "run-7" and latest(destination)["version"] == "run-7"


def test_settings_left_for_a_run_without_publishing_pass_their_checks():
    """The command line checks publish's settings before every run: no destination, and the run id not known."""
    Settings(publish_uri="", model_name="kdflow-student", model_version="", promotion_tolerance=0.0,
             run_id="{{$.pipeline_job_uuid}}")
