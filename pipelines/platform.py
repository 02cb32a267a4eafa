"""Cluster settings of the pipeline's tasks, in one place. kfp.local ignores them; a Kubeflow cluster applies them.
The images the tasks run in are set here too, for clusters and for local runs in containers alike.

Credentials: by default every task uses its pod's Kubernetes service account, which GKE Workload Identity maps
to a Google service account: no key exists anywhere. Clusters without Workload Identity can instead mount a
service-account key kept in a Kubernetes secret (`kdflow compile --gcp-key-secret NAME`, key file `key.json`);
only the secret's name ever appears in the compiled pipeline.
"""

import dataclasses
from dataclasses import dataclass

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask, pipeline_context
from kfp.dsl.graph_component import GraphComponent

from kdflow.components.common.images import DEFAULT_REGISTRY, RUNTIME_IMAGE, TRAINER_IMAGE, image_name

GPU_RESOURCE = "nvidia.com/gpu"
KEY_MOUNT_PATH = "/var/secrets/google"
KEY_FILE = "key.json"


@dataclass
class ClusterSettings:
    gcp_key_secret: str = ""  # a Kubernetes secret with a service-account key; empty means Workload Identity
    image_registry: str = DEFAULT_REGISTRY  # where the task images are pulled from
    gpu_step_image: str = "trainer"  # the image kind of the GPU steps; "cpu" on a machine without GPUs
    # Scale-out, fixed when the pipeline is compiled since it shapes the DAG and the GPU requests:
    teacher_shards: int = 1  # teacher_shard tasks computing the teacher's logits side by side; 1: teacher_eval alone
    nproc: int = 1  # processes of the distill step under torchrun, one GPU each, on one node


SETTINGS = ClusterSettings()


# GPU nodes are often preemptible: a task whose pod is lost starts again, up to this many times.
GPU_RETRIES = 2


def on_gpu(task: PipelineTask, count: int = 1) -> PipelineTask:
    """Schedules the task on a node with `count` NVIDIA GPUs, retried when its pod fails."""
    return task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(count).set_retry(num_retries=GPU_RETRIES)


def apply_cluster_settings() -> None:
    """Applies SETTINGS to every task of the pipeline being defined; called at the end of its body."""
    images = {RUNTIME_IMAGE: image_name("cpu", SETTINGS.image_registry),
              TRAINER_IMAGE: image_name(SETTINGS.gpu_step_image, SETTINGS.image_registry)}
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        if task.container_spec is None:
            continue  # a sub-pipeline, whose tasks got the settings when it was defined
        task.set_container_image(images[task.container_spec.image])
        if SETTINGS.gcp_key_secret:
            kubernetes.use_secret_as_volume(task, secret_name=SETTINGS.gcp_key_secret, mount_path=KEY_MOUNT_PATH)
            task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{KEY_MOUNT_PATH}/{KEY_FILE}")


def with_settings(pipeline: GraphComponent, **settings) -> GraphComponent:
    """The pipeline built again with these SETTINGS changed, so that every task gets them; SETTINGS stay as they were."""
    global SETTINGS
    default = SETTINGS
    SETTINGS = dataclasses.replace(default, **settings)
    try:
        return dsl.pipeline(name=pipeline.name, description=pipeline.description)(pipeline.pipeline_func)
    finally:
        SETTINGS = default
