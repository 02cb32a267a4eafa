"""The Argo Workflows target: committed and current, valid against Argo's schema, the KFP pipeline's parameters, and
every step's command line of the WorkflowTemplate run here, in order, on the smoke preset."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from kdflow.pipelines import presets

REPOSITORY = Path(__file__).parents[1]
COMMITTED = {"template": REPOSITORY / "pipelines" / "distillation-argo.yaml",
             "cron": REPOSITORY / "pipelines" / "distillation-argo-cron.yaml"}
KFP_YAML = REPOSITORY / "pipelines" / "distillation.yaml"
SCHEMA = REPOSITORY.parent / "shared" / "schemas" / "argo-workflows.schema.json"
WEEKLY = "0 3 * * 0"


def compile_argo(path: Path, *options: str) -> subprocess.CompletedProcess:
    # A fresh interpreter, so the image registry is read from this environment and nothing else.
    env = {key: value for key, value in os.environ.items() if key != "KDFLOW_IMAGE_REGISTRY"}
    return subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "compile", "--target", "argo", *options,
                           "--output", str(path)], env=env, capture_output=True, text=True)


def load(name: str) -> dict:
    return yaml.safe_load(COMMITTED[name].read_text())


@pytest.mark.parametrize("name, options", [("template", ()), ("cron", ("--cron", WEEKLY))])
def test_committed_argo_files_are_current(tmp_path, name, options):
    fresh = tmp_path / "fresh.yaml"
    compiled = compile_argo(fresh, *options)
    assert compiled.returncode == 0
    if options:  # a schedule shows when it runs: WEEKLY is Sundays at 03:00
        assert re.search(r"next runs \(UTC\): Sun \S+ 03:00:00, Sun \S+ 03:00:00, Sun \S+ 03:00:00$",
                         compiled.stdout.strip()), compiled.stdout
    assert COMMITTED[name].read_text() == fresh.read_text(), (
        f"{COMMITTED[name].relative_to(REPOSITORY)} is stale: run `kdflow compile --target argo "
        f"{' '.join(options)} --output {COMMITTED[name].relative_to(REPOSITORY)}`")


def strict_validator(kind: str):
    """A validator for one kind of the Argo schema that also refuses unknown fields.

    The published schema lets any extra field through, so a misspelt `retryStrategy` would pass it: every object
    definition with properties is closed here.
    """
    import jsonschema

    if not SCHEMA.exists():
        pytest.skip(f"the Argo Workflows schema is not beside the repository ({SCHEMA})")
    definitions = json.loads(SCHEMA.read_text())["definitions"]
    for definition in definitions.values():
        if "properties" in definition and "additionalProperties" not in definition:
            definition["additionalProperties"] = False
    return jsonschema.Draft202012Validator(
        {"$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{kind}", "definitions": definitions})


@pytest.mark.parametrize("name, kind", [("template", "WorkflowTemplate"), ("cron", "CronWorkflow")])
def test_argo_files_validate_against_the_argo_schema(name, kind):
    validator = strict_validator(kind)
    document = load(name)
    assert document["kind"] == kind
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
              for error in validator.iter_errors(document)]
    assert not errors, "\n".join(errors)
    # The check has teeth: a misspelt field and a wrong type are caught.
    document["spec"]["retryStrategyy"] = {}
    assert not validator.is_valid(document)


def test_the_schema_refuses_a_misplaced_field_in_a_step():
    template = load("template")
    template["spec"]["templates"][1]["container"]["gpu"] = 1
    assert not strict_validator("WorkflowTemplate").is_valid(template)


def test_parameters_and_defaults_are_the_kfp_pipelines():
    defaults = presets.pipeline_parameters()
    argo = {parameter["name"]: parameter["value"] for parameter in load("template")["spec"]["arguments"]["parameters"]}
    assert argo.pop("artifact_prefix") == "kdflow"
    assert list(argo) == list(defaults)
    for name, text in argo.items():
        assert isinstance(text, str), name  # Argo parameters are strings
        assert presets.parse_value(name, text, defaults[name]) == defaults[name], name


def test_steps_images_gpus_and_retries_follow_the_kfp_pipeline():
    kfp = next(yaml.safe_load_all(KFP_YAML.read_text()))
    executors = kfp["deploymentSpec"]["executors"]
    spec = load("template")["spec"]
    templates = {template["name"]: template for template in spec["templates"]}
    steps = [task["name"] for task in templates[spec["entrypoint"]]["dag"]["tasks"]]
    assert set(steps) == {name.removeprefix("exec-") for name in executors}
    for step in steps:
        executor, template = executors[f"exec-{step}"]["container"], templates[step]
        assert template["container"]["image"] == executor["image"], step
        function = executor["args"][executor["args"].index("--function_to_execute") + 1]
        assert template["container"]["command"] == ["python3", "-m", f"kdflow.components.{function}.task"]
        gpus = template["container"].get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if "accelerator" in executor.get("resources", {}):
            assert gpus == "1", step
            assert template["retryStrategy"]["limit"] == "2" and template["retryStrategy"]["retryPolicy"] == "Always"
        else:
            assert gpus is None and "retryStrategy" not in template, step
        # Compiled without scheduling options: Kubernetes places the pods as it likes (tests/test_scheduling.py). The
        # GPU steps' one variable is the run's name, from the workflow's label on the pod (experiment tracking).
        assert not {"nodeSelector", "tolerations"} & set(template), step
        assert template["container"].get("env", []) == ([{"name": "KDFLOW_RUN_NAME", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.labels['workflows.argoproj.io/workflow']"}}}] if gpus else []), step
        assert set(template["container"].get("resources", {})) <= {"limits"}, step
        for artifact in template.get("outputs", {}).get("artifacts", []):
            # Key-only: bucket and credentials come from the artifact repository, never from the template.
            assert set(artifact["gcs"]) == {"key"}, step
            assert artifact["gcs"]["key"].startswith("{{workflow.parameters.artifact_prefix}}/{{workflow.name}}/")
    assert "Secret" not in COMMITTED["template"].read_text() and "secret" not in COMMITTED["template"].read_text()


def test_cron_runs_the_template_weekly_one_run_at_a_time():
    spec = load("cron")["spec"]
    assert spec["schedules"] == [WEEKLY]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["workflowSpec"]["workflowTemplateRef"]["name"] == load("template")["metadata"]["name"]
    (data_version,) = spec["workflowSpec"]["arguments"]["parameters"]
    assert data_version == {"name": "data_version", "value": "{{workflow.scheduledTime}}"}
    assert data_version["name"] in presets.pipeline_parameters()


@pytest.mark.parametrize("options, needle", [
    (("--cron", "0 0 3 * * *"), "has 6 fields: Argo cron has five"),
    (("--cron", "weekly"), "has 1 fields"),
    (("--cron", "99 99 99 99 99"), "'99' is not a valid minute field"),
    (("--gcp-key-secret", "kdflow-gcp-key"), "--gcp-key-secret is for the KFP target"),
    (("--gcp-key-secret", "GCP_key"), "--gcp-key-secret 'GCP_key' is not a valid Kubernetes name"),
    (("--teacher-shards", "2"), "--teacher-shards is for the KFP target"),
])
def test_bad_argo_options_are_refused_in_one_sentence(tmp_path, options, needle):
    result = compile_argo(tmp_path / "out.yaml", *options)
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.yaml").exists()


@pytest.mark.parametrize("cron, needle", [
    ("{{x}} 3 * * 0", "'{{x}}' is not a valid minute field"),
    ("0 24 * * 0", "'24' is not a valid hour field"),
    ("0 3 0 * *", "'0' is not a valid day of month field"),
    ("0 3 * 13 *", "'13' is not a valid month field"),
    ("0 3 * * 7", "'7' is not a valid day of week field"),
    ("0 3 * * */0", "'*/0' is not a valid day of week field"),
])
def test_argo_crons_are_checked_field_by_field(cron, needle):
    from kdflow.pipelines.targets import argo

    with pytest.raises(presets.KdflowInputError, match="e.g. '0 3 \\* \\* 0'") as refused:
        argo.cron_workflow(cron)
    assert needle in str(refused.value)


@pytest.mark.parametrize("cron", ["0 3 * * 0", "*/15 9-17 ? * MON-FRI", "0 0 1 jan,jul *", " 30 4 * * 1-5 "])
def test_five_field_argo_crons_pass(cron):
    from kdflow.pipelines.targets import argo

    assert argo.cron_workflow(cron)["spec"]["schedules"] == [" ".join(cron.split())]


def test_a_condition_the_target_cannot_translate_is_refused():
    from kfp import dsl

    from kdflow.components.data_prep.component import data_prep
    from kdflow.components.teacher_check.component import teacher_check
    from kdflow.pipelines.targets import argo

    defaults = presets.pipeline_parameters()

    @dsl.pipeline(name="numeric-condition")
    def pipeline(epochs: float = 2.0):
        data = data_prep(**{name: defaults[name] for name in data_prep.component_spec.inputs}).outputs["data"]
        with dsl.If(epochs > 1.0):  # Argo parameters are strings: a number comparison would compare text
            teacher_check(data=data, teacher="a-teacher")

    with pytest.raises(ValueError, match="strings and booleans only"):
        argo.workflow_template(pipeline)


def test_a_parallel_for_is_refused_by_name():
    from kdflow.pipelines.targets import argo
    from kdflow.pipelines.distillation import build_pipeline
    from kdflow.pipelines.platform import Platform

    with pytest.raises(presets.KdflowInputError, match="cannot translate the dsl.ParallelFor"):
        argo.workflow_template(build_pipeline(Platform(teacher_shards=2)))


def test_kubernetes_settings_the_target_cannot_translate_are_refused():
    from kdflow.pipelines.distillation import build_pipeline
    from kdflow.pipelines.platform import Platform
    from kdflow.pipelines.targets import argo

    # compile_pipeline refuses --gcp-key-secret first; the translation itself must not drop the mounted secret either.
    with pytest.raises(ValueError, match=r"cannot translate the Kubernetes settings \['secretAsVolume'\]"):
        argo.workflow_template(build_pipeline(Platform(gcp_key_secret="kdflow-gcp-key")))


def test_nproc_gives_distill_that_many_gpus_and_processes(tmp_path):
    assert compile_argo(tmp_path / "out.yaml", "--nproc", "2").returncode == 0
    spec = yaml.safe_load((tmp_path / "out.yaml").read_text())["spec"]
    templates = {template["name"]: template for template in spec["templates"]}
    tasks = {task["name"]: task for task in templates[spec["entrypoint"]]["dag"]["tasks"]}
    for name in ("distill", "distill-2"):
        container = templates[name]["container"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2", name
        assert container["args"][container["args"].index("--processes") + 1] == "{{inputs.parameters.processes}}"
        # The task starts torchrun itself when given --processes 2.
        assert {"name": "processes", "value": "2"} in tasks[name]["arguments"]["parameters"], name
    assert templates["teacher-eval"]["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


# -- the WorkflowTemplate's steps, run here ------------------------------------------------------------------------

SIMPLE_TAG = re.compile(r"\{\{([\w.-]+)\}\}")


def evaluate(expression: str, scope: dict):
    """A stand-in for Argo's expression language, for the forms the generator writes: ==, !=, !(...), &&, a ? b : c,
    indexing into workflow.parameters and tasks[...].outputs.parameters, and string literals."""
    condition, question, choices = expression.partition(" ? ")
    if question:
        chosen, _, other = choices.partition(" : ")
        return evaluate(chosen if evaluate(condition, scope) else other, scope)
    return eval(expression.replace("&&", " and ").replace("!(", " not ("), {"__builtins__": {}}, scope)  # noqa: S307


class LocalArgo:
    """Runs the tasks of a WorkflowTemplate's DAG here as an Argo controller would, each as its container's exact
    command line (the image's python3 is this interpreter), with a local folder in place of every Argo path and of
    the artifact repository."""

    def __init__(self, template: dict, parameters: dict, root: Path):
        spec = template["spec"]
        self.templates = {item["name"]: item for item in spec["templates"]}
        self.tasks = {task["name"]: task for task in self.templates[spec["entrypoint"]]["dag"]["tasks"]}
        given = {name: argo_text(value) for name, value in parameters.items()}
        self.parameters = {item["name"]: given.get(item["name"], item["value"])
                           for item in spec["arguments"]["parameters"]}
        self.root = root
        self.variables = {f"workflow.parameters.{name}": value for name, value in self.parameters.items()}
        self.variables.update({"workflow.name": "kdflow-test", "workflow.uid": "argo-test-run"})
        self.status, self.repository, self.commands = {}, {}, {}
        self.scope = {"workflow": SimpleNamespace(parameters=self.parameters), "tasks": {}}

    def substitute(self, text: str, variables: dict) -> str:
        if text.startswith("{{="):
            value = evaluate(text[3:-2], self.scope)
            return value if isinstance(value, str) else str(value).lower()
        return SIMPLE_TAG.sub(lambda match: variables[match.group(1)], text)

    def run(self, name: str) -> str:
        task = self.tasks[name]
        for dependency in task.get("depends", "").split(" && ") if "depends" in task else []:
            assert self.status.get(dependency) in ("Succeeded", "Skipped"), f"{name} runs before {dependency}"
        if "when" in task and self.substitute(task["when"], self.variables) != "true":
            self.status[name] = "Skipped"
            return self.status[name]
        arguments = task["arguments"]
        inputs = {"inputs.parameters." + item["name"]: self.substitute(item["value"], self.variables)
                  for item in arguments.get("parameters", [])}
        template = self.templates[task["template"]]
        folders = {}  # Argo path -> local folder
        for artifact in arguments.get("artifacts", []):
            declared = next(item for item in template["inputs"]["artifacts"] if item["name"] == artifact["name"])
            folders[declared["path"]] = self.variables[artifact["from"][2:-2]]
        for artifact in template["inputs"].get("artifacts", []):
            if "gcs" in artifact:  # loaded by key; an optional one that nobody stored is left out
                stored = self.repository.get(self.substitute(artifact["gcs"]["key"], self.variables))
                assert stored or artifact.get("optional"), artifact["name"]
                folders[artifact["path"]] = stored or str(self.root / "missing" / artifact["name"])
        outputs_dir = self.root / name / "outputs"
        outputs_dir.mkdir(parents=True)  # the emptyDir volume
        for volume in template["container"]["volumeMounts"]:
            folders[volume["mountPath"]] = str(outputs_dir)
        container = template["container"]
        assert container["command"][0] == "python3"
        command = [sys.executable, *container["command"][1:],
                   *(local_path(self.substitute(argument, inputs), folders) for argument in container["args"])]
        self.commands[name] = command
        subprocess.run(command, check=True, cwd=self.root, capture_output=True)
        produced = {}
        for artifact in template["outputs"].get("artifacts", []):
            path = local_path(artifact["path"], folders)
            self.variables[f"tasks.{name}.outputs.artifacts.{artifact['name']}"] = path
            self.repository[self.substitute(artifact["gcs"]["key"], self.variables)] = path
        for parameter in template["outputs"].get("parameters", []):
            produced[parameter["name"]] = Path(local_path(parameter["valueFrom"]["path"], folders)).read_text().strip()
        self.scope["tasks"][name] = SimpleNamespace(outputs=SimpleNamespace(parameters=produced))
        self.status[name] = "Succeeded"
        return self.status[name]


def argo_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def local_path(argument: str, folders: dict) -> str:
    for argo_path, folder in folders.items():
        if argument == argo_path or argument.startswith(argo_path + "/"):
            return folder + argument[len(argo_path):]
    return argument


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("argo")
    parameters = presets.resolve("smoke", {"publish_uri": str(root / "published")})
    argo = LocalArgo(load("template"), parameters, root)
    for name in argo.tasks:
        argo.run(name)
    return argo


@pytest.mark.slow
def test_the_templates_commands_run_the_smoke_preset_to_a_good_student(smoke_run):
    # The baselines (distill-2 to -4, their student-eval tasks and the reports with them) are off in the smoke preset.
    baselines = ["distill-2", "distill-3", "distill-4", "student-eval-2", "report-2", "student-eval-3",
                 "student-eval-4", "report-3"]
    assert smoke_run.status == {
        "data-prep": "Succeeded", "teacher-check": "Skipped", "teacher-train": "Succeeded",
        "teacher-eval": "Succeeded", "distill": "Succeeded", "onnx-export": "Succeeded", "student-eval": "Succeeded",
        "publish": "Succeeded", "deploy": "Skipped", "report": "Succeeded", **dict.fromkeys(baselines, "Skipped")}
    assert list(smoke_run.status) == list(smoke_run.tasks)  # in the template's order
    assert "<html" in Path(smoke_run.variables["tasks.report.outputs.artifacts.quality_report"]).read_text().lower()
    student = json.loads(Path(smoke_run.variables["tasks.student-eval.outputs.artifacts.student_metrics"]).read_text())
    assert student["accuracy"] >= 0.90
    assert smoke_run.scope["tasks"]["student-eval"].outputs.parameters["passed"] == "true"
    # The trained teacher reached teacher_eval and distill through the artifact repository, by key.
    trained = smoke_run.variables["tasks.teacher-train.outputs.artifacts.teacher_model"]
    assert trained in smoke_run.commands["teacher-eval"] and trained in smoke_run.commands["distill"]
    latest = json.loads((Path(smoke_run.parameters["publish_uri"]) / "kdflow-student" / "latest.json").read_text())
    assert latest["version"] == "argo-test-run"  # model_version empty: the workflow's uid, as KFP's run id


@pytest.mark.slow
def test_a_given_teacher_is_checked_instead_of_trained(smoke_run, tmp_path):
    trained = smoke_run.variables["tasks.teacher-train.outputs.artifacts.teacher_model"]
    argo = LocalArgo(load("template"), {**smoke_run.parameters, "train_teacher": False, "teacher": trained}, tmp_path)
    argo.status["data-prep"] = "Succeeded"
    data = "tasks.data-prep.outputs.artifacts.data"
    argo.variables[data] = smoke_run.variables[data]
    assert argo.run("teacher-train") == "Skipped"
    assert argo.run("teacher-check") == "Succeeded"
    teacher_eval = argo.tasks["teacher-eval"]["arguments"]["parameters"]
    assert argo.substitute(next(item["value"] for item in teacher_eval if item["name"] == "teacher"), {}) == trained


def test_publish_is_skipped_without_a_publish_uri_or_a_passed_gate(tmp_path):
    argo = LocalArgo(load("template"), presets.resolve("smoke", {}), tmp_path)
    publish = argo.tasks["publish"]["when"]
    argo.scope["tasks"]["student-eval"] = SimpleNamespace(outputs=SimpleNamespace(parameters={"passed": "true"}))
    assert argo.substitute(publish, {}) == "false"  # the smoke preset publishes nowhere
    argo.parameters["publish_uri"] = "gs://bucket/models"
    assert argo.substitute(publish, {}) == "true"
    argo.scope["tasks"]["student-eval"].outputs.parameters["passed"] = "false"
    assert argo.substitute(publish, {}) == "false"


def test_deploy_runs_only_when_asked_after_a_promoted_publish(tmp_path):
    argo = LocalArgo(load("template"), presets.resolve("smoke", {"publish_uri": "gs://bucket/models"}), tmp_path)
    deploy = argo.tasks["deploy"]["when"]
    argo.scope["tasks"]["student-eval"] = SimpleNamespace(outputs=SimpleNamespace(parameters={"passed": "true"}))
    # Not asked: false without looking at publish's outputs, which a skipped publish does not have.
    assert argo.substitute(deploy, {}) == "false"
    argo.parameters["deploy"] = "true"
    argo.scope["tasks"]["publish"] = SimpleNamespace(outputs=SimpleNamespace(parameters={"promoted": "true"}))
    assert argo.substitute(deploy, {}) == "true"
    argo.scope["tasks"]["publish"].outputs.parameters["promoted"] = "false"
    assert argo.substitute(deploy, {}) == "false"
    assert "publish" in argo.tasks["deploy"]["depends"].split(" && ")
