"""Pod scheduling and S3 credentials compiled into the pipeline: node selectors, tolerations, the GPU type and CPU and
memory requests and limits of the CPU steps and of the GPU steps, in the KFP pipeline (its kfp-kubernetes platform
spec and IR) and in the Argo WorkflowTemplate; bad values refused in one sentence."""

import pytest
import yaml
from google.protobuf import json_format
from kfp.components import load_component_from_file
from kfp.kubernetes.kubernetes_executor_config_pb2 import KubernetesExecutorConfig
from test_argo import strict_validator
from test_pipeline import runs_on_gpu
from test_secrets import credentials_in

from kdflow.pipelines.cli import main

# GKE Spot VMs with one A100 each (a2-highgpu-1g: 12 vCPUs, 85 GB): GKE taints GPU nodes nvidia.com/gpu=present.
GKE_SPOT_A100 = (
    "--gpu-type", "nvidia-tesla-a100",
    "--gpu-node-selector", "cloud.google.com/gke-spot=true",
    "--gpu-toleration", "nvidia.com/gpu=present:NoSchedule",
    "--gpu-step-requests", "cpu=8,memory=48Gi", "--gpu-step-limits", "cpu=11,memory=64Gi",
    "--cpu-node-selector", "cloud.google.com/gke-spot=true",
    "--cpu-toleration", "cloud.google.com/gke-spot:NoSchedule",
    "--cpu-step-requests", "cpu=500m,memory=2Gi", "--cpu-step-limits", "cpu=2,memory=8Gi",
)
# What every GPU step has, with or without options: the run's name from its pod's label (experiment tracking).
# The pipeline's step tasks: the 9 of a run without baselines, the report in the two other branches of
# compare_baseline and pretrained_teacher, 3 baseline trainings with their evaluations, and deploy.
STEP_TASKS = 9 + 2 + 3 * 2 + 1
RUN_NAME = {"fieldPathAsEnv": [{"fieldPath": "metadata.labels['workflows.argoproj.io/workflow']",
                                "name": "KDFLOW_RUN_NAME"}]}
GPU_PLACEMENT = {
    "nodeSelector": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100",
                                "cloud.google.com/gke-spot": "true"}},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
    **RUN_NAME,
}
CPU_PLACEMENT = {
    "nodeSelector": {"labels": {"cloud.google.com/gke-spot": "true"}},
    "tolerations": [{"key": "cloud.google.com/gke-spot", "operator": "Exists", "effect": "NoSchedule"}],
}
GPU_RESOURCES = {"requests": {"cpu": "8", "memory": "48Gi"},
                 "limits": {"cpu": "11", "memory": "64Gi", "nvidia.com/gpu": "1"}}
CPU_RESOURCES = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
S3 = ("--s3-secret", "kdflow-s3", "--s3-endpoint", "http://minio.minio.svc:9000")


def compiled(tmp_path, *options: str) -> str:
    output = tmp_path / "compiled.yaml"
    assert main(["compile", *options, "--output", str(output)]) == 0
    return output.read_text()


def test_the_gke_spot_a100_example_places_every_kfp_task(tmp_path):
    pipeline, platform = yaml.safe_load_all(compiled(tmp_path, *GKE_SPOT_A100))
    executors = pipeline["deploymentSpec"]["executors"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == set(executors)
    for name, executor in executors.items():
        on_gpu = runs_on_gpu(name)
        assert kubernetes[name] == (GPU_PLACEMENT if on_gpu else CPU_PLACEMENT), name
        # The fields the KFP backend reads: its platform spec message takes them, and the IR names the quantities.
        json_format.ParseDict(kubernetes[name], KubernetesExecutorConfig())
        resources = executor["container"]["resources"]
        expected = GPU_RESOURCES if on_gpu else CPU_RESOURCES
        assert {"requests": {"cpu": resources["resourceCpuRequest"], "memory": resources["resourceMemoryRequest"]},
                "limits": {"cpu": resources["resourceCpuLimit"], "memory": resources["resourceMemoryLimit"]}} == \
            {kind: {name: value for name, value in values.items() if name != "nvidia.com/gpu"}
             for kind, values in expected.items()}, name
        assert ("accelerator" in resources) == on_gpu, name
    # teacher_train, teacher_eval, distill, and the baselines' distills (baseline b in both branches of
    # pretrained_teacher, the pretrained baseline a in one)
    assert sum(map(runs_on_gpu, executors)) == 6


def test_a_pipeline_compiled_with_scheduling_loads_back_with_its_platform_spec(tmp_path):
    text = compiled(tmp_path, *GKE_SPOT_A100)
    loaded = load_component_from_file(str(tmp_path / "compiled.yaml"))
    deployment = json_format.MessageToDict(loaded.platform_spec)["platforms"]["kubernetes"]["deploymentSpec"]
    assert deployment == list(yaml.safe_load_all(text))[1]["platforms"]["kubernetes"]["deploymentSpec"]
    assert deployment["executors"]["exec-distill"] == GPU_PLACEMENT


def test_the_gke_spot_a100_example_places_every_argo_step(tmp_path):
    template = yaml.safe_load(compiled(tmp_path, "--target", "argo", *GKE_SPOT_A100))
    validator = strict_validator("WorkflowTemplate")
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(template)]
    assert not errors, "\n".join(errors)
    spec = template["spec"]
    steps = [step for step in spec["templates"] if step["name"] != spec["entrypoint"]]
    assert len(steps) == STEP_TASKS
    for step in steps:
        on_gpu = runs_on_gpu(f"exec-{step['name']}")
        placement = GPU_PLACEMENT if on_gpu else CPU_PLACEMENT
        assert step["nodeSelector"] == placement["nodeSelector"]["labels"], step["name"]
        assert step["tolerations"] == placement["tolerations"], step["name"]
        assert step["container"]["resources"] == (GPU_RESOURCES if on_gpu else CPU_RESOURCES), step["name"]
    # The validator has teeth here too: a toleration with a field Kubernetes does not know is refused.
    steps[0]["tolerations"][0]["effects"] = "NoSchedule"
    assert not validator.is_valid(template)


@pytest.mark.parametrize("target", ["kfp", "argo"])
def test_s3_credentials_come_from_the_secret_by_name_in_every_task(tmp_path, target):
    text = compiled(tmp_path, "--target", target, *S3)
    assert credentials_in(text) == []
    if target == "kfp":
        pipeline, platform = yaml.safe_load_all(text)
        executors = pipeline["deploymentSpec"]["executors"]
        kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        assert len(executors) == STEP_TASKS
        for name, executor in executors.items():
            assert executor["container"]["env"] == [{"name": "AWS_ENDPOINT_URL",
                                                     "value": "http://minio.minio.svc:9000"}], name
            [secret] = kubernetes[name]["secretAsEnv"]
            assert secret["secretName"] == "kdflow-s3", name
            assert secret["keyToEnv"] == [{"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_ACCESS_KEY_ID"},
                                          {"envVar": "AWS_SECRET_ACCESS_KEY", "secretKey": "AWS_SECRET_ACCESS_KEY"}]
    else:
        template = yaml.safe_load(text)
        assert strict_validator("WorkflowTemplate").is_valid(template)
        steps = [step for step in template["spec"]["templates"] if "container" in step]
        for step in steps:
            assert [variable for variable in step["container"]["env"] if variable["name"] != "KDFLOW_RUN_NAME"] == [
                {"name": "AWS_ENDPOINT_URL", "value": "http://minio.minio.svc:9000"},
                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "kdflow-s3",
                                                                             "key": "AWS_ACCESS_KEY_ID"}}},
                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "kdflow-s3",
                                                                                 "key": "AWS_SECRET_ACCESS_KEY"}}},
            ], step["name"]
        assert len(steps) == STEP_TASKS


def test_another_gpu_type_label_selects_the_gpu_on_the_gpu_steps_only(tmp_path):
    _, platform = yaml.safe_load_all(compiled(tmp_path, "--gpu-type", "NVIDIA-A100-SXM4-40GB",
                                              "--gpu-type-label", "nvidia.com/gpu.product"))
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == {"exec-teacher-train", "exec-teacher-eval", "exec-distill", "exec-distill-2",
                               "exec-distill-3", "exec-distill-4"}
    assert kubernetes["exec-distill"] == {"nodeSelector": {"labels": {"nvidia.com/gpu.product":
                                                                      "NVIDIA-A100-SXM4-40GB"}}, **RUN_NAME}


@pytest.mark.parametrize("options, needle", [
    (["--gpu-node-selector", "cloud.google.com/gke-spot"], "--gpu-node-selector 'cloud.google.com/gke-spot' is not "
                                                           "KEY=VALUE"),
    (["--cpu-node-selector", "node pool=a"], "'node pool' is not a Kubernetes label key"),
    (["--cpu-node-selector", "Example.com/pool=a"], "'Example.com/pool' is not a Kubernetes label key"),
    (["--gpu-node-selector", "pool=-a"], "'-a' is not a Kubernetes label value"),
    (["--gpu-node-selector", "pool=a", "--gpu-node-selector", "pool=b"], "--gpu-node-selector gives pool twice"),
    (["--gpu-toleration", "nvidia.com/gpu=present"], "is not KEY[=VALUE]:EFFECT with EFFECT NoSchedule"),
    (["--gpu-toleration", "nvidia.com/gpu=present:noschedule"], "is not KEY[=VALUE]:EFFECT"),
    (["--cpu-toleration", "spot=yes please:NoSchedule"], "'yes please' is not a Kubernetes label value"),
    (["--gpu-type", "NVIDIA A100"], "--gpu-type 'NVIDIA A100': 'NVIDIA A100' is not a Kubernetes label value"),
    (["--gpu-type", "t4", "--gpu-type-label", "/accelerator"], "'/accelerator' is not a Kubernetes label key"),
    (["--gpu-type", "t4", "--gpu-node-selector", "cloud.google.com/gke-accelerator=l4"], "give the GPU type once"),
    (["--cpu-step-requests", "cpu=2,gpu=1"], "'cpu=2,gpu=1' is not cpu=QUANTITY,memory=QUANTITY"),
    (["--cpu-step-requests", "cpu=2,cpu=3"], "is not cpu=QUANTITY,memory=QUANTITY: give either or both, once each"),
    (["--gpu-step-limits", "memory=8GB"], "--gpu-step-limits 'memory=8GB': '8GB' is not a memory quantity"),
    (["--gpu-step-limits", "memory=1.5Gi"], "'1.5Gi' is not a memory quantity above 0"),
    (["--cpu-step-limits", "cpu=2 cores"], "'2 cores' is not a cpu quantity above 0: give cores (2, 0.5)"),
    (["--cpu-step-requests", "cpu=0m"], "'0m' is not a cpu quantity above 0"),
    (["--gpu-step-requests", "memory=64Gi", "--gpu-step-limits", "memory=32Gi"],
     "--gpu-step-requests memory=64Gi is more than --gpu-step-limits memory=32Gi"),
    (["--cpu-step-requests", "cpu=1500m", "--cpu-step-limits", "cpu=1"], "cpu=1500m is more than"),
    (["--s3-secret", "S3_keys"], "--s3-secret 'S3_keys' is not a valid Kubernetes name"),
    (["--s3-endpoint", "minio:9000"], "--s3-endpoint 'minio:9000' is not an http(s) URL"),
    (["--s3-endpoint", "https://minio:secret-word@minio.example.com"], "--s3-endpoint https://minio:***@minio.example"
                                                                       ".com holds credentials"),
])
def test_bad_scheduling_values_are_refused_in_one_sentence(tmp_path, capsys, options, needle):
    output = tmp_path / "compiled.yaml"
    assert main(["compile", *options, "--output", str(output)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("kdflow: error:") == 1 and needle in stderr and len(stderr.strip().splitlines()) == 1
    assert "secret-word" not in stderr
    assert not output.exists()
