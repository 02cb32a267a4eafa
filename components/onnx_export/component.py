"""KFP definition of the onnx_export step; its settings are declared in settings.py, the work is in task.py."""

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.onnx_export import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def onnx_export(
    data: Input[Dataset],
    student: Input[Model],
    onnx_model: Output[Model],
    onnx_metrics: Output[Metrics],
    parity_tolerance: float,
    max_eval_samples: int,
    max_int8_drop: float,
):
    """Exports the student to ONNX in fp32 and int8, checks it against PyTorch and measures accuracy and latency."""
    from kdflow.components.common.component import run_step
    from kdflow.components.onnx_export import task

    return run_step(task, locals())
