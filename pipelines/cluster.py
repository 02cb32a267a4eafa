"""The client of a Kubeflow Pipelines API, through the real kfp.Client: runs (`kdflow submit`) and recurring runs
(`kdflow schedule`) of the compiled pipeline.

    kdflow submit --host URL --namespace NS --pipeline-root gs://BUCKET/pipeline-root \\
        --service-account kdflow-pipeline-runner --param teacher=gs://BUCKET/teachers/bert-imdb
    kdflow schedule --host URL --namespace NS --cron "0 0 3 * * 0" --param teacher=... --param publish_uri=gs://...
    kdflow schedule --host URL --namespace NS --list
    kdflow schedule --host URL --namespace NS --delete kdflow-retraining

Both upload the compiled pipeline as a new version of a named pipeline (created the first time) and run that
version. Authentication, as Kubeflow users do it: a bearer token (--token or KDFLOW_KFP_TOKEN), a session
cookie (--cookies), or, in a pod, the projected service-account token (audience pipelines.kubeflow.org) at
kfp's path, which kfp's ServiceAccountTokenVolumeCredentials reads again before every call. An API behind a
private CA needs that CA's certificate (--ca-bundle): kfp.Client trusts certifi's public CAs only, and reads
neither SSL_CERT_FILE nor REQUESTS_CA_BUNDLE.

Every option is checked before the API is called; refusals (401, 403, a failed TLS check) come back at once as one
sentence.
"""

import contextlib
import json
import os
import re
import ssl
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import kfp
import kfp_server_api
import urllib3
import yaml
from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH
from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import KDFLOW_VERSION
from kdflow.components.common.storage import masked_uri

from .distillation import DATA_VERSION, PIPELINE_NAME
from .platform import check_http_url, check_kubernetes_name

TOKEN_ENV = "KDFLOW_KFP_TOKEN"
COMPILED_PIPELINE = files("kdflow.pipelines") / "distillation.yaml"
# Filled in by KFP's scheduler for each run of a recurring run (Go layout 20060102150405, UTC).
SCHEDULED_TIME = "[[ScheduledTime]]"
PAGE_SIZE = 100

# KFP cron (robfig/cron): seconds, minutes, hours, day of month, month, day of week; its parser takes five
# fields too, reading them from the seconds on, so a crontab line would silently run at the wrong times.
CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
               ("month", 1, 12), ("day of week", 0, 6))
# Argo's CronWorkflow (robfig/cron's standard parser): the same fields without the seconds.
ARGO_CRON_FIELDS = CRON_FIELDS[1:]
CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
CRON_TERM = re.compile(r"^(?:(?P<all>[*?])|(?P<start>\w+)(?:-(?P<end>\w+))?)(?:/(?P<step>\d+))?$")


@dataclass(frozen=True)
class Cluster:
    """A Kubeflow Pipelines API, who calls it, and where kdflow's runs go on it."""

    host: str | None = None  # e.g. https://kubeflow.example.com/pipeline; None: KF_PIPELINES_ENDPOINT or in-cluster
    namespace: str | None = None  # the Kubeflow profile namespace (multi-user clusters)
    token: str | None = None  # a bearer token; None: KDFLOW_KFP_TOKEN, else --cookies, else the pod's token
    cookies: str | None = None  # a session cookie, e.g. 'authservice_session=...'
    ca_bundle: str | None = None  # PEM file of the CA that signed the API's TLS certificate; None: certifi's CAs
    experiment: str = "kdflow"  # the experiment the runs belong to
    pipeline_name: str = PIPELINE_NAME  # the pipeline each upload adds a version to
    pipeline_root: str | None = None  # gs:// URI of the runs' artifacts; None: the namespace's kfp-launcher ConfigMap
    service_account: str | None = None  # the Kubernetes service account of the runs' pods

    def __post_init__(self):
        if self.host is not None:
            check_host(self.host)
        if self.namespace is not None:
            check_kubernetes_name("--namespace", self.namespace, label=True)
        if self.service_account is not None:
            check_kubernetes_name("--service-account", self.service_account)
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise KdflowInputError(f"--ca-bundle {self.ca_bundle} is not a file: give the PEM certificate of the CA "
                                   "that signed the API's TLS certificate.")
        for option, secret in (("--token", self.token), ("--cookies", self.cookies)):
            # A newline would end the HTTP header early; the value itself is never printed.
            if secret is not None and (not secret.strip() or not secret.isprintable()):
                raise KdflowInputError(f"{option} is empty or holds control characters: paste it again, without "
                                       "line breaks.")
        check_display_name("--experiment", self.experiment)
        check_display_name("--pipeline-name", self.pipeline_name)
        check_pipeline_root(self.pipeline_root)


@dataclass(frozen=True)
class Scheduled:
    """A recurring run that `schedule` created."""

    recurring_run_id: str
    cron: str  # as KFP got it
    replaced: bool  # whether it replaced recurring runs of the same name


def submit(cluster: Cluster, package: str, parameters: dict, run_name: str, no_cache: bool = False) -> str:
    """Uploads `package` as a new version of the pipeline and starts a run of it; returns the run's id.

    `no_cache` sets data_version to the submit time, which every step depends on, so every step runs again.
    """
    parameters = dict(parameters)
    if no_cache:
        if parameters[DATA_VERSION]:
            raise KdflowInputError(f"--no-cache sets data_version itself: drop --param data_version="
                                   f"{parameters[DATA_VERSION]}, or drop --no-cache to reuse that version's cache.")
        parameters[DATA_VERSION] = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    check_display_name("--run-name", run_name)
    path = checked_package(package)
    with api_errors(cluster.host):
        client = connect(cluster)
        pipeline_id, version_id, experiment_id = upload_into_experiment(client, cluster, path)
        run = client.run_pipeline(
            experiment_id=experiment_id, job_name=run_name, params=parameters, pipeline_id=pipeline_id,
            version_id=version_id, pipeline_root=cluster.pipeline_root, service_account=cluster.service_account,
        )
    return run.run_id


def schedule(cluster: Cluster, package: str, name: str, cron: str, parameters: dict) -> Scheduled:
    """Uploads `package` as a new version of the pipeline and runs it on the KFP `cron` (six fields) as the
    recurring run `name`, one run at a time and without catch-up, replacing any of that name."""
    cron = check_cron(cron)
    check_display_name("--name", name)
    parameters = dict(parameters)
    if parameters[DATA_VERSION]:
        raise KdflowInputError(f"--param data_version={parameters[DATA_VERSION]} cannot be fixed for a schedule: "
                               "each run sets it to its scheduled time so that it reads fresh data; drop it.")
    if not parameters["publish_uri"]:
        raise KdflowInputError("A scheduled retraining publishes its student: pass --param publish_uri=gs://BUCKET/"
                               "models (a new student replaces the published one only when it passes the gate).")
    # Every scheduled run gets another data_version, so data_prep reads the source again and, its output
    # being new, no later step is taken from the cache either.
    parameters[DATA_VERSION] = SCHEDULED_TIME
    path = checked_package(package)
    with api_errors(cluster.host):
        client = connect(cluster)
        pipeline_id, version_id, experiment_id = upload_into_experiment(client, cluster, path)
        replaced = list(recurring_runs(client, experiment_id, name))
        # Created before the old one goes, so a failure never leaves the pipeline unscheduled.
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=name, cron_expression=cron, max_concurrency=1,
            no_catchup=True, params=parameters, pipeline_id=pipeline_id, version_id=version_id,
            pipeline_root=cluster.pipeline_root, service_account=cluster.service_account,
        )
        for old in replaced:
            client.delete_recurring_run(old.recurring_run_id)
    return Scheduled(created.recurring_run_id, cron, bool(replaced))


def list_schedules(cluster: Cluster) -> list:
    """The recurring runs of the experiment (kfp_server_api V2beta1RecurringRun), none when it does not exist."""
    with api_errors(cluster.host):
        client = connect(cluster)
        experiment = find_experiment(client, cluster.experiment, cluster.namespace)
        return list(recurring_runs(client, experiment.experiment_id)) if experiment else []


def delete_schedule(cluster: Cluster, name: str) -> None:
    """Deletes the experiment's recurring runs named `name`; refuses when there is none."""
    check_display_name("--delete", name)
    with api_errors(cluster.host):
        client = connect(cluster)
        experiment = find_experiment(client, cluster.experiment, cluster.namespace)
        named = list(recurring_runs(client, experiment.experiment_id, name)) if experiment else []
        if not named:
            raise KdflowInputError(f"--delete {name}: experiment {cluster.experiment} has no recurring run "
                                   "of that name; `kdflow schedule --list` shows them.")
        for recurring in named:
            client.delete_recurring_run(recurring.recurring_run_id)


def check_cron(expression: str) -> str:
    """`expression` when it is a six-field KFP cron; otherwise one sentence that says how to write it."""
    fields = expression.split()
    if len(fields) == 5:
        raise KdflowInputError(
            f"--cron {expression!r} has five fields, but KFP cron has six with seconds first: "
            f"write --cron '0 {' '.join(fields)}'.")
    if len(fields) != 6:
        raise KdflowInputError(
            f"--cron {expression!r} is not a KFP cron: give six fields, seconds first, e.g. '0 0 3 * * 0' "
            "(Sundays at 03:00 UTC).")
    check_cron_fields(expression, CRON_FIELDS, "0 0 3 * * 0")
    return " ".join(fields)


def check_cron_fields(expression: str, kinds: tuple, example: str) -> None:
    """Refuses the first field of `expression` that robfig/cron would not parse as its kind (name, low, high)."""
    for text, (field, low, high) in zip(expression.split(), kinds):
        if not all(cron_term_is_valid(term, field, low, high) for term in text.split(",")):
            raise KdflowInputError(
                f"--cron {expression!r}: {text!r} is not a valid {field} field (values {low}-{high}, with "
                f"*, ranges a-b, lists a,b and steps */n); e.g. '{example}' runs Sundays at 03:00 UTC.")


def cron_term_is_valid(term: str, field: str, low: int, high: int) -> bool:
    match = CRON_TERM.match(term)
    if not match or match["step"] == "0":
        return False
    if match["all"]:
        return True
    start = cron_value(match["start"], field)
    end = cron_value(match["end"], field) if match["end"] else start
    return start is not None and end is not None and low <= start <= end <= high


def cron_value(text: str, field: str) -> int | None:
    if text.isdigit():
        return int(text)
    names = CRON_NAMES.get(field, [])
    return names.index(text.lower()) + (field == "month") if text.lower() in names else None


def next_runs(cron: str, after: datetime | None = None, count: int = 3) -> list[datetime]:
    """The next `count` times (UTC) a checked cron runs after `after` (now): six fields with seconds first (KFP), or
    five (Argo). croniter computes them; it parses more than robfig/cron does (day of week 7, L, #), so the checks
    above stay what decides whether a cron is valid."""
    from croniter import croniter

    times = croniter(cron, after or datetime.now(timezone.utc), second_at_beginning=len(cron.split()) == 6)
    return [times.get_next(datetime) for _ in range(count)]


def next_runs_text(cron: str) -> str:
    return "next runs (UTC): " + ", ".join(f"{time:%a %Y-%m-%d %H:%M:%S}" for time in next_runs(cron))


def checked_package(package: str) -> Path:
    """The compiled pipeline to upload; warns when its images can only be on this machine."""
    path = Path(package)
    if not path.is_file():
        raise KdflowInputError(f"--package {package} is not a file: compile one with "
                               "`kdflow compile --output distillation.yaml`.")
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    local = sorted({executor["container"]["image"] for executor in executors.values()
                    if executor["container"]["image"].startswith("localhost/")})
    if local:
        print(f"kdflow: warning: {package} runs images of this machine ({', '.join(local)}); a cluster pulls them "
              "only if they were loaded onto its nodes: compile the pipeline for your registry (see "
              "`kdflow compile --help`) and pass it with --package.", file=sys.stderr)
    return path


def check_pipeline_root(pipeline_root: str | None) -> None:
    if pipeline_root is not None and "://" not in pipeline_root:
        raise KdflowInputError(f"--pipeline-root {masked_uri(pipeline_root)} is not an object-store URI: give e.g. "
                               "gs://BUCKET/pipeline-root (the cluster's pods cannot see a local folder).")


def check_host(host: str) -> None:
    """An http(s) URL without credentials, which kfp.Client would drop without a word."""
    check_http_url("--host", host, "https://kubeflow.example.com/pipeline",
                   f"which kfp.Client does not send: drop them and pass --token (or {TOKEN_ENV}) or --cookies")


def check_display_name(option: str, name: str) -> None:
    if not name.strip() or not name.isprintable():
        raise KdflowInputError(f"{option} {name!r} is empty or holds control characters: give a name of printable "
                               "characters.")


def connect(cluster: Cluster):
    """A kfp.Client for the cluster's host, authenticated by its token, KDFLOW_KFP_TOKEN, its cookies or the pod's
    token."""
    token = cluster.token or os.environ.get(TOKEN_ENV)
    credentials = None
    projected_token = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)
    if not token and not cluster.cookies and projected_token.is_file():
        credentials = ServiceAccountTokenVolumeCredentials(str(projected_token))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # kfp warns on every Client about pre-2.0 servers
        # The namespace goes with each call, not here: kfp.Client would also take it as the namespace KFP is
        # installed in when it finds the API in-cluster.
        return Client(host=cluster.host, existing_token=token, cookies=cluster.cookies, credentials=credentials,
                      ssl_ca_cert=cluster.ca_bundle)


class Client(kfp.Client):
    """kfp.Client asking the API's healthz once when it connects. kfp's own asks up to five times, 5 s apart, and
    logs a traceback for each failure: a gateway refusing the token took 25 s and five tracebacks to end in a
    TimeoutError that blamed the host."""

    def get_kfp_healthz(self, sleep_duration: int = 5):
        return self._healthz_api.healthz_service_get_healthz()


@contextlib.contextmanager
def api_errors(host: str | None):
    """Turns the API's refusals, a failed TLS check and an unreachable host into one sentence for the user."""
    where = masked_uri(host or os.environ.get("KF_PIPELINES_ENDPOINT") or "the in-cluster Kubeflow Pipelines API")
    try:
        yield
    except kfp_server_api.ApiException as error:
        hint = {401: f"check --token (or {TOKEN_ENV}) or --cookies",
                403: f"check --token (or {TOKEN_ENV}) or --cookies, and that their user has access to --namespace"}
        raise KdflowInputError(f"{where} answered HTTP {error.status} {error.reason} ({api_message(error.body)}): "
                               f"{hint.get(error.status, 'check --host and --namespace')}.") from None
    except urllib3.exceptions.HTTPError as error:
        cause = getattr(error, "reason", error)  # a MaxRetryError holds the last attempt's error
        if isinstance(cause, urllib3.exceptions.SSLError) and isinstance(cause.args[0], ssl.SSLCertVerificationError):
            raise KdflowInputError(
                f"{where} failed the TLS certificate check ({cause.args[0].verify_message}): if it uses a private "
                "CA, pass that CA's certificate with --ca-bundle FILE.pem.") from None
        raise KdflowInputError(f"{where} cannot be reached ({type(cause).__name__}): check --host, "
                               "e.g. https://kubeflow.example.com/pipeline.") from None


def api_message(body) -> str:
    try:
        return json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(body or "").strip()[:200] or "no message"


def upload_into_experiment(client, cluster: Cluster, package: Path) -> tuple[str, str, str]:
    """Uploads the package as a new pipeline version; returns its pipeline, version and experiment ids."""
    pipeline_id, version_id = upload_version(client, package, cluster.pipeline_name, cluster.namespace)
    experiment = client.create_experiment(cluster.experiment, namespace=cluster.namespace)
    return pipeline_id, version_id, experiment.experiment_id


def upload_version(client, package: Path, pipeline_name: str, namespace: str | None) -> tuple[str, str]:
    """Uploads `package` as a new version of `pipeline_name`, creating the pipeline the first time."""
    pipeline_id = find_pipeline_id(client, pipeline_name, namespace)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline_name,
                                             namespace=namespace).pipeline_id
        # A new pipeline comes with its first version, made from the uploaded file.
        versions = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
        return pipeline_id, versions.pipeline_versions[0].pipeline_version_id
    version_name = f"{pipeline_name}-{KDFLOW_VERSION}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
    return pipeline_id, version.pipeline_version_id


def name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline_id(client, name: str, namespace: str | None) -> str | None:
    pipelines = client.list_pipelines(filter=name_filter(name), namespace=namespace, page_size=2).pipelines or []
    if len(pipelines) > 1:
        raise KdflowInputError(f"--pipeline-name {name} names {len(pipelines)} pipelines: choose a unique name.")
    return pipelines[0].pipeline_id if pipelines else None


def find_experiment(client, name: str, namespace: str | None):
    found = client.list_experiments(filter=name_filter(name), namespace=namespace, page_size=1).experiments
    return found[0] if found else None


def recurring_runs(client, experiment_id: str, name: str | None = None):
    """The experiment's recurring runs (those named `name`, when given), page by page."""
    page_token = ""
    while True:
        page = client.list_recurring_runs(experiment_id=experiment_id, page_token=page_token, page_size=PAGE_SIZE,
                                          filter=name_filter(name) if name else None)
        yield from page.recurring_runs or []
        page_token = page.next_page_token
        if not page_token:
            return
