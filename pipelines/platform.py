"""Where the pipeline's tasks run, fixed when it is compiled: images, GPUs, retries, credentials, scale-out.

kfp.local ignores the GPU requests and retries; a Kubeflow cluster applies them. The images are set here for clusters
and for local runs in containers alike.

Credentials: by default every task uses its pod's Kubernetes service account, which GKE Workload Identity maps
to a Google service account: no key exists anywhere. Clusters without Workload Identity can instead mount a
service-account key kept in a Kubernetes secret (`kdflow compile --gcp-key-secret NAME`, key file `key.json`);
only the secret's name ever appears in the compiled pipeline.
"""

import re
from dataclasses import dataclass

from kfp import kubernetes
from kfp.dsl import PipelineTask

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import DEFAULT_REGISTRY, image_name

GPU_RESOURCE = "nvidia.com/gpu"
KEY_MOUNT_PATH = "/var/secrets/google"
KEY_FILE = "key.json"
# GPU nodes are often preemptible: a task whose pod is lost starts again, up to this many times.
GPU_RETRIES = 2
# The names Kubernetes accepts (apimachinery's IsDNS1123Label and IsDNS1123Subdomain): a namespace is a label;
# service accounts and secrets are subdomains, labels joined by dots.
KUBERNETES_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
KUBERNETES_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def check_kubernetes_name(option: str, name: str, label: bool = False) -> None:
    """Refuses a name Kubernetes would reject: an RFC 1123 label (`label`, e.g. a namespace) or a DNS subdomain."""
    pattern, longest = (KUBERNETES_LABEL, 63) if label else (KUBERNETES_SUBDOMAIN, 253)
    if len(name) > longest or not pattern.fullmatch(name):
        dots = "" if label else " (dots may join such parts)"
        raise KdflowInputError(
            f"{option} {name!r} is not a valid Kubernetes name: use at most {longest} lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit{dots}.")


@dataclass(frozen=True)
class Platform:
    """The compile-time settings the pipeline factory (kdflow.pipelines.distillation.build_pipeline) takes."""

    gcp_key_secret: str = ""  # a Kubernetes secret with a service-account key; empty means Workload Identity
    image_registry: str = DEFAULT_REGISTRY  # where the task images are pulled from
    gpu_step_image: str = "trainer"  # the image kind of the GPU steps; "cpu" on a machine without GPUs
    # Scale-out, fixed when the pipeline is compiled since it shapes the DAG and the GPU requests:
    teacher_shards: int = 1  # teacher_shard tasks computing the teacher's logits side by side; 1: teacher_eval alone
    processes: int = 1  # processes of the distill step under torchrun, one GPU each, on one node

    def __post_init__(self):
        if self.gcp_key_secret:
            check_kubernetes_name("--gcp-key-secret", self.gcp_key_secret)

    def on_cpu(self, task: PipelineTask) -> PipelineTask:
        """Runs the task in the CPU image."""
        return self.with_credentials(task.set_container_image(image_name("cpu", self.image_registry)))

    def on_gpu(self, task: PipelineTask, count: int = 1) -> PipelineTask:
        """Schedules the task on a node with `count` NVIDIA GPUs, in the GPU image, retried when its pod fails."""
        task.set_container_image(image_name(self.gpu_step_image, self.image_registry))
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(count).set_retry(num_retries=GPU_RETRIES)
        return self.with_credentials(task)

    def with_credentials(self, task: PipelineTask) -> PipelineTask:
        if self.gcp_key_secret:
            kubernetes.use_secret_as_volume(task, secret_name=self.gcp_key_secret, mount_path=KEY_MOUNT_PATH)
            task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{KEY_MOUNT_PATH}/{KEY_FILE}")
        return task
