"""Cluster settings of the pipeline's tasks, in one place. kfp.local ignores them; a Kubeflow cluster applies them.

Credentials: by default every task uses its pod's Kubernetes service account, which GKE Workload Identity maps
to a Google service account: no key exists anywhere. Clusters without Workload Identity can instead mount a
service-account key kept in a Kubernetes secret (`kdflow compile --gcp-key-secret NAME`, key file `key.json`);
only the secret's name ever appears in the compiled pipeline.
"""

from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask, pipeline_context

GPU_RESOURCE = "nvidia.com/gpu"
KEY_MOUNT_PATH = "/var/secrets/google"
KEY_FILE = "key.json"


@dataclass
class ClusterSettings:
    gcp_key_secret: str = ""  # a Kubernetes secret with a service-account key; empty means Workload Identity


SETTINGS = ClusterSettings()


# GPU nodes are often preemptible: a task whose pod is lost starts again, up to this many times.
GPU_RETRIES = 2


def on_gpu(task: PipelineTask, count: int = 1) -> PipelineTask:
    """Schedules the task on a node with `count` NVIDIA GPUs, retried when its pod fails."""
    return task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(count).set_retry(num_retries=GPU_RETRIES)


def apply_cluster_settings() -> None:
    """Applies SETTINGS to every task of the pipeline being defined; called at the end of its body."""
    if not SETTINGS.gcp_key_secret:
        return
    for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
        kubernetes.use_secret_as_volume(task, secret_name=SETTINGS.gcp_key_secret, mount_path=KEY_MOUNT_PATH)
        task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{KEY_MOUNT_PATH}/{KEY_FILE}")
