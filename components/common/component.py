"""The KFP side of a step: its component, checked against the task's declarations, and the body's one call.

    @step_component(settings, base_image=RUNTIME_IMAGE)
    def student_eval(data: Input[Dataset], ..., min_retention: float) -> NamedTuple(...):
        \"\"\"Evaluates the student ...\"\"\"
        from kdflow.components.common.component import run_step
        from kdflow.components.student_eval import task

        return run_step(task, locals())

The signature must be written out (KFP ships the function's source and reads its annotations), so `step_component`
holds it equal to the declarations in the step's settings module (kdflow.components.common.settings): the same
inputs, outputs, settings and returned values, with the same types, and no defaults (those are the pipeline's).
It also writes the docstring's Args and Returns from the declarations' help, which KFP copies into the YAML.
"""

import inspect
import json
from dataclasses import fields, replace

from kfp import dsl
from kfp.dsl.types.type_annotations import is_artifact_wrapped_in_Output

from .settings import is_output


def step_component(declarations, *, base_image: str):
    """`dsl.component` for a step whose settings module (`declarations`) holds `Settings`, `Files` and `Result`."""

    def define(function):
        check_signature(function, declarations)
        function.__doc__ = docstring(inspect.getdoc(function), declarations)
        return dsl.component(base_image=base_image, install_kfp_package=False)(function)

    return define


def declared_fields(declaration) -> list:
    return list(fields(declaration)) if declaration else []


def check_signature(function, declarations) -> None:
    """Raises TypeError unless `function` takes exactly the declared files and settings, with no defaults, and
    returns exactly the declared result, in declaration order."""
    parameters = inspect.signature(function).parameters
    files = declared_fields(declarations.Files)
    expected = [item.name for item in files] + [item.name for item in declared_fields(declarations.Settings)]
    problems = []
    if list(parameters) != expected:
        problems.append(f"takes {list(parameters)}, declared {expected}")
    for item in declared_fields(declarations.Settings):
        parameter = parameters.get(item.name)
        if parameter is not None and (parameter.annotation is not item.type
                                      or parameter.default is not inspect.Parameter.empty):
            problems.append(f"{item.name} must be `{item.name}: {item.type.__name__}` without a default")
    for item in files:
        parameter = parameters.get(item.name)
        if parameter is not None and is_output(item) != is_artifact_wrapped_in_Output(parameter.annotation):
            problems.append(f"{item.name} must be an {'Output' if is_output(item) else 'Input'}[...]")
    returned = list(getattr(inspect.signature(function).return_annotation, "__annotations__", {}))
    declared_result = [item.name for item in declared_fields(declarations.Result)]
    if returned != declared_result:
        problems.append(f"returns {returned}, declared {declared_result}")
    if problems:
        raise TypeError(f"the {function.__name__} component does not match {declarations.__name__}: "
                        + "; ".join(problems))


def docstring(summary: str, declarations) -> str:
    """The component's docstring with Args (inputs, then settings) and Returns (outputs, then returned values)."""
    files = declared_fields(declarations.Files)
    inputs = [item for item in files if not is_output(item)] + declared_fields(declarations.Settings)
    outputs = [item for item in files if is_output(item)] + declared_fields(declarations.Result)
    lines = [summary, "", "Args:"] + [f"    {item.name}: {item.metadata['help']}" for item in inputs]
    if outputs:
        lines += ["", "Returns:"] + [f"    {item.name}: {item.metadata['help']}" for item in outputs]
    return "\n".join(lines)


def path_of(artifact) -> str | list[str]:
    if artifact is None:
        return ""  # an optional input the pipeline did not give
    if isinstance(artifact, list):
        return [item.path for item in artifact]
    return artifact.path


def run_step(task, arguments: dict, **settings):
    """Runs the step's task on the component's arguments (`settings` replace some), logs what it wrote to the KFP
    UI's metrics widgets, and returns its result (with the URIs it names filled in) for KFP's outputs."""
    from . import step

    files = task.Files(**{item.name: path_of(arguments[item.name]) for item in fields(task.Files)})
    result = step.run(task, {**arguments, **settings}, files)
    for item in fields(task.Files):
        if is_output(item):
            log_for_kfp_ui(arguments[item.name])
    if task.Result is None:
        return None
    result = replace(result, **{item.name: arguments[item.metadata["uri_of"]].uri
                                for item in fields(task.Result) if item.metadata["uri_of"]})
    return tuple(getattr(result, item.name) for item in fields(task.Result))  # what KFP's executor takes


def log_for_kfp_ui(artifact) -> None:
    """The task writes metrics as JSON files; the KFP UI reads them from the executor's output, logged here."""
    if isinstance(artifact, dsl.Metrics):
        for name, value in scalars(json.loads(open(artifact.path).read())):
            artifact.log_metric(name, value)
    elif isinstance(artifact, dsl.ClassificationMetrics):
        confusion = json.loads(open(artifact.path).read())
        artifact.log_confusion_matrix(confusion["labels"], confusion["matrix"])


def scalars(values: dict, prefix: str = "") -> list[tuple[str, float]]:
    """The numbers of a nested JSON object, named by their path (`latency_ms.1` -> `latency_ms_1`)."""
    found = []
    for name, value in values.items():
        if isinstance(value, dict):
            found += scalars(value, f"{prefix}{name}_")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((prefix + name, float(value)))
    return found
