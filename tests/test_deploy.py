"""The deploy step: the real kubernetes client against a stand-in for the Kubernetes API server
(tests/kubernetes_api_standin.py; a real one cannot run here), reached through a kubeconfig the tests write or, as in
a pod, through a service account's token, CA and namespace. The tests assert what a cluster would receive (a resource
KServe's schema accepts, created, updated under the resourceVersion read, or left alone), that bad settings and
refusals come back as one sentence, and that the pipeline deploys only when asked, after a promoted publish."""

import json
import re
import socket
from pathlib import Path

import kfp.local
import pytest
import yaml
from google.protobuf import json_format
from kubernetes_api_standin import VERBS, KubernetesApiStandIn

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import image_name
from kdflow.components.deploy import task
from kdflow.components.deploy.settings import Files
from kdflow.pipelines import presets
from kdflow.pipelines.cli import build_parser, main, serve_command
from kdflow.pipelines.distillation import build_pipeline, distillation_pipeline
from kdflow.pipelines.platform import Platform

REPOSITORY = Path(__file__).parents[1]
PUBLISH_URI = "gs://team-bucket/models"
MODEL_URI = f"{PUBLISH_URI}/kdflow-student"  # the pipeline's default model_name
NAMESPACE = "kdflow-dev"  # the kubeconfig context's
COLLECTION = f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices"
SERVICE = f"{COLLECTION}/kdflow-student"


def write_kubeconfig(path: Path, server: str, token: str, namespace: str = NAMESPACE) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "standin",
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "runner", "user": {"token": token}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "runner", "namespace": namespace}}],
    }))
    return path


@pytest.fixture()
def no_cluster(monkeypatch, tmp_path):
    """No Kubernetes API configured: no KUBECONFIG, not in a pod, no ~/.kube/config."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture()
def kubernetes_api(no_cluster, monkeypatch, tmp_path):
    """The stand-in, and a kubeconfig naming it (with its token and the context namespace NAMESPACE) in KUBECONFIG."""
    api = KubernetesApiStandIn().start()
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", api.url, api.token)))
    yield api
    api.stop()


@pytest.fixture()
def deploy(settings_for, tmp_path):
    """Runs the step with the pipeline's defaults and PUBLISH_URI, `values` changed; returns its result and record."""
    def run(**values):
        files = Files(deployment=str(tmp_path / "deploy" / "deployment.json"))
        result = task.run(settings_for(task, **{"publish_uri": PUBLISH_URI, **values}), files)
        return result, json.loads(Path(files.deployment).read_text())
    return run


def test_the_first_deploy_creates_the_inference_service_serving_the_models_folder(kubernetes_api, deploy,
                                                                                  kserve_schema_errors):
    result, record = deploy(serving_image="registry.example.com/team/kdflow-cpu:0.1.0")
    assert (result.action, result.namespace, result.name) == ("created", NAMESPACE, "kdflow-student")
    assert [(request.method, request.path) for request in kubernetes_api.requests] == [
        ("GET", SERVICE), ("POST", COLLECTION)]
    for request in kubernetes_api.requests:  # the kubeconfig's token on every request
        assert request.headers["Authorization"] == f"Bearer {kubernetes_api.token}"
    created = kubernetes_api.requests[1]
    # The API server checks the resource against the CRD's schema strictly: an unknown field is refused, not dropped.
    assert created.query == {"fieldManager": "kdflow", "fieldValidation": "Strict"}
    sent = created.json()
    assert kserve_schema_errors(sent) == []
    assert sent["metadata"]["name"] == "kdflow-student" and sent["metadata"]["namespace"] == NAMESPACE
    [container] = sent["spec"]["predictor"]["containers"]
    assert container["image"] == "registry.example.com/team/kdflow-cpu:0.1.0"
    served = build_parser().parse_args(container["args"])
    assert served.command is serve_command
    assert served.model == MODEL_URI  # the model's folder, so the server follows latest.json
    assert served.http_port == container["ports"][0]["containerPort"] == 8080
    assert sent["spec"]["predictor"]["serviceAccountName"] == "kdflow-serving"
    stored = kubernetes_api.stored(NAMESPACE, "kdflow-student")
    assert record == {"action": "created", "namespace": NAMESPACE, "name": "kdflow-student",
                      "resource_version": stored["metadata"]["resourceVersion"], "inference_service": sent}


def test_a_changed_setting_replaces_the_spec_under_the_resource_version_read(kubernetes_api, deploy,
                                                                             kserve_schema_errors):
    deploy()
    stored = kubernetes_api.stored(NAMESPACE, "kdflow-student")
    # What others put there stays: a label (kubectl apply -k manifests/serving), the controller's status.
    stored["metadata"]["labels"] = {"app.kubernetes.io/part-of": "kdflow"}
    stored["status"] = {"url": "http://kdflow-student.kdflow-dev.example.com"}
    read_version = stored["metadata"]["resourceVersion"]
    result, record = deploy(serving_image="registry.example.com/team/kdflow-cpu:0.2.0", deploy_namespace=NAMESPACE)
    assert result.action == record["action"] == "updated"
    [replaced] = [request for request in kubernetes_api.requests if request.method == "PUT"]
    assert replaced.path == SERVICE and replaced.query == {"fieldManager": "kdflow", "fieldValidation": "Strict"}
    sent = replaced.json()
    assert sent["metadata"]["resourceVersion"] == read_version
    assert sent["metadata"]["labels"] == {"app.kubernetes.io/part-of": "kdflow"}
    assert "status" not in sent and kserve_schema_errors(sent) == []
    now = kubernetes_api.stored(NAMESPACE, "kdflow-student")
    assert now["spec"]["predictor"]["containers"][0]["image"] == "registry.example.com/team/kdflow-cpu:0.2.0"
    assert now["metadata"]["generation"] == 2 and now["metadata"]["resourceVersion"] != read_version
    assert now["status"] == stored["status"]
    assert record["resource_version"] == now["metadata"]["resourceVersion"]


def test_the_same_settings_leave_it_unchanged_whatever_defaults_the_cluster_added(kubernetes_api, deploy):
    deploy()
    stored = kubernetes_api.stored(NAMESPACE, "kdflow-student")
    # Defaults the API server and KServe's webhook fill in are not a difference.
    stored["spec"]["predictor"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    stored["spec"]["predictor"]["timeout"] = 60
    result, record = deploy()
    assert (result.action, result.namespace, result.name) == ("unchanged", NAMESPACE, "kdflow-student")
    assert record["resource_version"] == stored["metadata"]["resourceVersion"]
    assert [request.method for request in kubernetes_api.requests] == ["GET", "POST", "GET"]  # no second write


def test_a_resource_changed_between_read_and_write_is_read_again(kubernetes_api, deploy):
    deploy()
    kubernetes_api.changed_by_others = 1  # the controller writes the status between the step's read and its write
    result, _ = deploy(serving_service_account="kdflow-serving-2")
    assert result.action == "updated"
    assert [request.method for request in kubernetes_api.requests] == ["GET", "POST", "GET", "PUT", "GET", "PUT"]
    first, second = [request.json()["metadata"]["resourceVersion"] for request in kubernetes_api.writes()[1:]]
    assert first != second
    assert kubernetes_api.stored(NAMESPACE, "kdflow-student")["spec"]["predictor"]["serviceAccountName"] == \
        "kdflow-serving-2"


def test_the_role_grants_exactly_the_verbs_the_step_uses(kubernetes_api, deploy):
    deploy()  # created
    deploy()  # unchanged
    kubernetes_api.changed_by_others = 1
    deploy(serving_image="registry.example.com/team/kdflow-cpu:0.2.0")  # updated, once again after a conflict
    used = {VERBS[request.method] for request in kubernetes_api.requests}
    role = next(document for document in yaml.safe_load_all(
        (REPOSITORY / "manifests" / "base" / "pipeline-runner-rbac.yaml").read_text()) if document["kind"] == "Role")
    [rule] = [rule for rule in role["rules"] if rule["apiGroups"] == ["serving.kserve.io"]]
    assert used == set(rule["verbs"]) == {"get", "create", "update"}


@pytest.mark.parametrize("values, sentence", [
    ({"model_name": "Imdb_Sentiment"}, "model_name='Imdb_Sentiment' cannot name an InferenceService"),
    ({"model_name": "7-sentiment"}, "model_name='7-sentiment' cannot name an InferenceService"),
    ({"model_name": "m" * 54}, f"model_name='{'m' * 54}' cannot name an InferenceService: use at most 53"),
    ({"serving_image": ""}, "serving_image='' is not an image reference"),
    ({"serving_image": "Registry/Kdflow-CPU"}, "serving_image='Registry/Kdflow-CPU' is not an image reference"),
    ({"publish_uri": "/tmp/published"}, "publish_uri='/tmp/published' is no gs:// or s3:// location"),
    ({"deploy_namespace": "Team_A"}, "deploy_namespace='Team_A' is not a Kubernetes namespace"),
    ({"serving_service_account": "kdflow serving"}, "serving_service_account='kdflow serving' is not a Kubernetes"),
])
def test_bad_settings_are_refused_in_one_sentence_before_any_api_call(kubernetes_api, deploy, values, sentence):
    with pytest.raises(KdflowInputError, match="^" + re.escape(sentence)) as refused:
        deploy(**values)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".")
    assert kubernetes_api.requests == []


def test_an_rbac_refusal_names_the_service_account_and_the_role(kubernetes_api, deploy):
    kubernetes_api.forbidden = {"create"}
    with pytest.raises(KdflowInputError) as refused:
        deploy()
    sentence = str(refused.value)
    assert sentence.startswith(f"The Kubernetes API at {kubernetes_api.url} refused to create InferenceService "
                               f"{NAMESPACE}/kdflow-student with the credentials of kubeconfig ")
    assert "403 Forbidden" in sentence and f'User "{kubernetes_api.user}" cannot create' in sentence
    assert sentence.endswith(f"grant them get, create and update on inferenceservices.serving.kserve.io in namespace "
                             f"{NAMESPACE} (for the runs' service account, the Role in "
                             "manifests/base/pipeline-runner-rbac.yaml), or set deploy=false.")
    assert kubernetes_api.objects == {}


def test_a_token_the_api_does_not_accept_is_refused_in_one_sentence(kubernetes_api, deploy, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "stale", kubernetes_api.url, "expired")))
    with pytest.raises(KdflowInputError, match=r"refused to get InferenceService kdflow-dev/kdflow-student with the "
                                               r"credentials of kubeconfig .*stale \(context standin\) \(401 "):
        deploy()


def test_a_cluster_without_kserve_is_told_to_install_it(kubernetes_api, deploy):
    kubernetes_api.kserve_installed = False
    with pytest.raises(KdflowInputError, match=r"has no serving.kserve.io/v1beta1 InferenceService API \(404 Not "
                                               r"Found: 404 page not found\): install KServe in the cluster, or set "
                                               r"deploy=false\.$"):
        deploy()


def test_a_namespace_that_does_not_exist_is_named(kubernetes_api, deploy):
    kubernetes_api.namespaces = {NAMESPACE}
    with pytest.raises(KdflowInputError, match=r"could not create InferenceService kdflow-prod/kdflow-student "
                                               r"\(404 Not Found: namespaces \"kdflow-prod\" not found\): set "
                                               r"deploy_namespace to an existing namespace"):
        deploy(deploy_namespace="kdflow-prod")


def test_without_an_api_the_step_says_to_give_kubeconfig_or_turn_deploy_off(no_cluster, deploy, tmp_path,
                                                                             monkeypatch):
    with pytest.raises(KdflowInputError, match="^deploy=true needs the Kubernetes API, and none is configured here"):
        deploy()
    # One configured but not answering: its address, at once.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"  # nobody listens there once the socket is closed
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", url, "token")))
    with pytest.raises(KdflowInputError, match=f"^deploy=true found no Kubernetes API answering at {url}, "
                                               r"taken from kubeconfig .*: give KUBECONFIG of a reachable cluster, or "
                                               r"set deploy=false\.$"):
        deploy()


def test_in_a_pod_the_service_accounts_token_ca_and_namespace_are_used(no_cluster, deploy, private_ca, monkeypatch,
                                                                       tmp_path):
    """On a cluster: the API's address from the pod's environment, over TLS checked with the mounted CA, the token
    of the pod's service account, and the pod's namespace."""
    api = KubernetesApiStandIn(token="projected-token", certificate=private_ca).start()
    try:
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("projected-token")
        (account / "ca.crt").write_text(Path(private_ca[0]).read_text())
        (account / "namespace").write_text("kdflow-prod")
        monkeypatch.setattr(task, "SERVICE_ACCOUNT", account)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        result, _ = deploy()
        assert (result.action, result.namespace) == ("created", "kdflow-prod")
        assert {request.headers["Authorization"] for request in api.requests} == {"bearer projected-token"}
        assert api.stored("kdflow-prod", "kdflow-student") is not None
    finally:
        api.stop()


def test_the_component_runs_the_step_under_kfp_local(kubernetes_api, tmp_path):
    """component.py's body: KFP's arguments to the task's settings and files, its result to KFP's outputs."""
    from kdflow.components.deploy.component import deploy

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    deployed = deploy(publish_uri=PUBLISH_URI, model_name="imdb-sentiment", deploy_namespace="",
                      serving_image="registry.example.com/team/kdflow-cpu:0.1.0",
                      serving_service_account="kdflow-serving")
    assert (deployed.outputs["action"], deployed.outputs["namespace"], deployed.outputs["name"]) == (
        "created", NAMESPACE, "imdb-sentiment")
    assert json.loads(Path(deployed.outputs["deployment"].path).read_text())["action"] == "created"
    assert kubernetes_api.stored(NAMESPACE, "imdb-sentiment") is not None


# -- in the pipeline ----------------------------------------------------------------------------------------------

def task_in_groups(spec: dict, step: str):
    """The task that runs `step`, and the groups around it (outermost first) as (group task, its condition)."""
    def walk(component: dict, groups: list):
        for task_spec in component["dag"]["tasks"].values():
            inner = spec["components"][task_spec["componentRef"]["name"]]
            if "dag" in inner:
                condition = task_spec.get("triggerPolicy", {}).get("condition")
                yield from walk(inner, groups + [(task_spec, condition)])
            else:
                arguments = spec["deploymentSpec"]["executors"][inner["executorLabel"]]["container"]["args"]
                if arguments[arguments.index("--function_to_execute") + 1] == step:
                    yield task_spec, groups

    [found] = walk(spec["root"], [])
    return found


def test_the_pipeline_deploys_only_when_asked_after_a_promoted_publish():
    spec = json_format.MessageToDict(distillation_pipeline.pipeline_spec)
    deploy_task, groups = task_in_groups(spec, "deploy")
    _, publish_groups = task_in_groups(spec, "publish")
    channel = "inputs.parameter_values['pipelinechannel--{}'] == true"
    # Inside publish's groups (publish_uri set, gate passed), the parameter's condition, then publish's output.
    assert [condition for _, condition in groups] == [condition for _, condition in publish_groups] + [
        channel.format("deploy"), channel.format("publish-promoted")]
    asked, promoted = groups[-2][0], groups[-1][0]
    assert asked["inputs"]["parameters"]["pipelinechannel--publish-promoted"] == {
        "taskOutputParameter": {"producerTask": "publish", "outputParameterKey": "promoted"}}
    assert promoted["inputs"]["parameters"]["pipelinechannel--deploy"] == {
        "componentInputParameter": "pipelinechannel--deploy"}
    # Its settings are the pipeline's parameters of the same names, as published by publish.
    for name in ("publish_uri", "model_name", "deploy_namespace", "serving_image", "serving_service_account"):
        assert deploy_task["inputs"]["parameters"][name] == {"componentInputParameter": f"pipelinechannel--{name}"}
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["deploy"] == {"parameterType": "BOOLEAN", "defaultValue": False, "isOptional": True}
    assert parameters["serving_image"]["defaultValue"].rsplit(":", 1)[0].endswith("/kdflow-cpu")


def test_the_serving_image_defaults_to_the_cpu_steps_image_of_the_registry_compiled_for():
    pipeline = build_pipeline(Platform(image_registry="registry.example.com/team"))
    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    default = spec["root"]["inputDefinitions"]["parameters"]["serving_image"]["defaultValue"]
    assert default == image_name("cpu", "registry.example.com/team")
    assert default in {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}


def test_deploy_settings_are_checked_before_a_run_only_when_it_deploys():
    refusing = {"publish_uri": PUBLISH_URI, "model_name": "Imdb.Sentiment"}
    assert presets.resolve("smoke", refusing)["model_name"] == "Imdb.Sentiment"  # publish takes it; deploy is off
    with pytest.raises(KdflowInputError, match=r"^model_name='Imdb.Sentiment' cannot name an InferenceService"):
        presets.resolve("smoke", {**refusing, "deploy": "true"})
    with pytest.raises(KdflowInputError, match=r"^publish_uri='' is no gs:// or s3:// location"):
        presets.resolve("smoke", {"deploy": "true"})


def run_deploying(tmp_path, *options) -> int:
    return main(["run", "--preset", "smoke", "--publish-uri", PUBLISH_URI, "--set", "deploy=true",
                 "--output", str(tmp_path / "run"), *options])


def test_kdflow_run_checks_the_cluster_before_the_pipeline_starts(no_cluster, tmp_path, capsys, monkeypatch):
    assert run_deploying(tmp_path) == 2
    assert capsys.readouterr().err.startswith("kdflow: error: deploy=true needs the Kubernetes API")
    assert run_deploying(tmp_path, "--runner", "docker") == 2
    assert "deploy=true cannot run with --runner docker" in capsys.readouterr().err
    api = KubernetesApiStandIn(forbidden={"get"}).start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", api.url, api.token)))
        assert run_deploying(tmp_path) == 2
        assert "refused to get InferenceService kdflow-dev/kdflow-student" in capsys.readouterr().err
        assert [request.method for request in api.requests] == ["GET"]
    finally:
        api.stop()
    assert not (tmp_path / "run").exists()  # nothing started
