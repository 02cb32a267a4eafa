"""A stand-in for the Kubernetes API server, which cannot run here: an HTTP server on 127.0.0.1 that answers the
endpoints the kubernetes client's CustomObjectsApi calls for KServe InferenceServices in a namespace, keeps what it
was sent, and records every request so tests can assert what a cluster would receive.

    GET  /apis/serving.kserve.io/v1beta1/namespaces/NS/inferenceservices/NAME   200, or 404 NotFound
    POST /apis/serving.kserve.io/v1beta1/namespaces/NS/inferenceservices        201, or 409 AlreadyExists
    PUT  /apis/serving.kserve.io/v1beta1/namespaces/NS/inferenceservices/NAME   200, 404 NotFound, or 409 Conflict
                                                                                 when the resourceVersion is not the
                                                                                 stored one

As the API server, it sets uid, creationTimestamp, resourceVersion (one counter for every write) and generation (moved
by a change of spec), keeps the stored status on an update, refuses a body whose namespace or name is not the path's
(400) and an update without a resourceVersion (422), and answers errors as v1 Status objects. It answers 401 to a
request without its bearer token; 403, as RBAC would, to the verbs in `forbidden`; a create in a namespace missing
from `namespaces` (when given), 404 NotFound; and without `kserve_installed`, a 404 in plain text, as the API server
answers for an API group it does not serve. `changed_by_others` moves the stored resourceVersion before that many of
the next updates, as KServe's controller writing the status between a client's read and its write. Any other method
or path (PATCH, DELETE, lists) gets 405: the deploy step does not need them. Given a certificate and its key, it
serves HTTPS, as an API server in a pod's cluster does.
"""

import copy
import itertools
from dataclasses import dataclass, field

from api_standin import ApiStandIn, Request

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
PREFIX = f"/apis/{GROUP}/{VERSION}/namespaces/"
VERBS = {"GET": "get", "POST": "create", "PUT": "update"}


@dataclass
class KubernetesApiStandIn(ApiStandIn):
    token: str = "service-account-token"
    user: str = "system:serviceaccount:kdflow:kdflow-pipeline-runner"  # whom the token names, in RBAC's answers
    forbidden: set[str] = field(default_factory=set)  # verbs RBAC refuses: get, create, update
    namespaces: set[str] | None = None  # the namespaces that exist; None: any
    kserve_installed: bool = True
    changed_by_others: int = 0
    certificate: tuple[str, str] | None = None  # PEM files of the certificate and its key: serve HTTPS
    requests: list[Request] = field(default_factory=list)
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)  # (namespace, name) -> stored resource

    def __post_init__(self):
        super().__post_init__()
        self._versions = itertools.count(1000)

    def stored(self, namespace: str, name: str) -> dict | None:
        return self.objects.get((namespace, name))

    def writes(self) -> list[Request]:
        return [request for request in self.requests if request.method in ("POST", "PUT")]

    def answer(self, request: Request) -> tuple[int, dict | str]:
        """What the API server would answer: (HTTP status, a JSON object or plain text)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            return status(401, "Unauthorized", "Unauthorized")
        if not request.path.startswith(PREFIX):
            return status(405, "MethodNotAllowed", f"the stand-in does not serve {request.path}")
        if not self.kserve_installed:
            return 404, "404 page not found\n"
        namespace, plural, *rest = request.path.removeprefix(PREFIX).split("/")
        name = rest[0] if len(rest) == 1 else None
        verb = VERBS.get(request.method)
        if plural != PLURAL or len(rest) > 1 or verb is None or (verb == "create") != (name is None):
            return status(405, "MethodNotAllowed", f"the stand-in does not serve {request.method} {request.path}")
        if verb in self.forbidden:
            subject = f'{PLURAL}.{GROUP} "{name}"' if name else f"{PLURAL}.{GROUP}"
            return status(403, "Forbidden", f'{subject} is forbidden: User "{self.user}" cannot {verb} resource '
                                            f'"{PLURAL}" in API group "{GROUP}" in the namespace "{namespace}"')
        if verb == "get":
            stored = self.stored(namespace, name)
            return (200, stored) if stored else not_found(name)
        body = request.json()
        metadata = body.get("metadata", {})
        if metadata.get("namespace", namespace) != namespace:
            return status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent "
                                             "on the request")
        if verb == "create":
            return self.create(namespace, body)
        if metadata.get("name") != name:
            return status(400, "BadRequest", "the name of the object does not match the name on the URL")
        return self.update(namespace, name, body)

    def create(self, namespace: str, body: dict) -> tuple[int, dict]:
        if self.namespaces is not None and namespace not in self.namespaces:
            return status(404, "NotFound", f'namespaces "{namespace}" not found',
                          {"name": namespace, "group": "", "kind": "namespaces"})
        name = body["metadata"]["name"]
        if self.stored(namespace, name):
            return status(409, "AlreadyExists", f'{PLURAL}.{GROUP} "{name}" already exists', {"name": name})
        stored = copy.deepcopy(body)
        stored["metadata"].update(namespace=namespace, uid=f"uid-{name}", generation=1,
                                  creationTimestamp="2026-01-01T00:00:00Z", resourceVersion=str(next(self._versions)))
        self.objects[namespace, name] = stored
        return 201, stored

    def update(self, namespace: str, name: str, body: dict) -> tuple[int, dict]:
        stored = self.stored(namespace, name)
        if stored is None:
            return not_found(name)
        if self.changed_by_others:
            self.changed_by_others -= 1
            stored["metadata"]["resourceVersion"] = str(next(self._versions))
        if not body["metadata"].get("resourceVersion"):
            return status(422, "Invalid", f'{PLURAL}.{GROUP} "{name}" is invalid: metadata.resourceVersion: Invalid '
                                          "value: 0x0: must be specified for an update", {"name": name})
        if body["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"]:
            return status(409, "Conflict", f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": the object '
                                           "has been modified; please apply your changes to the latest version and "
                                           "try again", {"name": name})
        updated = copy.deepcopy(body)
        kept = {key: stored["metadata"][key] for key in ("uid", "creationTimestamp", "generation")}
        updated["metadata"].update(namespace=namespace, **kept)
        if "status" in stored:
            updated["status"] = stored["status"]
        if updated != stored:
            updated["metadata"]["resourceVersion"] = str(next(self._versions))
            updated["metadata"]["generation"] += updated.get("spec") != stored.get("spec")
        self.objects[namespace, name] = updated
        return 200, updated


def status(code: int, reason: str, message: str, details: dict | None = None) -> tuple[int, dict]:
    """A v1 Status, as the API server answers an error."""
    answer = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
              "reason": reason, "code": code}
    if details is not None:
        answer["details"] = {"group": GROUP, "kind": PLURAL, **details}
    return code, answer


def not_found(name: str) -> tuple[int, dict]:
    return status(404, "NotFound", f'{PLURAL}.{GROUP} "{name}" not found', {"name": name})
