"""KFP definition of the publish step; its settings are declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.publish import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def publish(
    data: Input[Dataset],
    student: Input[Model],
    onnx_model: Input[Model],
    teacher_metrics: Input[Metrics],
    student_metrics: Input[Metrics],
    publish_report: Output[Markdown],
    publish_uri: str,
    model_name: str,
    model_version: str,
    promotion_tolerance: float,
    run_id: str,
) -> NamedTuple("PublishOutputs", promoted=bool, version_uri=str):
    """Uploads the student and promotes it to latest.json when it is at least as accurate as the champion."""
    from kdflow.components.common.component import run_step
    from kdflow.components.publish import task

    return run_step(task, locals())
