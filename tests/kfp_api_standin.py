"""A stand-in for the Kubeflow Pipelines API server, which cannot run here: an HTTP server on 127.0.0.1 that
answers the v2beta1 endpoints kfp.Client calls for `kdflow submit` and `kdflow schedule`, keeps what it was
sent, and records every request so tests can assert what a cluster would receive.

It keeps pipelines, versions, experiments, runs and recurring runs in memory, filters lists by the
display_name EQUALS predicate kfp sends, and, when given a token, answers 401 to any other call that does
not carry it (healthz stays open, as behind many Kubeflow gateways). Given a `refusal` status, it answers every
request with it, healthz included, as a gateway that refuses the credentials before the API sees them. Given a
certificate and its key, it serves HTTPS.
"""

import itertools
import json
from dataclasses import dataclass, field

from api_standin import ApiStandIn, Request

API = "/apis/v2beta1"


@dataclass
class KfpApiStandIn(ApiStandIn):
    token: str | None = None
    refusal: int | None = None  # an HTTP status for every request, e.g. 403
    certificate: tuple[str, str] | None = None  # PEM files of the certificate and its key: serve HTTPS
    requests: list[Request] = field(default_factory=list)
    pipelines: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    experiments: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    recurring_runs: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self._ids = itertools.count(1)

    def calls(self, method: str, path: str) -> list[Request]:
        return [request for request in self.requests if request.method == method and request.path == API + path]

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    def answer(self, request: Request) -> tuple[int, dict]:
        """What the API server would answer: (HTTP status, JSON body)."""
        if self.refusal:
            return self.refusal, {"error": "refused", "code": 7, "message": "the gateway refused the request"}
        if self.token and request.path != f"{API}/healthz" and \
                request.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "unauthenticated", "code": 16, "message": "request is not authenticated"}
        route = (request.method, request.path.removeprefix(API))
        if route == ("GET", "/healthz"):
            return 200, {"multi_user": False}
        if route == ("GET", "/pipelines"):
            return 200, {"pipelines": self.listed(self.pipelines, request)}
        if route == ("POST", "/pipelines/upload"):
            return 200, self.upload_pipeline(request)
        if route == ("POST", "/pipelines/upload_version"):
            return 200, self.add_version(request.query["pipelineid"], request.query["name"])
        if route[0] == "GET" and route[1].startswith("/pipelines/") and route[1].endswith("/versions"):
            pipeline_id = route[1].split("/")[2]
            versions = [v for v in self.versions.values() if v["pipeline_id"] == pipeline_id]
            newest_first = request.query.get("sort_by") == "created_at desc"
            versions.sort(key=lambda v: v["created_at"], reverse=newest_first)
            return 200, {"pipeline_versions": versions[:int(request.query.get("page_size", 10))]}
        if route == ("GET", "/experiments"):
            return 200, {"experiments": self.listed(self.experiments, request)}
        if route == ("POST", "/experiments"):
            return 200, self.stored(self.experiments, "experiment_id", request.json())
        if route == ("POST", "/runs"):
            return 200, self.stored(self.runs, "run_id", {**request.json(), "state": "PENDING"})
        if route == ("GET", "/recurringruns"):
            scheduled = [r for r in self.listed(self.recurring_runs, request)
                         if r["experiment_id"] == request.query.get("experiment_id", r["experiment_id"])]
            return 200, {"recurringRuns": scheduled, "total_size": len(scheduled)}  # the API's JSON name
        if route == ("POST", "/recurringruns"):
            return 200, self.stored(self.recurring_runs, "recurring_run_id", request.json())
        if route[0] == "DELETE" and route[1].startswith("/recurringruns/"):
            self.recurring_runs.pop(route[1].split("/")[2])
            return 200, {}
        return 404, {"error": f"no such endpoint {route}", "code": 5, "message": "not found"}

    def stored(self, table: dict, id_key: str, item: dict) -> dict:
        item[id_key] = self.new_id(id_key.removesuffix("_id"))
        table[item[id_key]] = item
        return item

    def listed(self, table: dict, request: Request) -> list:
        items = list(table.values())
        namespace = request.query.get("namespace")
        if namespace:
            items = [item for item in items if item.get("namespace") == namespace]
        for predicate in json.loads(request.query.get("filter", '{"predicates": []}'))["predicates"]:
            assert predicate["operation"] in (1, "EQUALS") and predicate["key"] == "display_name", predicate
            items = [item for item in items if item["display_name"] == predicate["stringValue"]]
        return items

    def upload_pipeline(self, request: Request) -> dict:
        pipeline = self.stored(self.pipelines, "pipeline_id", {
            "display_name": request.query["name"], "namespace": request.query.get("namespace", "")})
        # The API server makes the first version from the uploaded file, named after the pipeline.
        self.add_version(pipeline["pipeline_id"], request.query["name"])
        return pipeline

    def add_version(self, pipeline_id: str, name: str) -> dict:
        assert pipeline_id in self.pipelines, pipeline_id
        return self.stored(self.versions, "pipeline_version_id", {
            "pipeline_id": pipeline_id, "display_name": name,
            "created_at": f"2026-01-01T00:00:{len(self.versions):02d}Z"})
