"""Cluster settings of the pipeline's tasks, in one place. kfp.local ignores them; a Kubeflow cluster applies them."""

from kfp.dsl import PipelineTask

GPU_RESOURCE = "nvidia.com/gpu"


def on_gpu(task: PipelineTask, count: int = 1) -> PipelineTask:
    """Schedules the task on a node with `count` NVIDIA GPUs."""
    return task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(count)
