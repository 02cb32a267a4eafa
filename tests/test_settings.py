"""Each step's interface declared once (kdflow.components.common.settings): its command line, its KFP component and
the pipeline's parameters are derived from the declaration or held equal to it."""

import json
import sys
from dataclasses import dataclass, fields
from importlib import import_module

import pytest
from google.protobuf import json_format

from kdflow.components.common.component import check_signature, scalars
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import artifact, as_arguments, from_arguments, parser, record, returned, setting
from kdflow.components.common.step import ERROR_FILE, main, read_error
from kdflow.pipelines import presets
from kdflow.pipelines.distillation import distillation_pipeline

STEPS = ("data_prep", "teacher_train", "teacher_check", "teacher_eval", "teacher_shard", "merge_logits", "distill",
         "student_eval", "onnx_export", "report", "publish", "deploy")


def declarations(step: str):
    return import_module(f"kdflow.components.{step}.settings")


@pytest.mark.parametrize("step", STEPS)
def test_the_component_takes_and_returns_what_the_step_declares(step):
    component = getattr(import_module(f"kdflow.components.{step}.component"), step)
    declared = declarations(step)
    settings = [item.name for item in fields(declared.Settings)] if declared.Settings else []
    files = fields(declared.Files)
    spec = component.component_spec
    assert list(spec.inputs or {}) == [item.name for item in files if not item.metadata["output"]] + settings
    outputs = [item.name for item in files if item.metadata["output"]]
    outputs += [item.name for item in fields(declared.Result)] if declared.Result else []
    assert sorted(spec.outputs or {}) == sorted(outputs)
    # No default in the component: the pipeline's parameter is the only one.
    assert all(spec.inputs[name].default is None for name in settings)
    # The descriptions KFP copies into the YAML are the declarations' help.
    for item in [*files, *(fields(declared.Settings) if declared.Settings else [])]:
        described = spec.inputs.get(item.name) or spec.outputs.get(item.name)
        assert described.description == " ".join(item.metadata["help"].split()), item.name


@pytest.mark.parametrize("step", [step for step in STEPS if declarations(step).Settings])
def test_the_pipeline_gives_every_setting_of_every_task(step):
    """Each task of the compiled pipeline gets a value for each of its settings: none falls back to a default."""
    spec = json_format.MessageToDict(distillation_pipeline.pipeline_spec)
    declared = declarations(step).Settings

    def tasks(component):
        for task in component["dag"]["tasks"].values():
            inner = spec["components"][task["componentRef"]["name"]]
            if "dag" in inner:
                yield from tasks(inner)
            elif spec["deploymentSpec"]["executors"][inner["executorLabel"]]["container"]["args"][-1] == step:
                yield task

    found = list(tasks(spec["root"]))
    if step == "teacher_shard":
        assert not found  # only with --teacher-shards
        return
    assert found, step
    for task in found:
        assert set(task["inputs"]["parameters"]) >= {item.name for item in fields(declared)}, task["taskInfo"]


def test_a_mismatched_component_is_refused_where_it_is_defined():
    @dataclass(frozen=True)
    class Settings:
        rate: float = setting("A rate.")

    @dataclass(frozen=True)
    class Files:
        data: str = artifact("Input data.")

    class Declarations:
        __name__ = "example"

    Declarations.Settings, Declarations.Files, Declarations.Result = Settings, Files, None

    def with_a_default(data: str, rate: float = 0.1):
        pass

    def misnamed(data: str, speed: float):
        pass

    with pytest.raises(TypeError, match="rate must be `rate: float` without a default"):
        check_signature(with_a_default, Declarations)
    with pytest.raises(TypeError, match="takes"):
        check_signature(misnamed, Declarations)


@dataclass(frozen=True)
class ExampleSettings:
    rate: float = setting("A rate, above 0.")
    name: str = setting("A name.")
    enabled: bool = setting("Whether it is on.")
    count: int = setting("A count.")

    def __post_init__(self):
        if not self.rate > 0:
            raise KdflowInputError(f"rate={self.rate} must be above 0.")


@dataclass(frozen=True)
class ExampleFiles:
    source: str = artifact("What is read.")
    written: str = artifact("What is written.", output=True)
    extra: str = artifact("An optional input.", optional=True)


@dataclass(frozen=True)
class ExampleResult:
    passed: bool = returned("Whether it passed.")
    score: float = returned("The score.")


class ExampleTask:
    """An example step."""

    Settings, Files, Result = ExampleSettings, ExampleFiles, ExampleResult

    @staticmethod
    def run(settings, files):
        with open(files.written, "w") as handle:
            handle.write(settings.name)
        return ExampleResult(passed=settings.enabled, score=settings.rate * settings.count)


def test_the_command_line_is_derived_from_the_declarations_and_round_trips():
    settings = ExampleSettings(rate=0.25, name="a b", enabled=False, count=3)
    files = ExampleFiles(source="in", written="out")
    arguments = parser("", ExampleSettings, ExampleFiles, ExampleResult).parse_args(
        [*as_arguments(files), *as_arguments(settings)])
    assert from_arguments(ExampleSettings, arguments) == settings
    assert from_arguments(ExampleFiles, arguments) == files
    assert record(settings, "count") == {"rate": 0.25, "name": "a b", "enabled": False}
    # Every setting is required: its default is the pipeline's.
    with pytest.raises(SystemExit):
        parser("", ExampleSettings, ExampleFiles, ExampleResult).parse_args(["--source", "in", "--written", "out"])


def test_a_step_run_from_its_command_line_writes_its_outputs_and_its_returned_values(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "example_task", ExampleTask)
    main(ExampleTask, ["--source", "in", "--written", str(tmp_path / "out"), "--rate", "0.5", "--name", "x",
                       "--enabled", "true", "--count", "4", "--passed", str(tmp_path / "passed"),
                       "--score", str(tmp_path / "score")])
    assert (tmp_path / "out").read_text() == "x"
    assert json.loads((tmp_path / "passed").read_text()) is True  # as workflow conditions compare it
    assert json.loads((tmp_path / "score").read_text()) == 2.0


def test_a_refused_setting_exits_2_and_leaves_its_sentence_beside_the_outputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(ExampleTask, ["--source", "in", "--written", str(tmp_path / "task" / "out"), "--rate", "0", "--name",
                           "x", "--enabled", "false", "--count", "1"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == "kdflow: error: rate=0.0 must be above 0."
    assert (tmp_path / "task" / ERROR_FILE).is_file()
    assert not (tmp_path / "task" / "out").exists()
    assert read_error(tmp_path) == "rate=0.0 must be above 0."
    assert read_error(tmp_path / "task" / "elsewhere") is None


def test_nested_metrics_are_logged_by_their_path():
    assert scalars({"accuracy": 0.5, "passed": True, "latency_ms": {"1": 2.0, "32": 3}, "name": "x"}) == [
        ("accuracy", 0.5), ("latency_ms_1", 2.0), ("latency_ms_32", 3.0)]


def test_every_task_of_a_preset_is_checked_before_the_run_with_the_values_the_pipeline_gives_it():
    steps = {step for step, _, _ in presets.step_settings(distillation_pipeline, presets.resolve("smoke", {}))}
    assert steps >= {"data_prep", "teacher_train", "teacher_check", "teacher_eval", "distill", "student_eval",
                     "onnx_export", "publish", "deploy"}
    # The processes are the platform's, so a batch it does not split stops the run before it starts.
    from kdflow.pipelines.platform import Platform

    with pytest.raises(KdflowInputError, match="batch_size=30 does not split evenly across 4 processes"):
        presets.resolve("smoke", {"batch_size": "30"}, platform=Platform(processes=4))


def test_tasks_are_checked_in_run_order_whatever_order_the_spec_map_holds():
    """The compiled spec's task map has no fixed order (it changed with PYTHONHASHSEED), so the first refusal a user
    sees depended on it until the tasks were put in run order."""
    tasks = json_format.MessageToDict(distillation_pipeline.pipeline_spec)["root"]["dag"]["tasks"]
    names = list(tasks)
    orders = [[task["taskInfo"]["name"] for task in presets.in_run_order(dict(sorted(tasks.items(), key=key)))]
              for key in (lambda item: item[0], lambda item: item[0][::-1], lambda item: -names.index(item[0]))]
    assert orders[0] == orders[1] == orders[2]
    position = {name: index for index, name in enumerate(orders[0])}
    for name, task in tasks.items():
        assert all(position[before] < position[task["taskInfo"]["name"]] for before in task.get("dependentTasks", []))
    assert orders[0][0] == "data-prep"
