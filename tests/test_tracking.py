"""Experiment tracking: teacher_train and distill (student and baseline) log their parameters, losses and final
metrics through the Trainer's own MLflow and TensorBoard callbacks, under the pipeline run's name, and record where;
bad tracking settings stop a run with one sentence before any work."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from kdflow.components.common import storage, training
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import RunSummary
from kdflow.components.common.training import TRAINING_LOG, Tracking, tracked
from kdflow.components.distill import task as distill
from kdflow.components.report import task as report
from kdflow.components.teacher_eval import task as teacher_eval
from kdflow.components.teacher_train import task as teacher_train
from kdflow.pipelines.cli import main

RUN = "kdflow-distillation-2026-12-06-10-00-00-000001"  # as kfp.local names a pipeline run
EXPERIMENT = "kdflow-test"


@pytest.fixture(autouse=True)
def pipeline_run(monkeypatch):
    """The pipeline run's name, as the platform gives it to the training steps."""
    monkeypatch.setenv(training.RUN_NAME_ENV, RUN)


def tracking(report_to: str, tracking_uri: str) -> dict:
    return dict(report_to=report_to, tracking_uri=tracking_uri, experiment=EXPERIMENT)


def train_all(settings_for, root, data, **tracking_settings) -> dict:
    """A tiny teacher, its logits, and a student and its hard-label baseline distilled from them, as the pipeline
    runs them with compare_baseline set; returns each training's model folder."""
    teacher = str(root / "teacher")
    teacher_train.run(settings_for(teacher_train, teacher="config:tiny-bert", epochs=2.0, batch_size=16,
                                   learning_rate=1e-3, precision="fp32", **tracking_settings),
                      teacher_train.Files(data=str(data), teacher_model=teacher,
                                          training_curves=str(root / "teacher-curves.html")))
    logits = teacher_eval.Files(data=str(data), teacher_logits=str(root / "logits"),
                                teacher_metrics=str(root / "teacher.json"),
                                teacher_confusion=str(root / "confusion.json"))
    teacher_eval.run(settings_for(teacher_eval, teacher=teacher, cache_logits=True, precision="fp32"), logits)
    folders = {"teacher": teacher}
    for name, alpha in (("student", 0.5), ("baseline", 1.0)):
        folders[name] = str(root / name)
        distill.run(settings_for(distill, teacher=teacher, student_spec="from_teacher", processes=1, epochs=2.0,
                                 batch_size=16, learning_rate=1e-3, precision="fp32", alpha=alpha, tracked_as=name,
                                 **tracking_settings),
                    distill.Files(data=str(data), teacher_logits=logits.teacher_logits, student=folders[name],
                                  training_curves=f"{folders[name]}-curves.html"))
    return folders


def losses(model_dir: str, name: str) -> list[tuple[int, float]]:
    """(step, value) of a loss in the Trainer log a student keeps in its folder."""
    log = json.loads(Path(model_dir, TRAINING_LOG).read_text())
    return [(entry["step"], entry[name]) for entry in log if name in entry]


def assert_same_points(points: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """The same steps and, to float32's precision (TensorBoard keeps float32), the same values."""
    assert [step for step, _ in points] == [step for step, _ in expected]
    assert [value for _, value in points] == pytest.approx([value for _, value in expected], rel=1e-6)


@pytest.mark.slow
def test_every_training_logs_to_mlflow_under_the_pipeline_runs_name(tmp_path, prepared_data_dir, settings_for,
                                                                     monkeypatch):
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()  # file:///...
    folders = train_all(settings_for, tmp_path, prepared_data_dir, **tracking("mlflow", uri))

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as a reader of a file: store must (MLflow 3)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {run.data.tags["kdflow.step"]: run
            for run in client.search_runs([experiment.experiment_id], f"tags.`kdflow.pipeline_run` = '{RUN}'")}
    assert sorted(runs) == ["baseline", "student", "teacher"]
    for step, run in runs.items():
        assert run.info.run_name == f"{RUN}/{step}"
        assert run.info.status == "FINISHED"
        assert Tracking.read(folders[step]) == Tracking(
            report_to="mlflow", tracking_uri=uri, experiment=EXPERIMENT, run_name=RUN, step=step,
            experiment_id=experiment.experiment_id, run_id=run.info.run_id)
        # Parameters: the Trainer's arguments and the model's configuration.
        assert run.data.params["learning_rate"] == "0.001"
        assert run.data.params["num_train_epochs"] == "2.0"
        assert "num_hidden_layers" in run.data.params or "n_layers" in run.data.params
        # Losses at every logging step, and the final metrics.
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2
        assert {"eval_loss", "train_loss", "train_runtime"} <= set(run.data.metrics)
    assert runs["student"].data.params["alpha"] == "0.5"
    assert runs["baseline"].data.params["alpha"] == "1.0"
    for name in ("loss", "hard_loss", "soft_loss"):
        history = sorted(client.get_metric_history(runs["student"].info.run_id, name), key=lambda point: point.step)
        assert_same_points([(point.step, point.value) for point in history], losses(folders["student"], name))
    # The step's own evaluation after training went into the step's run, not into a stray one.
    assert len(client.search_runs([experiment.experiment_id])) == 3


@pytest.mark.slow
def test_every_training_writes_tensorboard_events_in_a_folder_of_its_own(tmp_path, prepared_data_dir,
                                                                         settings_for):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = tmp_path / "tensorboard"
    folders = train_all(settings_for, tmp_path, prepared_data_dir, **tracking("tensorboard", str(root)))

    for step, folder in folders.items():
        log_dir = root / EXPERIMENT / RUN / step
        assert Tracking.read(folder).log_dir == str(log_dir)
        events = EventAccumulator(str(log_dir))
        events.Reload()
        assert {"train/loss", "eval/loss", "train/train_runtime"} <= set(events.Tags()["scalars"])
        assert len(events.Scalars("train/loss")) >= 2
    events = EventAccumulator(str(root / EXPERIMENT / RUN / "student"))
    events.Reload()
    for name in ("loss", "hard_loss", "soft_loss"):
        scalars = [(event.step, event.value) for event in events.Scalars(f"train/{name}")]
        assert_same_points(scalars, losses(folders["student"], name))


@pytest.mark.slow
def test_under_torchrun_the_first_process_alone_logs(tmp_path, prepared_data_dir, settings_for, monkeypatch):
    from mlflow import MlflowClient

    teacher = str(tmp_path / "teacher")
    teacher_train.run(settings_for(teacher_train, teacher="config:tiny-bert", epochs=1.0, batch_size=16,
                                   learning_rate=1e-3, precision="fp32", **tracking("none", "")),
                      teacher_train.Files(data=str(prepared_data_dir), teacher_model=teacher,
                                          training_curves=str(tmp_path / "teacher-curves.html")))
    uri = (tmp_path / "mlruns").as_uri()
    student = str(tmp_path / "student")
    distill.run(settings_for(distill, teacher=teacher, student_spec="from_teacher", processes=2, epochs=1.0,
                             batch_size=16, learning_rate=1e-3, precision="fp32", distill_mode="online",
                             tracked_as="student", **tracking("mlflow", uri)),
                distill.Files(data=str(prepared_data_dir), teacher_logits="", student=student,
                              training_curves=f"{student}-curves.html"))

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert (run.info.run_name, run.info.status) == (f"{RUN}/student", "FINISHED")
    assert Tracking.read(student).run_id == run.info.run_id
    history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda point: point.step)
    assert_same_points([(point.step, point.value) for point in history], losses(student, "loss"))


def test_tensorboard_logs_for_object_storage_are_written_locally_and_uploaded(bucket_uri, settings_for):
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    settings = settings_for(teacher_train, teacher="config:tiny-bert",
                            **tracking("tensorboard", f"{bucket_uri}/tensorboard"))
    with tracked(settings, "teacher") as where:
        callback = TensorBoardCallback()  # as the Trainer makes it, reading TENSORBOARD_LOGGING_DIR
        assert not storage.is_remote(callback.logging_dir)
        with SummaryWriter(callback.logging_dir) as writer:
            writer.add_scalar("train/loss", 0.5, 1)
    assert where.log_dir == f"{bucket_uri}/tensorboard/{EXPERIMENT}/{RUN}/teacher"
    assert any(name.startswith("events.out.tfevents") for name in storage.list_files(where.log_dir))


def test_a_missing_tracking_library_stops_the_step_before_any_work(tmp_path, monkeypatch, settings_for):
    monkeypatch.setattr(training, "find_spec", lambda name: None)
    settings = settings_for(teacher_train, teacher="config:tiny-bert", **tracking("mlflow", "http://mlflow:5000"))
    files = teacher_train.Files(data=str(tmp_path / "no-data-here"), teacher_model=str(tmp_path / "teacher"),
                                training_curves=str(tmp_path / "curves.html"))
    with pytest.raises(KdflowInputError, match=r"^report_to=mlflow needs mlflow, .*the kdflow\[tracking\] extra"):
        teacher_train.run(settings, files)


@pytest.mark.parametrize("settings, sentence", [
    (["report_to=wandb"], "report_to='wandb' is not one of none, tensorboard, mlflow: pick one of them."),
    (["report_to=mlflow"], "report_to=mlflow needs tracking_uri: an MLflow tracking server (http(s)://HOST:PORT) "
                           "or a folder (file:PATH or a path)."),
    (["report_to=mlflow", "tracking_uri=sqlite:///runs.db"], "tracking_uri='sqlite:///runs.db' is not a location "
                                                            "report_to=mlflow logs to"),
    (["report_to=tensorboard", "tracking_uri=https://user:secret@tb.example.com"],
     "tracking_uri='https://user:***@tb.example.com' is not a location report_to=tensorboard logs to: give a log "
     "folder (a path, gs://BUCKET/PREFIX or s3://BUCKET/PREFIX)."),
    (["report_to=mlflow", "tracking_uri=http://mlflow:5000", "model_name="],
     "model_name='' cannot name the mlflow runs: give it a name."),
])
def test_bad_tracking_settings_stop_a_run_with_one_sentence(tmp_path, capsys, settings, sentence):
    command = ["run", "--preset", "smoke", "--output", str(tmp_path / "run")]
    assert main([*command, *(word for pair in settings for word in ("--set", pair))]) == 2
    error = capsys.readouterr().err
    assert sentence in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_summary_and_the_report_show_where_the_student_was_logged():
    from test_results import run_summary

    on_server = Tracking(report_to="mlflow", tracking_uri="https://mlflow.example.com/", experiment=EXPERIMENT,
                         run_name=RUN, step="student", experiment_id="7", run_id="abc123")
    summary = replace(run_summary(), tracking=on_server)
    assert RunSummary.from_json(summary.to_json()) == summary
    assert "tracking" not in run_summary().to_dict()
    page = report.tracking_html(on_server)
    assert "href='https://mlflow.example.com/#/experiments/7/runs/abc123'" in page
    assert f"kdflow.pipeline_run={RUN}" in page
    in_folder = Tracking(report_to="tensorboard", tracking_uri="gs://logs/tb", experiment=EXPERIMENT, run_name=RUN,
                         step="student", log_dir=f"gs://logs/tb/{EXPERIMENT}/{RUN}/student")
    assert "--logdir gs://logs/tb" in report.tracking_html(in_folder)
    assert report.tracking_html(None) == ""
