"""Named parameter sets for the pipeline, and the checks a parameter set must pass before a run starts."""

import dataclasses
import difflib
from importlib import import_module

from google.protobuf import json_format

from kdflow.components.common.errors import KdflowInputError

from .distillation import build_pipeline, distillation_pipeline
from .platform import Platform

# Steps that run only when a pipeline parameter is true, and so are checked only then: a run that does not deploy may
# name its model in ways Kubernetes refuses.
SWITCHED_ON_BY = {"deploy": "deploy"}
PRESETS = {
    # The notebook recipe, for machines with hub access and a GPU; the compiled pipeline's defaults.
    "imdb": {},
    # Everything offline on a CPU in a few minutes: synthetic reviews, a tiny BERT teacher trained from
    # scratch, a DistilBERT student made from its layers. The student must reach 0.90 test accuracy.
    "smoke": {
        "source": "synthetic",
        "tokenizer": "wordpiece",
        "max_length": 128,
        "max_train_samples": 3000,
        "max_eval_samples": 500,
        "teacher": "config:tiny-bert",
        "train_teacher": True,
        "teacher_epochs": 3.0,
        "teacher_batch_size": 32,
        "teacher_learning_rate": 1e-3,
        # The teacher is trained from a random initialisation: the pretrained baseline starts from one too.
        "pretrained_teacher": "config:tiny-bert",
        "student": "from_teacher",
        "epochs": 3.0,
        "batch_size": 32,
        "learning_rate": 5e-4,
    },
    # Real pretrained weights on real reviews, sized for a 2-core CPU (about 30 minutes): all-MiniLM-L6-v2
    # (6 layers; offline through the kdflow[minilm] extra) fine-tuned as the teacher, a 3-layer DistilBERT
    # student from its layers. The data comes from --data; --set max_train_samples=0 ... scales it up on a GPU.
    "minilm": {
        "source": "",
        "teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "train_teacher": True,
        "max_length": 256,
        "truncation_side": "left",
        "max_train_samples": 2000,
        "max_eval_samples": 2000,
        "validation_fraction": 0.02,
        "teacher_epochs": 1.0,
        "teacher_batch_size": 16,
        "teacher_learning_rate": 1e-4,
        "pretrained_teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "student": "from_teacher",
        "student_layers": 3,
        # Measured on this preset (2 seeds): 0.1 gave 0.864/0.863, 0 gave 0.8555/0.8595, at 2.1x the training time.
        "student_attention_dropout": 0.1,
        "epochs": 2.0,
        "batch_size": 16,
        "learning_rate": 1e-4,
        "precision": "auto",
    },
}
# The smoke run as a multi-label task: synthetic reviews labeled with the topics they judge (one to three of five),
# a sigmoid per topic, each topic's threshold chosen on validation; the gate compares macro F1. The tiny teacher finds
# the topics one at a time, each after a plateau, so it trains longer at a lower rate than the sentiment teacher.
# Measured on this data (teacher_train alone, seed 42, 8 epochs of 32 rows): macro F1 0.968 at 5e-4, 0.829 at 1e-3.
# (On reviews with one opinion per topic, 4 epochs of 16 rows at 1e-3 had found none of the topics.)
PRESETS["smoke-multi-label"] = {**PRESETS["smoke"], "problem_type": "multi_label", "teacher_epochs": 8.0,
                                "teacher_learning_rate": 5e-4, "epochs": 6.0}


def pipeline_parameters() -> dict:
    """Every pipeline parameter with its default, from the pipeline definition itself."""
    inputs = distillation_pipeline.component_spec.inputs
    return {name: spec.default for name, spec in inputs.items()}


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--set NAME=VALUE` pairs as a dict of texts; each value is read as its parameter's type by `resolve`."""
    overrides = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise KdflowInputError(f"--set {pair!r} is not NAME=VALUE: write e.g. --set epochs=1.")
        overrides[name.strip()] = value.strip()
    return overrides


def parse_value(name: str, text: str, default):
    """`text` as the type of the parameter's default (bool, int, float or str)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        return type(default)(text)
    except ValueError:
        raise KdflowInputError(
            f"--set {name}={text} is not a valid {type(default).__name__}: give e.g. {name}={default}."
        ) from None


def resolve(preset: str, overrides: dict[str, str], data: str | None = None, platform: Platform = Platform()) -> dict:
    """The parameters of a run: pipeline defaults, then the preset, then `--data`, then `--set` overrides; checked
    as the pipeline built for `platform` would pass them to its steps."""
    if preset not in PRESETS:
        raise KdflowInputError(f"--preset {preset!r} is unknown: use one of {', '.join(PRESETS)}.")
    defaults = pipeline_parameters()
    parameters = {**defaults, **PRESETS[preset]}
    if data:
        parameters["source"] = data
    for name, text in overrides.items():
        if name not in defaults:
            close = difflib.get_close_matches(name, defaults, n=1)
            hint = f"did you mean {close[0]}?" if close else f"parameters are: {', '.join(defaults)}."
            raise KdflowInputError(f"--set {name}=... names no pipeline parameter: {hint}")
        parameters[name] = parse_value(name, text, defaults[name])
    check(parameters, preset, platform)
    return parameters


def check(parameters: dict, preset: str, platform: Platform) -> None:
    """The checks that need no data and no model, so a bad run stops before anything starts."""
    if not parameters["source"]:
        raise KdflowInputError(
            f"The {preset} preset needs --data: a local folder, gs:// or s3:// prefix with train and test files "
            "(parquet, jsonl or csv) of text and label, e.g. the IMDb splits."
        )
    if not parameters["teacher"]:
        raise KdflowInputError(
            f"The {preset} preset needs a teacher: pass --set teacher=PATH_OR_HUB_ID of a fine-tuned classifier "
            "(or a base checkpoint with --set train_teacher=true)."
        )
    for step, values, names in step_settings(build_pipeline(platform), parameters):
        if step in SWITCHED_ON_BY and not parameters[SWITCHED_ON_BY[step]]:
            continue
        settings = import_module(f"kdflow.components.{step}.settings").Settings
        declared = dataclasses.fields(settings) if settings else ()
        if declared and all(item.name in values for item in declared):
            try:
                settings(**{item.name: item.type(values[item.name]) for item in declared})  # the step's checks
            except KdflowInputError as error:
                raise KdflowInputError(as_parameter_sentence(str(error), names)) from None
    # The commonest class holds at least 1/num_labels of the test rows, so a larger margin no student can pass. With
    # num_labels 0 (read from the data) the count is not known yet: only a margin of 1 or more is surely impossible.
    majority_floor = 1 / parameters["num_labels"] if parameters["num_labels"] else 0.0
    if majority_floor + parameters["min_accuracy_margin"] >= 1:
        raise KdflowInputError(
            f"min_accuracy_margin={parameters['min_accuracy_margin']} cannot be passed with num_labels="
            f"{parameters['num_labels']}: the commonest class alone scores at least {majority_floor:.2f}, so use a "
            f"margin below {1 - majority_floor:.2f}.")


def as_parameter_sentence(sentence: str, names: dict[str, str]) -> str:
    """A step's sentence about its setting, naming the pipeline parameter the user set instead where the two
    differ (teacher_train's learning_rate is the pipeline's teacher_learning_rate)."""
    for setting, parameter in names.items():
        if setting != parameter and sentence.startswith(f"{setting}="):
            return parameter + sentence[len(setting):]
    return sentence


def step_settings(pipeline, parameters: dict):
    """(step, the values of its settings, the pipeline parameter each setting takes its value from) for every task
    of the compiled `pipeline` run with `parameters`.

    A value another task computes (the teacher's URI) is taken as the pipeline parameter of the same name; where
    there is none (a loop's item), the value is left out and that task's settings go unchecked.
    """
    spec = json_format.MessageToDict(pipeline.pipeline_spec)

    def tasks(component: dict, inputs: dict):
        """`inputs`: the component's input name -> (its value, the pipeline parameter it comes from)."""
        for task in in_run_order(component["dag"]["tasks"]):
            values = {}
            for name, source in task.get("inputs", {}).get("parameters", {}).items():
                if source.get("componentInputParameter") in inputs:
                    values[name] = inputs[source["componentInputParameter"]]
                elif "runtimeValue" in source:
                    values[name] = (source["runtimeValue"]["constant"], name)
                elif name in parameters:
                    values[name] = (parameters[name], name)
            inner = spec["components"][task["componentRef"]["name"]]
            if "dag" in inner:
                yield from tasks(inner, values)
            else:
                arguments = spec["deploymentSpec"]["executors"][inner["executorLabel"]]["container"]["args"]
                step = arguments[arguments.index("--function_to_execute") + 1]
                yield (step, {name: value for name, (value, _) in values.items()},
                       {name: parameter for name, (_, parameter) in values.items()})

    yield from tasks(spec["root"], {name: (value, name) for name, value in parameters.items()})


def in_run_order(tasks: dict) -> list[dict]:
    """The DAG's tasks, each after the tasks it depends on, ties by name: the spec's task map has no fixed order,
    and the first refusal a user sees must not depend on it (CI once met publish's check before distill's)."""
    ordered, done = [], set()
    while len(ordered) < len(tasks):
        ready = sorted(name for name, task in tasks.items()
                       if name not in done and done.issuperset(task.get("dependentTasks", [])))
        ordered.append(tasks[ready[0]])
        done.add(ready[0])
    return ordered
