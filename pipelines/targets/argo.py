"""The pipeline as Argo Workflows resources, for clusters that run Argo Workflows without Kubeflow Pipelines.

    kdflow compile --target argo --output distillation-argo.yaml                            # WorkflowTemplate
    kdflow compile --target argo --cron "0 3 * * 0" --output distillation-argo-cron.yaml    # CronWorkflow

Nothing here restates the pipeline. The compiled KFP pipeline (the IR of `distillation_pipeline`) gives the
parameters and their defaults, the tasks and what each depends on, the conditions of its dsl.If/Else groups, the
images, the GPU requests and the retries; each task's command line is `python -m kdflow.components.STEP.task` with a
flag `--NAME` for each of its component's inputs and outputs (kdflow.components.common.settings). The pipeline's
Kubernetes settings (kfp-kubernetes: node selectors, tolerations, secrets as environment variables) give each step's
nodeSelector, tolerations and env; its CPU, memory and GPU requests and limits are in the IR. A returned value
that is the URI of an output artifact (`returned(uri_of=...)`) becomes a load of that artifact by key in the steps
that read it, since an Argo artifact has no URI a step could open. The groups are flattened: every
task of a group carries the group's condition as its `when`, and a dsl.OneOf becomes a choice on the same
conditions.

Artifacts go through the namespace's Argo artifact repository, which must be GCS. They are key-only (bucket and
settings come from the repository's configuration, credentials from the pod's service account, e.g. through GKE
Workload Identity; nothing secret is in the template), under `ARTIFACT_PREFIX/WORKFLOW_NAME/TASK/`. The steps' own
S3 credentials (`--s3-secret`) come from a Kubernetes secret by name, as environment variables.
"""

import re
from dataclasses import dataclass, field, fields
from importlib import import_module
from pathlib import Path

import yaml
from google.protobuf import json_format

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import flag

from ..cluster import ARGO_CRON_FIELDS, check_cron_fields
from ..distillation import DATA_VERSION, build_pipeline, distillation_pipeline
from ..platform import Platform

API_VERSION = "argoproj.io/v1alpha1"
# The one workflow parameter that is not a pipeline parameter: where in the artifact repository a run's files go.
ARTIFACT_PREFIX = "artifact_prefix"
ARTIFACT_PREFIX_DEFAULT = "kdflow"
INPUTS_DIR = "/kdflow/inputs"
OUTPUTS_DIR = "/kdflow/outputs"  # an emptyDir volume, so a step can write files and folders under it
OUTPUTS_VOLUME = "outputs"
PYTHON = "python3"  # the interpreter of the kdflow images, as in the KFP executors
# A KFP executor's CPU and memory settings, as Kubernetes ResourceRequirements name them.
RESOURCES = {"requests": {"cpu": "resourceCpuRequest", "memory": "resourceMemoryRequest"},
             "limits": {"cpu": "resourceCpuLimit", "memory": "resourceMemoryLimit"}}
# KFP's run placeholders, as component defaults hold them, and the Argo variables that mean the same.
RUN_PLACEHOLDERS = {"{{$.pipeline_job_uuid}}": "{{workflow.uid}}", "{{$.pipeline_job_name}}": "{{workflow.name}}"}
# The kfp-kubernetes settings this target translates (kdflow.pipelines.platform sets no others for Argo).
KUBERNETES_SETTINGS = {"nodeSelector", "tolerations", "secretAsEnv", "fieldPathAsEnv"}

CHANNEL = re.compile(r"inputs\.parameter_values\['pipelinechannel--([^']+)'\]")
STRING_LITERAL = re.compile(r"'[^']*'")
# What a KFP condition may hold besides channels and string literals: comparisons of strings and booleans.
CONDITION_TOKENS = re.compile(r"^(\s|==|!=|!|&&|\|\||\(|\)|true|false)*$")
WORKFLOW_PARAMETER = re.compile(r"^workflow\.parameters\['(\w+)'\]$")


def compile_pipeline(platform: Platform, output: str, cron: str | None = None) -> str:
    """Writes the pipeline built for `platform` to `output` as a WorkflowTemplate, or with `cron` (five fields) as
    a CronWorkflow that runs it; returns the kind written."""
    if platform.gcp_key_secret:
        raise KdflowInputError(
            "--gcp-key-secret is for the KFP target: on Argo, steps and the GCS artifact repository take their "
            "credentials from the workflow's service account (e.g. argo submit --serviceaccount NAME)."
        )
    if platform.teacher_shards > 1:
        raise KdflowInputError(
            "--teacher-shards is for the KFP target: Argo has no step that collects the artifacts of a loop's "
            "tasks, which merging the shards needs; compile for Argo without it (teacher_eval computes the logits)."
        )
    pipeline = build_pipeline(platform)
    document = cron_workflow(cron, pipeline) if cron else workflow_template(pipeline)
    write(document, output)
    return document["kind"]


def workflow_template(pipeline=distillation_pipeline) -> dict:
    """The pipeline as an Argo WorkflowTemplate named like the pipeline."""
    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    name = spec["pipelineInfo"]["name"]
    platform = json_format.MessageToDict(pipeline.platform_spec)
    kubernetes = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowTemplate",
        "metadata": {"name": name, "annotations": {
            "workflows.argoproj.io/description": pipeline.description or name}},
        "spec": WorkflowBuilder(spec, list(pipeline.component_spec.inputs), kubernetes).workflow_spec(),
    }


def cron_workflow(schedule: str, pipeline=distillation_pipeline) -> dict:
    """A CronWorkflow that runs the WorkflowTemplate on `schedule` (five cron fields), one run at a time."""
    fields = schedule.split()
    if len(fields) != 5:
        raise KdflowInputError(
            f"--cron {schedule!r} has {len(fields)} fields: Argo cron has five (minute hour day-of-month month "
            "day-of-week, no seconds field as in KFP), e.g. --cron '0 3 * * 0' for Sundays at 03:00 UTC."
        )
    check_cron_fields(schedule, ARGO_CRON_FIELDS, "0 3 * * 0")
    name = pipeline.pipeline_spec.pipeline_info.name
    return {
        "apiVersion": API_VERSION,
        "kind": "CronWorkflow",
        "metadata": {"name": name},
        "spec": {
            "schedules": [" ".join(fields)],
            "timezone": "UTC",
            "concurrencyPolicy": "Forbid",  # a retraining run never overlaps the previous one
            "workflowSpec": {
                "workflowTemplateRef": {"name": name},
                # As a KFP recurring run does (kdflow schedule): each run records the data it read by its time.
                "arguments": {"parameters": [{"name": DATA_VERSION, "value": "{{workflow.scheduledTime}}"}]},
            },
        },
    }


def write(document: dict, path: str) -> None:
    """`document` as YAML, in the order it was built."""
    header = "# Generated by `kdflow compile --target argo` from the KFP pipeline; regenerate it, do not edit it.\n"
    Path(path).write_text(header + yaml.safe_dump(document, sort_keys=False, width=120))


@dataclass
class Dag:
    """A DAG of the IR, the root or a condition group, and how it was entered."""

    component: dict
    parent: "Dag | None" = None
    task: dict | None = None  # the task of the parent DAG that runs this one

    def tasks(self) -> dict:
        return self.component["dag"]["tasks"]


@dataclass
class Step:
    """A task that runs a container, with the conditions and dependencies of the groups around it."""

    name: str
    task: dict
    component: dict
    dag: Dag  # the DAG the task is in
    # The tasks of the groups around it that have a condition, outermost first, each with its DAG.
    conditions: list[tuple[dict, Dag]] = field(default_factory=list)
    dependencies: list[str] = field(default_factory=list)  # names of tasks or groups


class WorkflowBuilder:
    """Translates a compiled KFP pipeline (its IR, as a dict) into an Argo WorkflowSpec."""

    def __init__(self, spec: dict, parameter_order: list[str], kubernetes: dict):
        self.spec = spec
        self.parameter_order = parameter_order  # the pipeline function's; the IR's maps have no order
        self.kubernetes = kubernetes  # the kfp-kubernetes settings of each executor, by executor label
        self.steps: dict[str, Step] = {}
        self.groups: dict[str, Dag] = {}
        self.collect(Dag(spec["root"]), [], [])

    def collect(self, dag: Dag, conditions: list[tuple[dict, Dag]], dependencies: list[str]) -> None:
        for name, task in dag.tasks().items():
            if "parameterIterator" in task or "artifactIterator" in task:
                raise KdflowInputError(f"the Argo target cannot translate the dsl.ParallelFor of {name}: compile the "
                                       "pipeline for Argo without one.")
            component = self.spec["components"][task["componentRef"]["name"]]
            inner_conditions = conditions + ([(task, dag)] if "triggerPolicy" in task else [])
            inner_dependencies = dependencies + task.get("dependentTasks", [])
            if "dag" in component:
                self.groups[name] = Dag(component, dag, task)
                self.collect(self.groups[name], inner_conditions, inner_dependencies)
            else:
                self.steps[name] = Step(name, task, component, dag, inner_conditions, inner_dependencies)

    # -- the workflow -----------------------------------------------------------------------------------------

    def workflow_spec(self) -> dict:
        root = self.spec["root"]
        definitions = root["inputDefinitions"]["parameters"]
        parameters = [{"name": name, "value": argo_value(definitions[name].get("defaultValue"),
                                                         definitions[name]["parameterType"])}
                      for name in sorted(definitions, key=self.parameter_order.index)]
        parameters.append({"name": ARTIFACT_PREFIX, "value": ARTIFACT_PREFIX_DEFAULT,
                           "description": "Key prefix of this pipeline's artifacts in the GCS artifact repository."})
        entrypoint = self.spec["pipelineInfo"]["name"]
        ordered = self.in_order()
        inputs = {step.name: self.parameter_values(step) for step in ordered}
        return {
            "entrypoint": entrypoint,
            "arguments": {"parameters": parameters},
            "volumes": [{"name": OUTPUTS_VOLUME, "emptyDir": {}}],
            "templates": [{"name": entrypoint, "dag": {"tasks": [self.dag_task(step, inputs[step.name][0])
                                                                 for step in ordered]}}]
                         + [self.container_template(step, inputs[step.name][1]) for step in ordered],
        }

    def in_order(self) -> list[Step]:
        """The steps in dependency order, ties by name (the IR's maps have no order)."""
        ordered, done = [], set()
        while len(ordered) < len(self.steps):
            ready = min(name for name, step in self.steps.items()
                        if name not in done and set(self.leaf_dependencies(step)) <= done)
            ordered.append(self.steps[ready])
            done.add(ready)
        return ordered

    def leaf_dependencies(self, step: Step) -> list[str]:
        return sorted({leaf for name in step.dependencies for leaf in self.leaves(name)})

    def leaves(self, name: str) -> list[str]:
        if name in self.steps:
            return [name]
        return [leaf for inner in self.groups[name].tasks() for leaf in self.leaves(inner)]

    def parameter_values(self, step: Step) -> tuple[dict, list]:
        """The Argo expression of each input parameter, and the artifacts the step loads by key to have them."""
        needed_artifacts = []
        parameters = step.component.get("inputDefinitions", {}).get("parameters", {})
        values = {name: self.parameter_value(step, name, needed_artifacts)
                  for name in self.in_signature_order(parameters, step.component)}
        return values, needed_artifacts

    def dag_task(self, step: Step, values: dict) -> dict:
        parameters = [{"name": name, "value": tag(value)} for name, value in values.items()]
        sources = step.task.get("inputs", {}).get("artifacts", {})
        artifacts = [{"name": name, "from": "{{tasks.%s.outputs.artifacts.%s}}" % self.producer_of_artifact(
            sources[name], step.dag)} for name in self.in_signature_order(sources, step.component)]
        task = {"name": step.name, "template": step.name, "arguments": {}}
        if parameters:
            task["arguments"]["parameters"] = parameters
        if artifacts:
            task["arguments"]["artifacts"] = artifacts
        if step.dependencies:
            # A bare name is satisfied by a task that succeeded or was skipped by its condition.
            task["depends"] = " && ".join(self.leaf_dependencies(step))
        if step.conditions:
            conditions = [self.condition(*group) for group in step.conditions]
            task["when"] = "{{=%s}}" % (conditions[0] if len(conditions) == 1 else
                                        " && ".join(f"({condition})" for condition in conditions))
        return task

    def container_template(self, step: Step, needed_artifacts: list) -> dict:
        outputs = step.component.get("outputDefinitions", {})
        input_parameters = self.in_signature_order(step.component.get("inputDefinitions", {}).get("parameters", {}),
                                                   step.component)
        # Only the artifacts this task is given: an optional one left out has no flag (one template per task).
        input_artifacts = self.in_signature_order(step.task.get("inputs", {}).get("artifacts", {}), step.component)
        arguments = []
        for name in self.in_signature_order([*input_artifacts, *input_parameters], step.component):
            value = "{{inputs.parameters.%s}}" % name if name in input_parameters else f"{INPUTS_DIR}/{name}"
            arguments += [flag(name), value]
        uris = self.uris_of_artifacts(step.component)
        written = [name for name in self.in_signature_order([*outputs.get("artifacts", {}),
                                                             *outputs.get("parameters", {})], step.component)
                   if name not in uris]
        for name in written:
            arguments += [flag(name), f"{OUTPUTS_DIR}/{name}"]
        executor = self.spec["deploymentSpec"]["executors"][step.component["executorLabel"]]["container"]
        kubernetes = self.kubernetes.get(step.component["executorLabel"], {})
        untranslated = sorted(set(kubernetes) - KUBERNETES_SETTINGS)
        if untranslated:  # rather than a template that silently drops them
            raise ValueError(f"the Argo target cannot translate the Kubernetes settings {untranslated} of {step.name}")
        template = {
            "name": step.name,
            "inputs": {"parameters": [{"name": name} for name in input_parameters]},
            "outputs": {},
            "container": {
                "image": executor["image"],
                "command": [PYTHON, "-m", f"kdflow.components.{self.step_folder(step.component)}.task"],
                "args": arguments,
                "volumeMounts": [{"name": OUTPUTS_VOLUME, "mountPath": OUTPUTS_DIR}],
            },
        }
        artifacts = [{"name": name, "path": f"{INPUTS_DIR}/{name}"} for name in input_artifacts] + needed_artifacts
        if artifacts:
            template["inputs"]["artifacts"] = artifacts
        output_artifacts = [{"name": name, "path": f"{OUTPUTS_DIR}/{name}",
                             "gcs": {"key": artifact_key(step.name, name)}}
                            for name in written if name in outputs.get("artifacts", {})]
        output_parameters = [{"name": name, "valueFrom": {"path": f"{OUTPUTS_DIR}/{name}"}}
                             for name in written if name in outputs.get("parameters", {})]
        if output_artifacts:
            template["outputs"]["artifacts"] = output_artifacts
        if output_parameters:
            template["outputs"]["parameters"] = output_parameters
        environment = executor.get("env", []) + [
            {"name": variable["envVar"], "valueFrom": {"secretKeyRef": {"name": secret["secretName"],
                                                                        "key": variable["secretKey"]}}}
            for secret in kubernetes.get("secretAsEnv", []) for variable in secret["keyToEnv"]] + [
            {"name": field["name"], "valueFrom": {"fieldRef": {"fieldPath": field["fieldPath"]}}}
            for field in kubernetes.get("fieldPathAsEnv", [])]
        if environment:
            template["container"]["env"] = environment
        resources = resource_requirements(executor.get("resources", {}))
        if resources:
            template["container"]["resources"] = resources
        if "nodeSelector" in kubernetes:
            template["nodeSelector"] = kubernetes["nodeSelector"]["labels"]
        if "tolerations" in kubernetes:
            template["tolerations"] = kubernetes["tolerations"]
        retry = step.task.get("retryPolicy")
        if retry:
            # KFP retries a task whatever ended it; a preempted node is an Argo error, not a failure. Argo writes
            # the counts as int-or-string, the schema as strings.
            template["retryStrategy"] = {"limit": str(retry["maxRetryCount"]), "retryPolicy": "Always", "backoff": {
                "duration": retry["backoffDuration"], "factor": f"{retry['backoffFactor']:g}",
                "maxDuration": retry["backoffMaxDuration"]}}
        return template

    # -- where values come from -------------------------------------------------------------------------------

    def parameter_value(self, step: Step, name: str, needed_artifacts: list) -> str:
        """The Argo expression of a step's input parameter; one the pipeline leaves unset takes its default."""
        definition = step.component["inputDefinitions"]["parameters"][name]
        spec = step.task.get("inputs", {}).get("parameters", {}).get(name)
        if spec is None or "runtimeValue" in spec:  # the component's default, or a constant the pipeline gives
            value = spec["runtimeValue"]["constant"] if spec else definition.get("defaultValue")
            return quoted(argo_value(value, definition["parameterType"]))
        return self.resolve(spec, step.dag, needed_artifacts)

    def resolve(self, spec: dict, dag: Dag, needed_artifacts: list) -> str:
        if "componentInputParameter" in spec:
            name = spec["componentInputParameter"]
            if dag.parent is None:
                return f"workflow.parameters['{name}']"
            return self.resolve(dag.task["inputs"]["parameters"][name], dag.parent, needed_artifacts)
        if "taskOutputParameter" in spec:
            producer = spec["taskOutputParameter"]["producerTask"]
            return self.output_parameter(producer, spec["taskOutputParameter"]["outputParameterKey"], needed_artifacts)
        raise ValueError(f"the Argo target cannot translate the parameter source {spec}")

    def output_parameter(self, producer: str, key: str, needed_artifacts: list) -> str:
        if producer in self.groups:
            group = self.groups[producer]
            source = group.component["dag"]["outputs"]["parameters"][key]
            if "valueFromParameter" in source:
                inner = source["valueFromParameter"]
                return self.output_parameter(inner["producerSubtask"], inner["outputParameterKey"], needed_artifacts)
            # dsl.OneOf: the value of the first branch whose condition holds (the last one is the else).
            selectors = source["valueFromOneof"]["parameterSelectors"]
            choice = self.output_parameter(selectors[-1]["producerSubtask"], selectors[-1]["outputParameterKey"],
                                           needed_artifacts)
            for selector in reversed(selectors[:-1]):
                branch = selector["producerSubtask"]
                value = self.output_parameter(branch, selector["outputParameterKey"], needed_artifacts)
                choice = f"{self.condition(group.tasks()[branch], group)} ? {value} : {choice}"
            return choice
        uris = self.uris_of_artifacts(self.steps[producer].component)
        if key in uris:
            # The consumer loads the artifact itself, by key: a reference to a task a condition skipped would fail.
            artifact = uris[key]
            path = f"{INPUTS_DIR}/{producer}-{artifact}"
            needed_artifacts.append({"name": f"{producer}-{artifact}", "path": path, "optional": True,
                                     "gcs": {"key": artifact_key(producer, artifact)}})
            return quoted(path)
        return f"tasks['{producer}'].outputs.parameters['{key}']"

    def producer_of_artifact(self, spec: dict, dag: Dag) -> tuple[str, str]:
        if "componentInputArtifact" in spec:
            outer = dag.task["inputs"]["artifacts"][spec["componentInputArtifact"]]
            return self.producer_of_artifact(outer, dag.parent)
        output = spec["taskOutputArtifact"]
        return output["producerTask"], output["outputArtifactKey"]

    def condition(self, task: dict, dag: Dag) -> str:
        """A KFP trigger condition (CEL over the group's inputs) as an Argo expression over strings."""
        condition = task["triggerPolicy"]["condition"]
        leftover = STRING_LITERAL.sub("", CHANNEL.sub("", condition))
        if not CONDITION_TOKENS.match(leftover):
            raise ValueError(f"the Argo target translates conditions on strings and booleans only, not {condition!r}")
        translated, position = [], 0
        # Argo parameters are strings, so the booleans of a condition are compared as 'true' and 'false'.
        for match in re.finditer(rf"{CHANNEL.pattern}|{STRING_LITERAL.pattern}|\btrue\b|\bfalse\b", condition):
            translated.append(condition[position:match.start()])
            if match.group(1):
                translated.append(self.resolve(task["inputs"]["parameters"][f"pipelinechannel--{match.group(1)}"],
                                               dag, []))
            elif match.group(0) in ("true", "false"):
                translated.append(f"'{match.group(0)}'")
            else:
                translated.append(match.group(0))
            position = match.end()
        return "".join(translated) + condition[position:]

    def step_folder(self, component: dict) -> str:
        """The step's folder under kdflow.components: the name of the function the KFP executor runs."""
        arguments = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]["args"]
        return arguments[arguments.index("--function_to_execute") + 1]

    def component_module(self, component: dict):
        return import_module(f"kdflow.components.{self.step_folder(component)}.component")

    def uris_of_artifacts(self, component: dict) -> dict[str, str]:
        """Returned value -> the output artifact whose URI it is, as the step's settings module declares them."""
        result = import_module(f"kdflow.components.{self.step_folder(component)}.settings").Result
        return {item.name: item.metadata["uri_of"] for item in fields(result) if item.metadata["uri_of"]} if result else {}

    def in_signature_order(self, names, component: dict) -> list[str]:
        """`names` in the order of the component function's inputs and outputs."""
        python = getattr(self.component_module(component), self.step_folder(component)).component_spec
        order = [*python.inputs, *(python.outputs or {})]
        return sorted(names, key=order.index)


def resource_requirements(resources: dict) -> dict:
    """A KFP executor's resources as the container's Kubernetes ResourceRequirements; empty when it sets none."""
    requirements = {kind: {name: resources[setting] for name, setting in settings.items() if setting in resources}
                    for kind, settings in RESOURCES.items()}
    accelerator = resources.get("accelerator")
    if accelerator:
        requirements["limits"][accelerator["resourceType"]] = accelerator["resourceCount"]
    return {kind: quantities for kind, quantities in requirements.items() if quantities}


def artifact_key(task: str, artifact: str) -> str:
    # Argo stores a file or a folder as a .tgz unless told otherwise.
    return "{{workflow.parameters.%s}}/{{workflow.name}}/%s/%s.tgz" % (ARTIFACT_PREFIX, task, artifact)


def argo_value(value, parameter_type: str) -> str:
    """A KFP value as Argo writes parameters: a string; booleans as true/false, whole numbers without '.0'."""
    if parameter_type == "BOOLEAN":
        return "true" if value else "false"
    if parameter_type == "NUMBER_INTEGER":
        return str(int(value))
    if parameter_type == "NUMBER_DOUBLE":
        return repr(float(value))
    text = str(value)
    for placeholder, variable in RUN_PLACEHOLDERS.items():
        text = text.replace(placeholder, variable)
    return text


def quoted(text: str) -> str:
    """A string literal of an Argo expression."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def tag(expression: str) -> str:
    """An Argo expression in a field: a plain parameter reference or literal as such, anything else as {{=...}}."""
    reference = WORKFLOW_PARAMETER.match(expression)
    if reference:
        return "{{workflow.parameters.%s}}" % reference.group(1)
    if STRING_LITERAL.fullmatch(expression) and "\\" not in expression:
        return expression[1:-1]
    return "{{=%s}}" % expression
