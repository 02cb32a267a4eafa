"""The deploy step: creates or updates the KServe InferenceService that serves a published model's folder.

Run as a KFP component (component.py) after a promoted publish, or directly, with every setting of settings.py given
(`--help` lists them; their defaults are the pipeline's parameters):

    python -m kdflow.components.deploy.task --deployment deployment.json --publish-uri gs://bucket/models \
        --model-name imdb-sentiment --deploy-namespace "" --serving-image REGISTRY/kdflow-cpu:VERSION \
        --serving-service-account kdflow-serving

The resource is kdflow.components.deploy.inference_service's, running `kdflow serve PUBLISH_URI/MODEL_NAME`: the
server follows latest.json, so a new champion needs no new resource. The step creates the resource when it is
missing, replaces its spec when it differs from the one the step would write (under the resourceVersion it read, so
a change made meanwhile is read again, never overwritten unseen), and otherwise leaves it unchanged. The API server
checks what is sent against KServe's CRD schema strictly (an unknown field is refused, not dropped); the tests check
the same resource against that schema offline (the schema is too large to ship in the image).

The Kubernetes API is the one KUBECONFIG names (its current context); without it, inside a pod, the pod's: its
service account's token and CA and its namespace; else ~/.kube/config. The credentials need get, create and update
on inferenceservices.serving.kserve.io in the namespace: manifests/base/pipeline-runner-rbac.yaml grants them to
the runs' service account.
"""

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kdflow.components.common import step, storage
from kdflow.components.common.errors import KdflowInputError, first_line

from .inference_service import inference_service
from .settings import Files, Result, Settings

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RESOURCE = f"{PLURAL}.{GROUP}"
# Where Kubernetes mounts a pod's service-account token, the API's CA and the pod's namespace.
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FIELD_MANAGER = "kdflow"
# KServe's controller writes the resource's status, which moves its resourceVersion: an update may meet that once
# or twice, and is read and tried again.
UPDATE_TRIES = 5
REQUEST_TIMEOUT_S = (10, 60)  # connect, read: an unreachable API fails in seconds, not at the OS's timeout
NO_API = ("deploy=true needs the Kubernetes API, and none is configured here: KUBECONFIG is unset, this is not a pod "
          "(KUBERNETES_SERVICE_HOST is unset) and ~/.kube/config does not exist; give KUBECONFIG or set deploy=false.")

logger = logging.getLogger("kdflow.deploy")


@dataclass
class Cluster:
    """A Kubernetes API client, the namespace the step works in, and where both came from (for sentences)."""

    api: object  # kubernetes.client.CustomObjectsApi
    namespace: str
    host: str
    credentials: str  # "the pod's service account", or the kubeconfig and its context


def run(settings: Settings, files: Files) -> Result:
    """Creates or updates the InferenceService serving PUBLISH_URI/MODEL_NAME and records what it did in
    files.deployment."""
    cluster = connect(settings.deploy_namespace)
    wanted = inference_service(settings.model_name, storage.join(settings.publish_uri, settings.model_name),
                               settings.serving_image, settings.serving_service_account, cluster.namespace)
    action, stored = apply(cluster, wanted)
    result = Result(action=action, namespace=cluster.namespace, name=settings.model_name)
    logger.info("InferenceService %s/%s %s (resourceVersion %s) at %s", cluster.namespace, settings.model_name, action,
                stored["metadata"].get("resourceVersion"), cluster.host)
    Path(files.deployment).parent.mkdir(parents=True, exist_ok=True)
    Path(files.deployment).write_text(json.dumps(
        {**asdict(result), "resource_version": stored["metadata"].get("resourceVersion"), "inference_service": wanted},
        indent=2))
    return result


def check_access(namespace: str, name: str) -> None:
    """What `kdflow run` checks before a run that deploys: an API is configured, answers, and lets the credentials
    read the InferenceService `name` (in `namespace`, or the run's own)."""
    read(connect(namespace), name)


def connect(namespace: str) -> Cluster:
    """A client of the configured Kubernetes API and the namespace to work in: `namespace`, else the pod's own or the
    kubeconfig context's."""
    from kubernetes import client, config
    from kubernetes.config.incluster_config import InClusterConfigLoader

    configuration = client.Configuration()
    kubeconfig = os.environ.get("KUBECONFIG", "")
    try:
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            credentials = "the pod's service account"
            InClusterConfigLoader(str(SERVICE_ACCOUNT / "token"), str(SERVICE_ACCOUNT / "ca.crt")).load_and_set(
                configuration)
            own = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        else:
            home = Path.home() / ".kube" / "config"
            if not kubeconfig and not home.is_file():
                raise KdflowInputError(NO_API)
            kubeconfig = kubeconfig or str(home)
            credentials = f"kubeconfig {kubeconfig}"
            _, context = config.list_kube_config_contexts(kubeconfig)
            credentials += f" (context {context['name']})"
            config.load_kube_config(kubeconfig, client_configuration=configuration, persist_config=False)
            own = context["context"].get("namespace") or "default"  # as kubectl
    except (config.ConfigException, OSError) as error:
        raise KdflowInputError(f"deploy=true cannot use the Kubernetes credentials of {credentials} "
                               f"({first_line(error)}): fix them, give KUBECONFIG, or set deploy=false.") from None
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    return Cluster(api=api, namespace=namespace or own, host=configuration.host, credentials=credentials)


def apply(cluster: Cluster, wanted: dict) -> tuple[str, dict]:
    """Creates `wanted`, or replaces the stored resource's spec when it does not hold `wanted`'s; returns what was
    done (created, updated or unchanged) and the resource as stored."""
    name = wanted["metadata"]["name"]
    for _ in range(UPDATE_TRIES):
        stored = read(cluster, name)
        if stored is None:
            created = call(cluster, "create", name, cluster.api.create_namespaced_custom_object, body=wanted,
                           field_manager=FIELD_MANAGER, field_validation="Strict")
            if created is not None:
                return "created", created
            continue  # created meanwhile by someone else: read it
        if holds(stored["metadata"].get("annotations", {}), wanted["metadata"]["annotations"]) \
                and holds(stored.get("spec"), wanted["spec"]):
            return "unchanged", stored
        replaced = call(cluster, "update", name, cluster.api.replace_namespaced_custom_object, name,
                        body=replacement(stored, wanted), field_manager=FIELD_MANAGER, field_validation="Strict")
        if replaced is not None:
            return "updated", replaced
    raise RuntimeError(f"InferenceService {cluster.namespace}/{name} changed under every one of {UPDATE_TRIES} updates "
                       f"at {cluster.host}: re-run the step.")


def read(cluster: Cluster, name: str) -> dict | None:
    """The stored InferenceService `name`; None when there is none."""
    return call(cluster, "get", name, cluster.api.get_namespaced_custom_object, name)


def replacement(stored: dict, wanted: dict) -> dict:
    """`stored` with `wanted`'s spec and annotations, under the resourceVersion read: what others set in the metadata
    (labels, finalizers, their annotations) stays, and the status is the controller's."""
    metadata = {key: value for key, value in stored["metadata"].items() if key != "managedFields"}
    metadata["annotations"] = {**metadata.get("annotations", {}), **wanted["metadata"]["annotations"]}
    return {"apiVersion": wanted["apiVersion"], "kind": wanted["kind"], "metadata": metadata, "spec": wanted["spec"]}


def holds(found, wanted) -> bool:
    """Whether `found` has every value `wanted` sets: the API server and KServe's webhook add defaults to what they
    store."""
    if isinstance(wanted, dict):
        return isinstance(found, dict) and all(key in found and holds(found[key], value)
                                               for key, value in wanted.items())
    if isinstance(wanted, list):
        return isinstance(found, list) and len(found) == len(wanted) and all(map(holds, found, wanted))
    return found == wanted


def call(cluster: Cluster, verb: str, name: str, method, *arguments, **options):
    """One API call on the namespace's InferenceServices; None when the caller should read again (or learn there is
    nothing): NotFound on get or update, Conflict or AlreadyExists on a write. Other refusals raise, as one
    sentence."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return method(GROUP, VERSION, cluster.namespace, PLURAL, *arguments, _request_timeout=REQUEST_TIMEOUT_S,
                      **options)
    except ApiException as error:
        status = status_of(error)
        if status.get("reason") == "NotFound" and verb in ("get", "update") \
                or error.status == 409 and verb in ("create", "update"):
            return None
        what = f"{verb} InferenceService {cluster.namespace}/{name}"
        answer = f"{error.status} {error.reason}: {status.get('message') or (error.body or '').strip()}"
        if error.status in (401, 403):
            raise KdflowInputError(
                f"The Kubernetes API at {cluster.host} refused to {what} with the credentials of {cluster.credentials} "
                f"({answer}): grant them get, create and update on {RESOURCE} in namespace {cluster.namespace} (for "
                "the runs' service account, the Role in manifests/base/pipeline-runner-rbac.yaml), or set deploy=false."
            ) from None
        if error.status == 404 and not status:  # no Status: the API server knows no such API
            raise KdflowInputError(
                f"The Kubernetes API at {cluster.host} has no {GROUP}/{VERSION} InferenceService API ({answer}): "
                "install KServe in the cluster, or set deploy=false.") from None
        if error.status == 404:  # on create: the namespace
            raise KdflowInputError(
                f"The Kubernetes API at {cluster.host} could not {what} ({answer}): set deploy_namespace to an "
                "existing namespace, or leave it empty for the run's own.") from None
        raise RuntimeError(f"The Kubernetes API at {cluster.host} refused to {what} ({answer}).") from None
    except HTTPError as error:
        raise KdflowInputError(
            f"deploy=true found no Kubernetes API answering at {cluster.host}, taken from {cluster.credentials} "
            f"({first_line(getattr(error, 'reason', None) or error)}): give KUBECONFIG of a reachable cluster, or set "
            "deploy=false.") from None


def status_of(error) -> dict:
    """The v1 Status an API error carries; empty when its body is none (an unknown API answers plain text)."""
    try:
        status = json.loads(error.body or "")
    except ValueError:
        return {}
    return status if isinstance(status, dict) and status.get("kind") == "Status" else {}


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
