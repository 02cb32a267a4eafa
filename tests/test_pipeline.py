"""The compiled pipeline: committed and current, GPU requests, presets, and a local run of the YAML itself."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdflow.pipelines import presets

COMMITTED_YAML = Path(__file__).parents[1] / "pipelines" / "distillation.yaml"
GPU_TASKS = ("teacher-train", "teacher-eval", "distill")


def runs_on_gpu(executor_name: str) -> bool:
    """exec-distill and exec-distill-2 to -4 (the baselines) run the same component."""
    return re.fullmatch(rf"exec-({'|'.join(GPU_TASKS)})(-\d+)?", executor_name) is not None


def compile_to(path: Path, *options: str, **environment) -> str:
    # A fresh interpreter, so the image registry is read from this environment and nothing else.
    env = {key: value for key, value in os.environ.items() if key != "KDFLOW_IMAGE_REGISTRY"}
    subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "compile", *options, "--output", str(path)],
                   check=True, env={**env, **environment}, capture_output=True)
    return path.read_text()


def without_sdk_version(text: str) -> list[str]:
    return [line for line in text.splitlines() if "sdkVersion" not in line]


def test_committed_yaml_is_current(tmp_path):
    fresh = compile_to(tmp_path / "pipeline.yaml")
    assert without_sdk_version(COMMITTED_YAML.read_text()) == without_sdk_version(fresh), (
        "pipelines/distillation.yaml is stale: run `kdflow compile --output pipelines/distillation.yaml`"
    )


def test_training_tasks_request_one_gpu_and_others_none():
    spec = next(yaml.safe_load_all(COMMITTED_YAML.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        resources = executor["container"].get("resources", {})
        assert set(resources) <= {"accelerator"}, name  # no CPU or memory settings: see tests/test_scheduling.py
        accelerator = resources.get("accelerator", {})
        if runs_on_gpu(name):
            assert accelerator.get("resourceType") == "nvidia.com/gpu", name
            assert accelerator.get("resourceCount") == "1", name
        else:
            assert not accelerator, name


def test_training_steps_use_the_trainer_image_and_the_rest_the_runtime_image():
    executors = next(yaml.safe_load_all(COMMITTED_YAML.read_text()))["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        kind = "trainer" if runs_on_gpu(name) else "cpu"
        assert executor["container"]["image"].rsplit(":", 1)[0].endswith(f"/kdflow-{kind}"), name


def test_compiled_defaults_are_the_imdb_recipe():
    parameters = next(yaml.safe_load_all(COMMITTED_YAML.read_text()))["root"]["inputDefinitions"]["parameters"]
    defaults = {name: spec.get("defaultValue") for name, spec in parameters.items()}
    assert defaults["source"] == "imdb"
    assert defaults["student"] == "distilbert-base-uncased"
    assert (defaults["epochs"], defaults["batch_size"], defaults["temperature"], defaults["alpha"]) == (2, 8, 2, 0.5)
    # Every input of every step carries its docstring line into the YAML, where cluster users read it.
    components = next(yaml.safe_load_all(COMMITTED_YAML.read_text()))["components"]
    for name, component in components.items():
        for group in ("parameters", "artifacts"):
            for input_name, spec in component.get("inputDefinitions", {}).get(group, {}).items():
                if not name.startswith("comp-condition") and not name.startswith("comp-importer"):
                    assert spec.get("description"), f"{name}.{input_name} has no description"


def test_imdb_preset_resolves_with_a_teacher_and_refuses_without():
    parameters = presets.resolve("imdb", {"teacher": "my-org/bert-imdb"})
    assert parameters["teacher"] == "my-org/bert-imdb"
    assert parameters["distill_mode"] == "cached"
    with pytest.raises(presets.KdflowInputError, match="teacher"):
        presets.resolve("imdb", {})


@pytest.mark.slow
def test_compiled_yaml_loaded_back_runs_locally(tmp_path):
    import kfp.local
    from kfp.components import load_component_from_file


    pipeline = load_component_from_file(str(COMMITTED_YAML))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    parameters = presets.resolve("smoke", {"max_train_samples": "400", "max_eval_samples": "100", "epochs": "1",
                                           "teacher_epochs": "1", "max_length": "64"})
    run = pipeline(**parameters)
    student = json.loads(Path(run.outputs["student_metrics"].path).read_text())
    assert student["rows"] == 100
    assert 0.0 <= student["accuracy"] <= 1.0
    assert (Path(run.outputs["onnx_model"].path) / "model.int8.onnx").exists()


def test_gcp_key_secret_is_mounted_in_every_task_by_name_only(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "KDFLOW_IMAGE_REGISTRY"}
    subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "compile", "--gcp-key-secret", "kdflow-gcp-key",
                    "--output", str(tmp_path / "p.yaml")], check=True, env=env, capture_output=True)
    documents = list(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    executors = documents[0]["deploymentSpec"]["executors"]
    kubernetes = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == set(executors)
    for name, executor in executors.items():
        assert kubernetes[name]["secretAsVolume"][0]["secretName"] == "kdflow-gcp-key"
        variables = {item["name"]: item["value"] for item in executor["container"].get("env", [])}
        assert variables["GOOGLE_APPLICATION_CREDENTIALS"] == "/var/secrets/google/key.json"
    # The default pipeline relies on the pod's service account: no secret at all. Its only Kubernetes setting is
    # the run's name in the GPU steps' environment, from the pod's label.
    committed = list(yaml.safe_load_all(COMMITTED_YAML.read_text()))[1]["platforms"]["kubernetes"]
    assert {name: list(settings) for name, settings in committed["deploymentSpec"]["executors"].items()} == {
        name: ["fieldPathAsEnv"]
        for name in ("exec-distill", "exec-distill-2", "exec-distill-3", "exec-distill-4", "exec-teacher-eval",
                     "exec-teacher-train")}


def gpu_counts(spec: dict) -> dict[str, str]:
    """The GPUs each executor requests, by executor name; none for CPU steps."""
    return {name: executor["container"].get("resources", {}).get("accelerator", {}).get("resourceCount")
            for name, executor in spec["deploymentSpec"]["executors"].items()}


def test_nproc_at_compile_time_requests_that_many_gpus_for_distill(tmp_path):
    spec = next(yaml.safe_load_all(compile_to(tmp_path / "p.yaml", "--nproc", "4")))
    gpus = gpu_counts(spec)
    # the distilled student and the baselines
    assert gpus["exec-distill"] == gpus["exec-distill-2"] == gpus["exec-distill-3"] == gpus["exec-distill-4"] == "4"
    assert gpus["exec-teacher-eval"] == gpus["exec-teacher-train"] == "1"
    # ... and tells the step to start that many processes.
    root = spec["root"]["dag"]["tasks"]
    assert root["distill"]["inputs"]["parameters"]["processes"]["runtimeValue"]["constant"] == 4


def test_teacher_shards_at_compile_time_fan_out_in_a_parallel_for_and_merge(tmp_path):
    spec = next(yaml.safe_load_all(compile_to(tmp_path / "p.yaml", "--teacher-shards", "3")))
    root = spec["root"]["dag"]["tasks"]
    sharded = spec["components"]["comp-sharded-teacher-logits"]["dag"]
    [loop] = [task for task in sharded["tasks"].values() if "parameterIterator" in task]
    assert json.loads(loop["parameterIterator"]["items"]["raw"]) == [0, 1, 2]
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert inner["teacher-shard"]["inputs"]["parameters"]["shards"]["runtimeValue"]["constant"] == 3
    gpus = gpu_counts(spec)
    assert gpus["exec-teacher-shard"] == "1" and gpus["exec-merge-logits"] is None
    # distill reads the merged logits; teacher_eval only evaluates.
    [merged] = sharded["outputs"]["artifacts"].values()
    assert merged["artifactSelectors"][0]["producerSubtask"] == "merge-logits"
    assert root["distill"]["inputs"]["artifacts"]["teacher_logits"]["taskOutputArtifact"]["producerTask"] == \
        "sharded-teacher-logits"
    assert root["teacher-eval"]["inputs"]["parameters"]["cache_logits"]["runtimeValue"]["constant"] is False
