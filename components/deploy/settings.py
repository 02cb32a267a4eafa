"""The deploy step's interface: its settings (checked on construction), the file it writes, the values it returns.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts. The step
runs only when the pipeline's `deploy` parameter is true, and kdflow.pipelines.presets checks these settings only
then: a run that does not deploy may name its model in ways Kubernetes refuses.
"""

import re
from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import IMAGE_PATTERN, image_name
from kdflow.components.common.settings import CheckedSettings, artifact, returned, setting
from kdflow.components.common.storage import is_remote

# KServe's rule for an InferenceService's name (its webhook's IsvcNameFmt: a DNS-1035 label), at most 53 characters:
# KServe names the predictor's Deployment and Service NAME-predictor, which must stay a label of at most 63.
SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
SERVICE_NAME_LENGTH = 53
# apimachinery's IsDNS1123Label (a namespace, at most 63) and IsDNS1123Subdomain (a service account, at most 253).
KUBERNETES_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
KUBERNETES_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class Settings(CheckedSettings):
    publish_uri: str = setting("Where publish put the model, gs://bucket/prefix or s3://bucket/prefix: the server "
                               "reads PUBLISH_URI/MODEL_NAME.")
    model_name: str = setting("The published model's name, which the InferenceService takes (lower-case letters, "
                              "digits and '-', starting with a letter, at most 53).")
    deploy_namespace: str = setting("Namespace of the InferenceService; empty: the run's own (its pod's namespace, or "
                                    "the kubeconfig context's).")
    serving_image: str = setting("Image of the server's container, which runs `kdflow serve`: the kdflow CPU image.")
    serving_service_account: str = setting("Service account of the server's pods, which must be able to read "
                                           "PUBLISH_URI (manifests/serving/service-account.yaml).")

    def check(self):
        if not is_remote(self.publish_uri):
            raise KdflowInputError(
                f"publish_uri={self.publish_uri!r} is no gs:// or s3:// location, and deploy=true serves the model "
                "from pods in the cluster, which read it from object storage: publish there or set deploy=false.")
        if len(self.model_name) > SERVICE_NAME_LENGTH or not SERVICE_NAME.fullmatch(self.model_name):
            raise KdflowInputError(
                f"model_name={self.model_name!r} cannot name an InferenceService: use at most {SERVICE_NAME_LENGTH} "
                "lower-case letters, digits and '-', starting with a letter and ending with a letter or digit, e.g. "
                "imdb-sentiment (or set deploy=false).")
        if self.deploy_namespace and (len(self.deploy_namespace) > 63
                                      or not KUBERNETES_LABEL.fullmatch(self.deploy_namespace)):
            raise KdflowInputError(
                f"deploy_namespace={self.deploy_namespace!r} is not a Kubernetes namespace: use at most 63 lower-case "
                "letters, digits and '-', starting and ending with a letter or digit, or leave it empty for the run's "
                "own.")
        if not IMAGE_PATTERN.fullmatch(self.serving_image):
            raise KdflowInputError(
                f"serving_image={self.serving_image!r} is not an image reference: give the kdflow CPU image as "
                f"REGISTRY/NAME[:TAG][@sha256:DIGEST] in lower case, e.g. {image_name('cpu', 'registry.example.com')}.")
        if len(self.serving_service_account) > 253 or not KUBERNETES_SUBDOMAIN.fullmatch(self.serving_service_account):
            raise KdflowInputError(
                f"serving_service_account={self.serving_service_account!r} is not a Kubernetes service account name: "
                "use lower-case letters, digits, '-' and '.', e.g. kdflow-serving.")


@dataclass(frozen=True)
class Files:
    deployment: str = artifact("What the step did (created, updated or unchanged) and the InferenceService it wrote or "
                               "found, as JSON.", output=True)


@dataclass(frozen=True)
class Result:
    action: str = returned("created, updated or unchanged: what the step did to the InferenceService.")
    namespace: str = returned("The InferenceService's namespace.")
    name: str = returned("The InferenceService's name (the model's).")
