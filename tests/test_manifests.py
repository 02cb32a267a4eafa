"""manifests/: every file parses, every resource validates against the Kubernetes schemas (kubernetes-validate,
offline), every path a kustomization names exists, and the CronJob runs a `kdflow submit` the CLI accepts. The
InferenceService of manifests/serving validates against KServe's own schema (beside the repository, as in CI) and runs
a `kdflow serve` the CLI accepts."""

import copy
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kfp.client import KF_PIPELINES_SA_TOKEN_PATH

from kdflow.components.common.images import KDFLOW_VERSION, RUNTIME_IMAGE, image_name
from kdflow.components.common.settings import from_arguments, parser
from kdflow.components.deploy.inference_service import inference_service
from kdflow.components.distill import task as distill_task
from kdflow.pipelines.cli import build_parser, serve_command, submit_command

REPOSITORY = Path(__file__).parents[1]
MANIFESTS = REPOSITORY / "manifests"
KUBERNETES_VERSION = "1.30"  # the oldest minor GKE's regular channel still runs
KUSTOMIZATIONS = sorted(MANIFESTS.rglob("kustomization.yaml"))
OVERLAYS = {"dev": "kdflow-dev", "prod": "kdflow-prod"}
CUSTOM_RESOURCE_GROUPS = {"trainer.kubeflow.org", "serving.kserve.io"}  # Kubeflow Trainer's TrainJob, KServe's
TRAINJOB = MANIFESTS / "components" / "multinode-distill" / "trainjob.yaml"
SERVING = MANIFESTS / "serving"


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def named_files(key: str) -> list[Path]:
    """The files that kustomizations list under `resources` or `patches`, resolved."""
    found = []
    for kustomization in KUSTOMIZATIONS:
        spec = documents(kustomization)[0]
        entries = spec.get(key, [])
        paths = [entry["path"] if isinstance(entry, dict) else entry for entry in entries]
        found += [(kustomization.parent / path).resolve() for path in paths]
    return [path for path in found if path.is_file()]


def test_every_path_a_kustomization_names_exists():
    assert KUSTOMIZATIONS, "no kustomization.yaml under manifests/"
    for kustomization in KUSTOMIZATIONS:
        spec = documents(kustomization)[0]
        assert spec["apiVersion"].startswith("kustomize.config.k8s.io/"), kustomization
        assert spec["kind"] in ("Kustomization", "Component"), kustomization
        names = [*spec.get("resources", []), *spec.get("components", []),
                 *(patch["path"] for patch in spec.get("patches", []))]
        for name in names:
            target = kustomization.parent / name
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{kustomization}: {name}"


def test_every_manifest_is_named_by_a_kustomization_and_names_itself():
    manifests = set(MANIFESTS.rglob("*.yaml")) - set(KUSTOMIZATIONS)
    assert manifests == set(named_files("resources")) | set(named_files("patches")), \
        "a manifest no kustomization uses, or one that is missing"
    for path in manifests:
        for document in documents(path):
            assert document.get("apiVersion") and document.get("kind"), path
            assert document.get("metadata", {}).get("name"), path


def test_resources_validate_against_the_kubernetes_schemas():
    kinds = set()
    for path in named_files("resources"):
        for document in documents(path):
            if document["apiVersion"].split("/")[0] in CUSTOM_RESOURCE_GROUPS:
                continue  # none here: see test_the_trainjob_runs_the_distill_task_on_several_nodes and the KServe tests
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            kinds.add(document["kind"])
    assert kinds == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "CronJob"}


def test_patches_change_resources_that_exist():
    resources = {(document["kind"], document["metadata"]["name"])
                 for path in named_files("resources") for document in documents(path)}
    for path in named_files("patches"):
        for document in documents(path):
            assert (document["kind"], document["metadata"]["name"]) in resources, path


def test_the_pipeline_root_is_a_gcs_uri_and_the_runner_is_mapped_to_a_google_account():
    launcher = documents(MANIFESTS / "base" / "kfp-launcher.yaml")[0]
    assert launcher["metadata"]["name"] == "kfp-launcher"
    assert launcher["data"]["defaultPipelineRoot"].startswith("gs://")
    runner = documents(MANIFESTS / "base" / "service-account.yaml")[0]
    assert runner["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    bindings = [document for document in documents(MANIFESTS / "base" / "pipeline-runner-rbac.yaml")
                if document["kind"] == "RoleBinding"]
    assert [subject["name"] for binding in bindings for subject in binding["subjects"]] == \
        [runner["metadata"]["name"]]


def test_the_cronjob_runs_a_kdflow_submit_the_cli_accepts():
    cronjob = documents(MANIFESTS / "components" / "scheduled-submit" / "cronjob.yaml")[0]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == RUNTIME_IMAGE.split("/")[-1].split(":")[0]  # the overlay adds registry and tag
    compile_line, submit_line = container["args"][0].split("&&")
    compile_args = build_parser().parse_args(shlex.split(compile_line)[1:])
    submit_args = build_parser().parse_args(shlex.split(submit_line.replace("exec", "", 1))[1:])
    assert submit_args.command is submit_command
    assert submit_args.package == compile_args.output
    assert submit_args.no_cache, "each CronJob run must read fresh data"
    runner = documents(MANIFESTS / "base" / "service-account.yaml")[0]["metadata"]["name"]
    assert submit_args.service_account == runner
    # kfp.Client reads the projected token at its default path.
    [mount] = container["volumeMounts"]
    [volume] = pod["volumes"]
    [source] = volume["projected"]["sources"]
    assert f"{mount['mountPath']}/{source['serviceAccountToken']['path']}" == KF_PIPELINES_SA_TOKEN_PATH
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_build_into_valid_resources_of_their_namespace(overlay):
    built = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)],
                           check=True, capture_output=True, text=True).stdout
    resources = [document for document in yaml.safe_load_all(built) if document]
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        namespace = resource["metadata"]["name"] if resource["kind"] == "Namespace" \
            else resource["metadata"]["namespace"]
        assert namespace == OVERLAYS[overlay], resource["metadata"]
    by_kind = {(resource["kind"], resource["metadata"]["name"]): resource for resource in resources}
    runner = by_kind[("ServiceAccount", "kdflow-pipeline-runner")]
    assert f"-{overlay}@" in runner["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    cronjobs = [resource for resource in resources if resource["kind"] == "CronJob"]
    if overlay == "prod":
        [cronjob] = cronjobs
        [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["image"].endswith(f"/kdflow-cpu:{KDFLOW_VERSION}")
        [reference] = container["envFrom"]
        assert ("ConfigMap", reference["configMapRef"]["name"]) in by_kind
    else:
        assert cronjobs == []


def test_the_cronjob_compiles_the_pipeline_for_the_registry_its_overlay_names(tmp_path):
    """The CronJob submits what it compiles: its steps must name the pushed images, not this machine's."""
    cronjob = documents(MANIFESTS / "components" / "scheduled-submit" / "cronjob.yaml")[0]
    [container] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    compile_line = container["args"][0].split("&&")[0]
    [generator] = documents(MANIFESTS / "overlays" / "prod" / "kustomization.yaml")[0]["configMapGenerator"]
    settings = dict(literal.split("=", 1) for literal in generator["literals"])
    arguments = shlex.split(compile_line)[1:]
    arguments[arguments.index("--output") + 1] = str(tmp_path / "distillation.yaml")
    environment = {key: value for key, value in os.environ.items() if key != "KDFLOW_IMAGE_REGISTRY"}
    subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", *arguments], check=True, capture_output=True,
                   env={**environment, **settings})
    executors = next(yaml.safe_load_all((tmp_path / "distillation.yaml").read_text()))["deploymentSpec"]["executors"]
    images = {executor["container"]["image"] for executor in executors.values()}
    assert images == {f"{settings['KDFLOW_IMAGE_REGISTRY']}/kdflow-{kind}:{KDFLOW_VERSION}"
                      for kind in ("cpu", "trainer")}


def test_the_trainjob_runs_the_distill_task_on_several_nodes():
    [job] = documents(TRAINJOB)
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == image_name("trainer", "registry.example.com/team")  # this version's trainer image
    assert trainer["numNodes"] >= 2
    assert trainer["numProcPerNode"] == trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"]  # a process a GPU
    # torchrun (it reads the runtime's PET_* node count, rank and rendezvous) running the distill task module.
    assert trainer["command"] == ["python3", "-m", "torch.distributed.run"]
    arguments = trainer["args"]
    assert arguments[:2] == ["-m", "kdflow.components.distill.task"]
    assert importlib.util.find_spec(arguments[1]) is not None and importlib.util.find_spec("torch.distributed.run")
    flags = parser("", distill_task.Settings, distill_task.Files, distill_task.Result).parse_args(arguments[2:])
    from_arguments(distill_task.Settings, flags)  # settings its checks accept
    assert flags.processes == 1  # the processes are torchrun's, on every node
    # The run's artifacts where KFP puts them, the GCS pipeline root mounted at /gcs/BUCKET, by Workload Identity.
    [patch] = job["spec"]["runtimePatches"]
    [node] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]
    [volume] = pod["spec"]["volumes"]
    [container] = pod["spec"]["containers"]
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == f"/gcs/{volume['csi']['volumeAttributes']['bucketName']}"
    for path in (flags.data, flags.teacher_logits, flags.student, flags.training_curves):
        assert path.startswith(mount["mountPath"] + "/"), path
    runner = documents(MANIFESTS / "base" / "service-account.yaml")[0]["metadata"]["name"]
    assert pod["spec"]["serviceAccountName"] == runner


def inference_services() -> list[tuple[Path, dict]]:
    return [(path, document) for path in sorted(MANIFESTS.rglob("*.yaml")) for document in documents(path)
            if document.get("kind") == "InferenceService"]


def test_every_inference_service_validates_against_the_kserve_schema(kserve_schema_errors):
    found = inference_services()
    assert [path for path, _ in found] == [SERVING / "inferenceservice.yaml"]
    for path, service in found:
        assert service["apiVersion"] == "serving.kserve.io/v1beta1", path
        errors = kserve_schema_errors(service)
        assert not errors, f"{path}:\n" + "\n".join(errors)


@pytest.mark.parametrize("change, where", [
    (lambda predictor: predictor.update(minReplicas="two"), "spec/predictor/minReplicas"),
    (lambda predictor: predictor.update(minReplica=1), "spec/predictor"),  # misspelt: refused, not dropped
    (lambda predictor: predictor.update(scaleMetric="latency"), "spec/predictor/scaleMetric"),
    (lambda predictor: predictor["containers"][0]["ports"][0].update(containerPort="http"),
     "spec/predictor/containers/0/ports/0/containerPort"),
    (lambda predictor: predictor["containers"][0].pop("name"), "spec/predictor/containers/0"),
])
def test_the_kserve_schema_refuses_a_broken_inference_service(kserve_schema_errors, change, where):
    """The validation above can fail: each of these breaks the resource at `where`, and is caught there."""
    [(_, service)] = inference_services()
    broken = copy.deepcopy(service)
    change(broken["spec"]["predictor"])
    errors = kserve_schema_errors(broken)
    assert errors and all(error.startswith(f"{where}: ") for error in errors), errors


def kserve_grace_period_s() -> int:
    """How long uvicorn finishes the requests in flight after SIGTERM, as kserve.ModelServer runs it for kdflow serve
    (its default: kdflow serve does not change it). Read in a fresh interpreter, as importing kserve parses argv."""
    code = "import inspect, kserve; print(inspect.signature(kserve.ModelServer).parameters['grace_period'].default)"
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def test_the_inference_service_runs_a_kdflow_serve_the_cli_accepts():
    [(_, service)] = inference_services()
    annotations = service["metadata"]["annotations"]
    predictor = service["spec"]["predictor"]
    # Standard mode with KServe's HPA: its webhook takes scaleMetric cpu only with an HPA, and this mode runs the pod
    # spec written here as a plain Deployment, no Knative needed.
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert predictor["scaleMetric"] == "cpu" and 1 <= predictor["scaleTarget"] <= 100
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert "containerConcurrency" not in predictor  # the server batches concurrent requests itself
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe gives a custom predictor's container
    assert container["image"] == image_name("cpu", "registry.example.com/team")  # this version's CPU image
    assert container["command"] == ["kdflow"]
    args = build_parser().parse_args(container["args"])
    assert args.command is serve_command
    assert args.model.startswith("gs://")
    assert Path(args.model).name == service["metadata"]["name"], \
        "serve the model's folder (PUBLISH_URI/MODEL_NAME), so it follows latest.json"
    # The one port: declared, and where every probe asks.
    [port] = container["ports"]
    assert port == {"name": "http1", "containerPort": args.http_port, "protocol": "TCP"}
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {probe["port"] for probe in probes.values()} <= {args.http_port, port["name"]}
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/v2/health/live"
    # OpenVINO's threads are the CPUs the container may use.
    assert args.threads == int(container["resources"]["limits"]["cpu"])
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # Requests in flight finish before the kubelet kills the container: the preStop pause, then uvicorn's drain.
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert predictor["terminationGracePeriodSeconds"] > int(pause[1]) + kserve_grace_period_s()
    # The image's user, nothing gained, nothing written but the emptyDir at /tmp (the downloads and HF_HOME).
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 1000
    assert security["allowPrivilegeEscalation"] is False
    if security.get("readOnlyRootFilesystem"):
        [mount] = container["volumeMounts"]
        [volume] = [volume for volume in predictor["volumes"] if volume["name"] == mount["name"]]
        assert mount["mountPath"] == "/tmp" and "emptyDir" in volume
    # Its own account, mapped to a Google service account that can read the bucket.
    accounts = {document["metadata"]["name"]: document for path in named_files("resources")
                for document in documents(path) if document["kind"] == "ServiceAccount"}
    serving = accounts[predictor["serviceAccountName"]]
    assert serving["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    runner = documents(MANIFESTS / "base" / "service-account.yaml")[0]["metadata"]["name"]
    assert predictor["serviceAccountName"] != runner  # the runs' account may write; the server's only reads


def test_the_inference_service_is_the_one_the_deploy_step_writes():
    """Declared once: the deploy step's function, which for the manifest's values gives the manifest."""
    [(_, service)] = inference_services()
    predictor = service["spec"]["predictor"]
    [container] = predictor["containers"]
    model = build_parser().parse_args(container["args"]).model
    assert service == inference_service(service["metadata"]["name"], model, container["image"],
                                         predictor["serviceAccountName"])


def test_the_runs_may_get_create_and_update_inference_services_in_their_namespace_only():
    """What the deploy step needs (tests/test_deploy.py proves it uses these verbs and no others), in a Role, so in
    the runs' namespace alone, bound to their account."""
    rbac = documents(MANIFESTS / "base" / "pipeline-runner-rbac.yaml")
    assert {document["kind"] for document in rbac} == {"Role", "RoleBinding"}  # no ClusterRole: namespaced
    [role] = [document for document in rbac if document["kind"] == "Role"]
    rules = [rule for rule in role["rules"] if "serving.kserve.io" in rule["apiGroups"]]
    assert rules == [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                      "verbs": ["get", "create", "update"]}]
    [binding] = [document for document in rbac if document["kind"] == "RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    runner = documents(MANIFESTS / "base" / "service-account.yaml")[0]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": runner}]
    assert "pipeline-runner-rbac.yaml" in documents(MANIFESTS / "base" / "kustomization.yaml")[0]["resources"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_the_serving_folder_builds_into_valid_resources(kserve_schema_errors):
    built = subprocess.run(["kubectl", "kustomize", str(SERVING)], check=True, capture_output=True, text=True).stdout
    resources = {resource["kind"]: resource for resource in yaml.safe_load_all(built) if resource}
    assert set(resources) == {"ServiceAccount", "InferenceService"}
    kubernetes_validate.validate(resources["ServiceAccount"], KUBERNETES_VERSION, strict=True)
    service = resources["InferenceService"]
    errors = kserve_schema_errors(service)
    assert not errors, "\n".join(errors)
    assert service["spec"]["predictor"]["serviceAccountName"] == resources["ServiceAccount"]["metadata"]["name"]
    for resource in resources.values():
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kdflow"
