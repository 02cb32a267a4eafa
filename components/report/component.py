"""KFP definition of the report step; its interface is declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import HTML, Input, Metrics, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.report import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def report(
    teacher_metrics: Input[Metrics],
    student_metrics: Input[Metrics],
    student: Input[Model],
    onnx_model: Input[Model],
    quality_report: Output[HTML],
    baseline_metrics: Input[Metrics] = None,
    pretrained_baseline_metrics: Input[Metrics] = None,
) -> NamedTuple("ReportOutputs", summary=str, quality_report_uri=str):
    """Summarises the run and writes the quality report."""
    from kdflow.components.common.component import run_step
    from kdflow.components.report import task

    return run_step(task, locals())
