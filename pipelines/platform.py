"""Where the pipeline's tasks run, fixed when it is compiled: images, GPUs, retries, credentials, scale-out, and the
Kubernetes scheduling of the CPU steps and of the GPU steps.

kfp.local ignores the GPU requests, retries and scheduling; a Kubeflow cluster applies them. The images are set here
for clusters and for local runs in containers alike.

Credentials: by default every task uses its pod's Kubernetes service account, which GKE Workload Identity maps
to a Google service account: no key exists anywhere. Clusters without Workload Identity can instead mount a
service-account key kept in a Kubernetes secret (`kdflow compile --gcp-key-secret NAME`, key file `key.json`).
For S3-compatible storage (MinIO, SeaweedFS, AWS), `--s3-secret NAME` sets the secret's keys AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY as environment variables of every task, and `--s3-endpoint URL` sets AWS_ENDPOINT_URL. Only
secrets' names ever appear in the compiled pipeline.

Scheduling (`kdflow compile --gpu-type nvidia-tesla-a100 --gpu-node-selector cloud.google.com/gke-spot=true
--gpu-toleration nvidia.com/gpu=present:NoSchedule --gpu-step-requests cpu=8,memory=32Gi ...`): node selectors,
tolerations and CPU and memory requests and limits, separately for the CPU steps and the GPU steps (a Placement
each), and the GPU type as a node label of the GPU steps.
"""

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from kfp import kubernetes
from kfp.dsl import PipelineTask

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import DEFAULT_REGISTRY, image_name
from kdflow.components.common.storage import masked_uri
from kdflow.components.common.training import RUN_NAME_ENV

GPU_RESOURCE = "nvidia.com/gpu"
WORKFLOW_NAME_FIELD = "metadata.labels['workflows.argoproj.io/workflow']"
KEY_MOUNT_PATH = "/var/secrets/google"
KEY_FILE = "key.json"
# The keys of the --s3-secret, each set as the environment variable of its name, which boto3 and s3fs read.
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
# GPU nodes are often preemptible: a task whose pod is lost starts again, up to this many times.
GPU_RETRIES = 2
# The node label --gpu-type sets by default. GKE, where kdflow's manifests deploy, puts it on every GPU node, and
# GKE Autopilot and node auto-provisioning create a node of the type a pod selects with it. Clusters with the
# NVIDIA GPU operator label nodes nvidia.com/gpu.product instead (e.g. NVIDIA-A100-SXM4-40GB).
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# The names Kubernetes accepts (apimachinery's IsDNS1123Label and IsDNS1123Subdomain): a namespace is a label;
# service accounts and secrets are subdomains, labels joined by dots.
KUBERNETES_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
KUBERNETES_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A node label's name, and its value when not empty (apimachinery's IsQualifiedName and IsValidLabelValue).
LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
LABEL_KEY_RULE = ("NAME or PREFIX/NAME, NAME being at most 63 letters, digits, '-', '_' or '.' that start and end with "
                  "a letter or digit, PREFIX a DNS subdomain such as cloud.google.com")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# Quantities both Kubernetes and kfp's task setters accept: kfp refuses decimal memory and Kubernetes an upper-case K.
CPU_QUANTITY = re.compile(r"(?P<millicores>\d+)m|(?P<cores>\d+(\.\d+)?)")
MEMORY_QUANTITY = re.compile(r"(?P<number>\d+)(?P<unit>[KMGTPE]i|[MGTPE])?")
MEMORY_UNITS = {"": 1, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def check_kubernetes_name(option: str, name: str, label: bool = False) -> None:
    """Refuses a name Kubernetes would reject: an RFC 1123 label (`label`, e.g. a namespace) or a DNS subdomain."""
    pattern, longest = (KUBERNETES_LABEL, 63) if label else (KUBERNETES_SUBDOMAIN, 253)
    if len(name) > longest or not pattern.fullmatch(name):
        dots = "" if label else " (dots may join such parts)"
        raise KdflowInputError(
            f"{option} {name!r} is not a valid Kubernetes name: use at most {longest} lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit{dots}.")


def check_label_key(option: str, given: str, key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if len(name) > 63 or not LABEL_NAME.fullmatch(name) or \
            (slash and (len(prefix) > 253 or not KUBERNETES_SUBDOMAIN.fullmatch(prefix))):
        raise KdflowInputError(f"{option} {given!r}: {key!r} is not a Kubernetes label key: give {LABEL_KEY_RULE}.")


def check_label_value(option: str, given: str, value: str) -> None:
    if len(value) > 63 or (value and not LABEL_NAME.fullmatch(value)):
        raise KdflowInputError(
            f"{option} {given!r}: {value!r} is not a Kubernetes label value: give at most 63 letters, digits, '-', "
            "'_' or '.' that start and end with a letter or digit.")


def node_label(option: str, text: str) -> tuple[str, str]:
    """KEY=VALUE, a label a node must have."""
    key, equals, value = text.partition("=")
    if not equals:
        raise KdflowInputError(f"{option} {text!r} is not KEY=VALUE: give a node label, e.g. "
                               "cloud.google.com/gke-spot=true.")
    check_label_key(option, text, key)
    check_label_value(option, text, value)
    return key, value


def toleration(option: str, text: str) -> dict:
    """KEY[=VALUE]:EFFECT, a taint as `kubectl taint` writes it, as the toleration of kfp.kubernetes.add_toleration;
    without =VALUE it tolerates the taint whatever its value."""
    taint, colon, effect = text.rpartition(":")
    if not colon or effect not in TAINT_EFFECTS:
        raise KdflowInputError(f"{option} {text!r} is not KEY[=VALUE]:EFFECT with EFFECT NoSchedule, "
                               "PreferNoSchedule or NoExecute: e.g. nvidia.com/gpu=present:NoSchedule.")
    key, equals, value = taint.partition("=")
    check_label_key(option, text, key)
    if not equals:
        return {"key": key, "operator": "Exists", "effect": effect}
    check_label_value(option, text, value)
    return {"key": key, "operator": "Equal", "value": value, "effect": effect}


def resource_quantities(option: str, text: str) -> dict[str, str]:
    """cpu=QUANTITY,memory=QUANTITY (either or both) as {"cpu": ..., "memory": ...}; empty text, none."""
    given = {}
    for item in text.split(",") if text else []:
        name, equals, quantity = item.partition("=")
        if name not in ("cpu", "memory") or not equals or name in given:
            raise KdflowInputError(f"{option} {text!r} is not cpu=QUANTITY,memory=QUANTITY: give either or both, "
                                   "once each, e.g. cpu=2,memory=8Gi.")
        if amount(name, quantity) is None:
            raise KdflowInputError(f"{option} {text!r}: {quantity!r} is not a {name} quantity above 0: give " + (
                "cores (2, 0.5) or millicores (500m)." if name == "cpu" else
                "bytes as a whole number, with Ki, Mi, Gi or Ti (powers of 1024) or M, G or T, e.g. 8Gi."))
        given[name] = quantity
    return given


def amount(name: str, quantity: str) -> float | None:
    """A CPU (cores) or memory (bytes) quantity as a number above 0, to compare a request with its limit; None when
    it is not one."""
    match = (CPU_QUANTITY if name == "cpu" else MEMORY_QUANTITY).fullmatch(quantity)
    if not match:
        return None
    if name == "cpu":
        value = int(match["millicores"]) / 1000 if match["millicores"] else float(match["cores"])
    else:
        value = int(match["number"]) * MEMORY_UNITS[match["unit"] or ""]
    return value or None


@dataclass(frozen=True)
class Placement:
    """Where the pods of one kind of step run on Kubernetes and what they reserve there, as the options of
    `kdflow compile` write it."""

    steps: str  # "cpu" or "gpu": the CPU steps or the GPU steps, and the prefix of their options
    node_selector: tuple[str, ...] = ()  # KEY=VALUE: node labels the pods' nodes must have
    tolerations: tuple[str, ...] = ()  # KEY[=VALUE]:EFFECT: node taints the pods tolerate
    requests: str = ""  # cpu=QUANTITY,memory=QUANTITY: what each pod reserves
    limits: str = ""  # cpu=QUANTITY,memory=QUANTITY: the most each pod may use

    def __post_init__(self):
        # Reading the options checks them; each is read again where a task is placed.
        self.labels()
        self.taints()
        requests, limits = self.quantities("requests"), self.quantities("limits")
        for name in sorted(requests.keys() & limits.keys()):
            if amount(name, requests[name]) > amount(name, limits[name]):
                raise KdflowInputError(
                    f"--{self.steps}-step-requests {name}={requests[name]} is more than --{self.steps}-step-limits "
                    f"{name}={limits[name]}, which Kubernetes refuses: lower the request or raise the limit.")

    def labels(self) -> dict[str, str]:
        option, labels = f"--{self.steps}-node-selector", {}
        for text in self.node_selector:
            key, value = node_label(option, text)
            if key in labels:
                raise KdflowInputError(f"{option} gives {key} twice: give each label once.")
            labels[key] = value
        return labels

    def taints(self) -> list[dict]:
        return [toleration(f"--{self.steps}-toleration", text) for text in self.tolerations]

    def quantities(self, kind: str) -> dict[str, str]:
        """The requests or the limits (`kind`), by resource."""
        return resource_quantities(f"--{self.steps}-step-{kind}", getattr(self, kind))

    def place(self, task: PipelineTask) -> PipelineTask:
        for key, value in self.labels().items():
            kubernetes.add_node_selector(task, key, value)
        for taint in self.taints():
            kubernetes.add_toleration(task, **taint)
        for name, quantity in self.quantities("requests").items():
            getattr(task, f"set_{name}_request")(quantity)  # set_cpu_request, set_memory_request
        for name, quantity in self.quantities("limits").items():
            getattr(task, f"set_{name}_limit")(quantity)
        return task


@dataclass(frozen=True)
class Platform:
    """The compile-time settings the pipeline factory (kdflow.pipelines.distillation.build_pipeline) takes."""

    gcp_key_secret: str = ""  # a Kubernetes secret with a service-account key; empty means Workload Identity
    s3_secret: str = ""  # a Kubernetes secret with the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY
    s3_endpoint: str = ""  # the http(s) URL of an S3-compatible store (MinIO, SeaweedFS); empty: AWS S3
    image_registry: str = DEFAULT_REGISTRY  # where the task images are pulled from
    gpu_step_image: str = "trainer"  # the image kind of the GPU steps; "cpu" on a machine without GPUs
    # Scale-out, fixed when the pipeline is compiled since it shapes the DAG and the GPU requests:
    teacher_shards: int = 1  # teacher_shard tasks computing the teacher's logits side by side; 1: teacher_eval alone
    processes: int = 1  # processes of the distill step under torchrun, one GPU each, on one node
    # Scheduling on Kubernetes:
    cpu_steps: Placement = Placement("cpu")
    gpu_steps: Placement = Placement("gpu")
    gpu_type: str = ""  # the value of the node label gpu_type_label that the GPU steps' nodes must have; empty: any
    gpu_type_label: str = GKE_ACCELERATOR_LABEL

    def __post_init__(self):
        if self.gcp_key_secret:
            check_kubernetes_name("--gcp-key-secret", self.gcp_key_secret)
        if self.s3_secret:
            check_kubernetes_name("--s3-secret", self.s3_secret)
        if self.s3_endpoint:
            check_http_url("--s3-endpoint", self.s3_endpoint, "http://minio.minio.svc:9000",
                           "which would be written into the compiled pipeline: drop them and give the keys by "
                           "--s3-secret")
        check_label_key("--gpu-type-label", self.gpu_type_label, self.gpu_type_label)
        check_label_value("--gpu-type", self.gpu_type, self.gpu_type)
        if self.gpu_type and self.gpu_type_label in self.gpu_steps.labels():
            raise KdflowInputError(f"--gpu-node-selector sets {self.gpu_type_label}, the label --gpu-type sets: give "
                                   "the GPU type once, with --gpu-type.")

    def on_cpu(self, task: PipelineTask) -> PipelineTask:
        """Runs the task in the CPU image, placed as the CPU steps are."""
        task.set_container_image(image_name("cpu", self.image_registry))
        return self.with_credentials(self.cpu_steps.place(task))

    def on_gpu(self, task: PipelineTask, count: int = 1) -> PipelineTask:
        """Schedules the task on a node with `count` NVIDIA GPUs (of the GPU type, when given), in the GPU image,
        retried when its pod fails."""
        task.set_container_image(image_name(self.gpu_step_image, self.image_registry))
        # The accelerator type is the resource KFP's Kubernetes backend requests, not the GPU model: a node label
        # selects that.
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(count).set_retry(num_retries=GPU_RETRIES)
        if self.gpu_type:
            kubernetes.add_node_selector(task, self.gpu_type_label, self.gpu_type)
        # The run's name, under which a training logs its metrics: from the pod's label, not an input, which would
        # make every run's cache key new. Argo labels every pod of a workflow with it, under KFP too.
        kubernetes.use_field_path_as_env(task, env_name=RUN_NAME_ENV, field_path=WORKFLOW_NAME_FIELD)
        return self.with_credentials(self.gpu_steps.place(task))

    def with_credentials(self, task: PipelineTask) -> PipelineTask:
        if self.gcp_key_secret:
            kubernetes.use_secret_as_volume(task, secret_name=self.gcp_key_secret, mount_path=KEY_MOUNT_PATH)
            task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{KEY_MOUNT_PATH}/{KEY_FILE}")
        if self.s3_secret:
            kubernetes.use_secret_as_env(task, secret_name=self.s3_secret,
                                         secret_key_to_env={key: key for key in S3_SECRET_KEYS})
        if self.s3_endpoint:
            task.set_env_variable(S3_ENDPOINT_VARIABLE, self.s3_endpoint)
        return task


def check_http_url(option: str, url: str, example: str, instead_of_credentials: str) -> None:
    """An http(s) URL with a host name and without `user:password@` (masked in the sentence), which
    `instead_of_credentials` says why and what to do about."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number below 65536, an unclosed [IPv6 address
        valid = False
    if not valid:
        raise KdflowInputError(f"{option} {masked_uri(url)!r} is not an http(s) URL: give e.g. {example}.")
    if "@" in parts.netloc:
        raise KdflowInputError(f"{option} {masked_uri(url)} holds credentials, {instead_of_credentials}.")
