"""`kdflow submit` and `kdflow schedule`: the real kfp.Client against a stand-in for the Kubeflow Pipelines API
server (tests/kfp_api_standin.py; the real server cannot run here). The tests assert what a cluster would
receive: the uploaded YAML, the run's parameters, pipeline root and service account, the recurring run's
cron and limits, and the credentials on every request; and that refusals, a failed TLS check and bad options come
back at once as one sentence."""

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kfp
import pytest
import yaml
from kfp_api_standin import KfpApiStandIn

from kdflow.components.common.errors import KdflowInputError
from kdflow.pipelines import cluster, presets
from kdflow.pipelines.cli import main
from kdflow.pipelines.cluster import check_cron

COMMITTED_YAML = Path(__file__).parents[1] / "pipelines" / "distillation.yaml"
TEACHER = "gs://team-bucket/teachers/bert-imdb"


@pytest.fixture()
def kfp_environment(monkeypatch, tmp_path):
    # Nothing of this machine's kfp login or environment may leak into what the client sends.
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-pod-token"))
    for name in ("KDFLOW_KFP_TOKEN", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def kfp_api(kfp_environment):
    server = KfpApiStandIn().start()
    yield server
    server.stop()


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("kdflow: error:")]


def submit(kfp_api, *arguments) -> int:
    return main(["submit", "--host", kfp_api.url, "--param", f"teacher={TEACHER}", *arguments])


def schedule(kfp_api, *arguments) -> int:
    return main(["schedule", "--host", kfp_api.url, "--param", f"teacher={TEACHER}",
                 "--param", "publish_uri=gs://team-bucket/models", *arguments])


def test_submit_uploads_the_committed_pipeline_and_runs_it_as_asked(kfp_api, capsys):
    assert submit(kfp_api, "--namespace", "team-ml", "--experiment", "distillation", "--pipeline-root",
                  "gs://team-bucket/pipeline-root", "--service-account", "kdflow-pipeline-runner",
                  "--token", "user-token", "--param", "epochs=3") == 0

    [upload] = kfp_api.calls("POST", "/pipelines/upload")
    assert upload.uploaded_file() == COMMITTED_YAML.read_bytes()
    assert upload.query["name"] == "kdflow-distillation" and upload.query["namespace"] == "team-ml"
    [experiment] = kfp_api.experiments.values()
    assert (experiment["display_name"], experiment["namespace"]) == ("distillation", "team-ml")

    [run] = kfp_api.runs.values()
    [version] = kfp_api.versions.values()
    assert run["pipeline_version_reference"] == {"pipeline_id": version["pipeline_id"],
                                                 "pipeline_version_id": version["pipeline_version_id"]}
    assert run["experiment_id"] == experiment["experiment_id"]
    assert run["runtime_config"]["pipeline_root"] == "gs://team-bucket/pipeline-root"
    assert run["runtime_config"]["parameters"] == presets.resolve("imdb", {"teacher": TEACHER, "epochs": "3"})
    assert run["runtime_config"]["parameters"]["epochs"] == 3.0
    assert run["service_account"] == "kdflow-pipeline-runner"
    assert {request.headers.get("Authorization") for request in kfp_api.requests} == {"Bearer user-token"}

    printed = capsys.readouterr()
    assert f"run id: {run['run_id']}" in printed.out
    assert f"{kfp_api.url}/#/runs/details/{run['run_id']}" in printed.out
    # The committed pipeline names images of this machine: a cluster could not pull them, and the user is told.
    assert "warning:" in printed.err and "localhost/kdflow-cpu" in printed.err


def test_a_pipeline_compiled_for_a_registry_is_uploaded_as_it_is_without_a_warning(kfp_api, tmp_path, capsys):
    package = tmp_path / "distillation.yaml"
    package.write_bytes(COMMITTED_YAML.read_bytes().replace(b"localhost/", b"europe-docker.pkg.dev/team/kdflow/"))
    assert submit(kfp_api, "--package", str(package)) == 0
    [upload] = kfp_api.calls("POST", "/pipelines/upload")
    assert upload.uploaded_file() == package.read_bytes()
    assert "warning" not in capsys.readouterr().err


def uploaded_placement(kfp_api) -> dict:
    """The kfp-kubernetes settings of each executor of the one package uploaded."""
    [upload] = kfp_api.calls("POST", "/pipelines/upload")
    _, platform = yaml.safe_load_all(upload.uploaded_file())
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_submit_with_scheduling_options_uploads_a_pipeline_compiled_for_them(kfp_api):
    assert submit(kfp_api, "--gpu-type", "nvidia-tesla-a100", "--gpu-toleration", "nvidia.com/gpu=present:NoSchedule",
                  "--cpu-node-selector", "cloud.google.com/gke-nodepool=cpu-pool") == 0
    placement = uploaded_placement(kfp_api)
    assert placement["exec-distill"] == {
        "nodeSelector": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
        "fieldPathAsEnv": [{"fieldPath": "metadata.labels['workflows.argoproj.io/workflow']",
                            "name": "KDFLOW_RUN_NAME"}]}
    assert placement["exec-data-prep"] == {"nodeSelector": {"labels": {"cloud.google.com/gke-nodepool": "cpu-pool"}}}
    assert len(kfp_api.runs) == 1


def test_schedule_with_scheduling_options_uploads_a_pipeline_compiled_for_them(kfp_api):
    assert schedule(kfp_api, "--cron", "0 0 3 * * 0", "--gpu-step-requests", "cpu=8,memory=48Gi") == 0
    [upload] = kfp_api.calls("POST", "/pipelines/upload")
    executors = next(yaml.safe_load_all(upload.uploaded_file()))["deploymentSpec"]["executors"]
    assert executors["exec-distill"]["container"]["resources"]["resourceMemoryRequest"] == "48Gi"
    assert "resourceMemoryRequest" not in executors["exec-data-prep"]["container"].get("resources", {})
    assert len(kfp_api.recurring_runs) == 1


def test_a_package_and_scheduling_options_are_refused_together(kfp_api, capsys):
    assert submit(kfp_api, "--package", str(COMMITTED_YAML), "--gpu-type", "nvidia-l4") == 2
    [error] = error_lines(capsys)
    assert f"--package {COMMITTED_YAML} is compiled already" in error
    assert kfp_api.requests == []


def test_a_second_submit_adds_a_version_to_the_same_pipeline_and_experiment(kfp_api):
    assert submit(kfp_api) == 0
    assert submit(kfp_api, "--preset", "smoke") == 0

    [first_upload] = kfp_api.calls("POST", "/pipelines/upload")
    [version_upload] = kfp_api.calls("POST", "/pipelines/upload_version")
    [pipeline_id] = kfp_api.pipelines
    assert version_upload.query["pipelineid"] == pipeline_id
    assert version_upload.uploaded_file() == first_upload.uploaded_file() == COMMITTED_YAML.read_bytes()
    assert len(kfp_api.experiments) == 1
    assert version_upload.query["name"].startswith("kdflow-distillation-0.1.0-")
    first_run, second_run = kfp_api.runs.values()
    first_version, second_version = kfp_api.versions  # in the order they were made
    assert first_run["pipeline_version_reference"]["pipeline_version_id"] == first_version
    assert second_run["pipeline_version_reference"]["pipeline_version_id"] == second_version
    assert second_run["runtime_config"]["parameters"]["source"] == "synthetic"
    # No pipeline root given: the namespace's kfp-launcher ConfigMap decides.
    assert second_run["runtime_config"].get("pipeline_root") is None


def test_no_cache_gives_the_run_a_data_version_of_its_own(kfp_api, capsys):
    assert submit(kfp_api) == 0
    assert submit(kfp_api, "--no-cache") == 0
    cached, fresh = (run["runtime_config"]["parameters"]["data_version"] for run in kfp_api.runs.values())
    assert cached == ""
    assert len(fresh) == 14 and fresh.isdigit()  # the submit time, as KFP writes [[ScheduledTime]]

    requests_before = len(kfp_api.requests)
    assert submit(kfp_api, "--no-cache", "--param", "data_version=2026-11") == 2
    assert "--no-cache sets data_version" in capsys.readouterr().err
    assert len(kfp_api.requests) == requests_before


def test_a_refused_token_is_one_sentence_and_the_environment_token_is_sent(kfp_api, capsys, monkeypatch):
    kfp_api.token = "right-token"
    assert submit(kfp_api, "--token", "wrong-token") == 2
    [error] = error_lines(capsys)
    assert "HTTP 401" in error and "--token" in error
    assert not kfp_api.runs

    monkeypatch.setenv("KDFLOW_KFP_TOKEN", "right-token")
    assert submit(kfp_api) == 0
    assert len(kfp_api.runs) == 1


def test_a_session_cookie_is_sent_with_every_request(kfp_api):
    assert submit(kfp_api, "--cookies", "authservice_session=abc123") == 0
    assert {request.headers.get("Cookie") for request in kfp_api.requests} == {"authservice_session=abc123"}
    assert all("Authorization" not in request.headers for request in kfp_api.requests)


def test_in_a_pod_the_projected_service_account_token_is_sent(kfp_api, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("projected-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token_file))
    assert submit(kfp_api) == 0
    assert {request.headers.get("Authorization") for request in kfp_api.requests} == {"Bearer projected-token"}


def test_an_unreachable_host_is_one_sentence(kfp_api, capsys):
    kfp_api.stop()
    assert submit(kfp_api) == 2
    [error] = error_lines(capsys)
    assert "cannot be reached" in error and "--host" in error


@pytest.mark.parametrize("status", [401, 403])
def test_a_gateway_refusing_the_credentials_is_one_sentence_at_once(kfp_api, capsys, caplog, status):
    # Refused before the API, healthz included: kfp.Client's own healthz check asked five times, 5 s apart, logged a
    # traceback each time and ended in a TimeoutError that blamed --host (25 s).
    kfp_api.refusal = status
    started = time.monotonic()
    assert submit(kfp_api, "--token", "expired-token") == 2
    assert time.monotonic() - started < 5
    stderr = capsys.readouterr().err
    [error] = [line for line in stderr.splitlines() if line.startswith("kdflow: error:")]
    assert f"answered HTTP {status}" in error and "check --token (or KDFLOW_KFP_TOKEN) or --cookies" in error
    assert len(kfp_api.requests) == 1
    assert "Traceback" not in stderr and "Traceback" not in caplog.text


def test_a_self_signed_api_is_a_tls_problem_that_its_ca_bundle_solves(kfp_environment, private_ca, capsys):
    server = KfpApiStandIn(certificate=private_ca).start()
    try:
        assert submit(server) == 2
        [error] = error_lines(capsys)
        assert "failed the TLS certificate check (self-signed certificate)" in error and "--ca-bundle" in error
        assert server.requests == []

        trusting = cluster.Cluster(host=server.url, ca_bundle=private_ca[0])
        run_id = cluster.submit(trusting, str(COMMITTED_YAML), presets.resolve("imdb", {"teacher": TEACHER}), "tls")
        assert list(server.runs) == [run_id]
    finally:
        server.stop()


@pytest.mark.parametrize("arguments, needle", [
    (["--host", "kfp.example.com"], "--host 'kfp.example.com' is not an http(s) URL"),
    (["--host", "ftp://kfp.example.com"], "--host 'ftp://kfp.example.com' is not an http(s) URL"),
    (["--host", "https://kfp.example.com:https"], "is not an http(s) URL"),
    (["--host", "https://user:s3cret@kfp.example.com"], "--host https://user:***@kfp.example.com holds credentials"),
    (["--host", "https://user:s3cr/t@kfp.example.com"], "--host 'https://user:***@kfp.example.com' is not an http"),
    (["--namespace", "Team_ML"], "--namespace 'Team_ML' is not a valid Kubernetes name"),
    (["--namespace", "team.ml"], "--namespace 'team.ml' is not a valid Kubernetes name"),
    (["--namespace", "t" * 64], "at most 63"),
    (["--service-account", "kdflow runner"], "--service-account 'kdflow runner' is not a valid Kubernetes name"),
    (["--service-account", "runner-"], "--service-account 'runner-' is not a valid"),
    (["--experiment", " "], "--experiment ' ' is empty or holds control characters"),
    (["--pipeline-name", "kdflow\ndistillation"], "--pipeline-name 'kdflow\\ndistillation' is empty or holds"),
    (["--run-name", "nightly\t2"], "--run-name 'nightly\\t2' is empty or holds control characters"),
    (["--pipeline-root", "runs/root"], "--pipeline-root runs/root is not an object-store URI"),
])
def test_submit_refuses_bad_options_before_calling_the_cluster(kfp_api, capsys, arguments, needle):
    assert submit(kfp_api, *arguments) == 2
    stderr = capsys.readouterr().err
    [error] = [line for line in stderr.splitlines() if line.startswith("kdflow: error:")]
    assert needle in error
    assert "s3cr" not in stderr
    assert kfp_api.requests == []


def test_names_kubernetes_takes_pass():
    cluster.Cluster(host="https://kfp.example.com:8443/pipeline", namespace="t" * 63,
                    service_account="kdflow-pipeline-runner.team-1", experiment="Distillation runs (IMDb)")


def test_a_missing_ca_bundle_is_refused():
    with pytest.raises(KdflowInputError, match="--ca-bundle no-such.pem is not a file"):
        cluster.Cluster(ca_bundle="no-such.pem")


def test_schedule_creates_a_recurring_run_on_fresh_data_one_at_a_time(kfp_api, capsys):
    assert schedule(kfp_api, "--cron", "0 0 3 * * 0", "--namespace", "team-ml", "--pipeline-root",
                    "gs://team-bucket/pipeline-root", "--service-account", "kdflow-pipeline-runner",
                    "--token", "user-token") == 0

    [upload] = kfp_api.calls("POST", "/pipelines/upload")
    assert upload.uploaded_file() == COMMITTED_YAML.read_bytes()
    [recurring] = kfp_api.recurring_runs.values()
    [version] = kfp_api.versions.values()
    assert recurring["display_name"] == "kdflow-retraining"
    assert recurring["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert int(recurring["max_concurrency"]) == 1
    assert recurring["no_catchup"] is True
    assert recurring["mode"] == "ENABLE"
    assert recurring["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    parameters = recurring["runtime_config"]["parameters"]
    assert parameters["data_version"] == "[[ScheduledTime]]"
    assert parameters["publish_uri"] == "gs://team-bucket/models"
    assert parameters["min_retention"] == presets.pipeline_parameters()["min_retention"]
    assert recurring["runtime_config"]["pipeline_root"] == "gs://team-bucket/pipeline-root"
    assert recurring["service_account"] == "kdflow-pipeline-runner"
    assert {request.headers.get("Authorization") for request in kfp_api.requests} == {"Bearer user-token"}
    created = capsys.readouterr().out
    assert "created recurring run kdflow-retraining" in created
    # Sundays at 03:00 UTC, three weeks in a row.
    [first, second, third] = [datetime.strptime(time, "%a %Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
                              for time in created.split("next runs (UTC): ")[1].strip().split(", ")]
    assert first.weekday() == 6 and (first.hour, first.minute) == (3, 0) and datetime.now(timezone.utc) < first
    assert second - first == third - second == timedelta(days=7)


def test_next_runs_follow_kfp_and_argo_crons():
    after = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)  # a Sunday
    weekdays_at_4_30 = [datetime(2026, 12, day, 4, 30, tzinfo=timezone.utc) for day in (7, 8, 9)]
    assert cluster.next_runs("0 30 4 * * 1-5", after) == weekdays_at_4_30  # KFP: seconds first
    assert cluster.next_runs("30 4 * * 1-5", after) == weekdays_at_4_30  # Argo: five fields
    assert cluster.next_runs("*/20 * * * * *", after, count=2) == [after + timedelta(seconds=20),
                                                                   after + timedelta(seconds=40)]


def test_schedule_replaces_by_name_lists_and_deletes(kfp_api, capsys):
    assert schedule(kfp_api, "--cron", "0 0 3 * * 0") == 0
    [first_id] = kfp_api.recurring_runs
    assert schedule(kfp_api, "--cron", "0 30 4 * * 1-5") == 0
    [(second_id, second)] = kfp_api.recurring_runs.items()
    assert second_id != first_id and second["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * 1-5"
    assert [request.path for request in kfp_api.requests if request.method == "DELETE"] == \
        [f"/apis/v2beta1/recurringruns/{first_id}"]
    assert schedule(kfp_api, "--cron", "0 0 1 * * *", "--name", "nightly") == 0
    capsys.readouterr()

    assert main(["schedule", "--host", kfp_api.url, "--list"]) == 0
    listed = capsys.readouterr().out
    assert f"kdflow-retraining\t0 30 4 * * 1-5\tENABLE\t{second_id}\tnext runs (UTC): " in listed
    assert "nightly\t0 0 1 * * *" in listed

    assert main(["schedule", "--host", kfp_api.url, "--delete", "kdflow-retraining"]) == 0
    assert [recurring["display_name"] for recurring in kfp_api.recurring_runs.values()] == ["nightly"]
    assert main(["schedule", "--host", kfp_api.url, "--delete", "kdflow-retraining"]) == 2
    assert "--list" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, needle", [
    (["--cron", "0 3 * * 0"], "write --cron '0 0 3 * * 0'"),
    (["--cron", "0 0 3 * * 0", "--param", "data_version=v1"], "each run sets it to its scheduled time"),
    (["--cron", "0 0 3 * * 0", "--param", "publish_uri="], "--param publish_uri=gs://"),
    (["--cron", "0 0 3 * * 0", "--pipeline-root", "runs/root"], "--pipeline-root runs/root"),
    (["--cron", "0 0 3 * * 0", "--name", ""], "--name '' is empty"),
    (["--list", "--namespace", "Team"], "--namespace 'Team' is not a valid Kubernetes name"),
    (["--delete", "nightly", "--service-account", "Runner"], "--service-account 'Runner' is not a valid"),
])
def test_schedule_refuses_bad_input_before_calling_the_cluster(kfp_api, capsys, arguments, needle):
    assert schedule(kfp_api, *arguments) == 2
    [error] = error_lines(capsys)
    assert needle in error
    assert kfp_api.requests == []


@pytest.mark.parametrize("cron", [
    "0 0 3 * * 0", "*/30 * * * * *", "0 15 10 ? * MON-FRI", "0 0 0 1 jan,jul *", "0 0 9-17/2 * * 1-5",
    "  0 0 3 * * sun ",
])
def test_six_field_crons_pass(cron):
    assert check_cron(cron) == " ".join(cron.split())


@pytest.mark.parametrize("cron, needle", [
    ("0 3 * * 0", "has five fields"),
    ("", "give six fields"),
    ("every sunday", "give six fields"),
    ("@weekly", "give six fields"),
    ("0 0 3 * * 0 2027", "give six fields"),
    ("0 0 25 * * *", "'25' is not a valid hour"),
    ("0 0 3 * * 7", "'7' is not a valid day of week"),
    ("0 0 3 * 13 *", "'13' is not a valid month"),
    ("0 0 3 * * */0", "'*/0' is not a valid day of week"),
    ("0 0 5-3 * * *", "'5-3' is not a valid hour"),
    ("a b c d e f", "'a' is not a valid second"),
])
def test_other_crons_are_refused_with_the_fix(cron, needle):
    with pytest.raises(KdflowInputError, match="--cron") as refused:
        check_cron(cron)
    assert needle in str(refused.value)
