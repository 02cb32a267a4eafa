"""The pipeline on a Kubeflow cluster: `kdflow submit` and `kdflow schedule`, through the real kfp.Client.

    kdflow submit --host URL --namespace NS --pipeline-root gs://BUCKET/pipeline-root \\
        --service-account kdflow-pipeline-runner --param teacher=gs://BUCKET/teachers/bert-imdb
    kdflow schedule --host URL --namespace NS --cron "0 0 3 * * 0" --param teacher=... --param publish_uri=gs://...
    kdflow schedule --host URL --namespace NS --list
    kdflow schedule --host URL --namespace NS --delete kdflow-retraining

Both upload the compiled pipeline as a new version of a named pipeline (created the first time) and run that
version. Authentication, as Kubeflow users do it: a bearer token (--token or KDFLOW_KFP_TOKEN), a session
cookie (--cookies), or, in a pod, the projected service-account token (audience pipelines.kubeflow.org) at
kfp's path, which kfp's ServiceAccountTokenVolumeCredentials reads again before every call.
"""

import contextlib
import json
import os
import re
import sys
import warnings
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

from . import presets
from .distillation import PIPELINE_NAME

TOKEN_ENV = "KDFLOW_KFP_TOKEN"
COMPILED_PIPELINE = files("kdflow.pipelines") / "distillation.yaml"
DATA_VERSION = "data_version"
# Filled in by KFP's scheduler for each run of a recurring run (Go layout 20060102150405, UTC).
SCHEDULED_TIME = "[[ScheduledTime]]"
PAGE_SIZE = 100

# KFP cron (robfig/cron): seconds, minutes, hours, day of month, month, day of week; its parser takes five
# fields too, reading them from the seconds on, so a crontab line would silently run at the wrong times.
CRON_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31),
               ("month", 1, 12), ("day of week", 0, 6))
CRON_NAMES = {
    "month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    "day of week": ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}
CRON_TERM = re.compile(r"^(?:(?P<all>[*?])|(?P<start>\w+)(?:-(?P<end>\w+))?)(?:/(?P<step>\d+))?$")


def add_cluster_arguments(parser) -> None:
    """The options `submit` and `schedule` share: where the API is, who we are, what the runs get."""
    parser.add_argument("--host", help="the Kubeflow Pipelines API, e.g. https://kubeflow.example.com/pipeline "
                                       "(default: KF_PIPELINES_ENDPOINT, else kfp's in-cluster address)")
    parser.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user clusters)")
    parser.add_argument("--experiment", default="kdflow", help="experiment the runs belong to (default kdflow)")
    parser.add_argument("--token", help=f"bearer token for the API (default: the {TOKEN_ENV} environment variable)")
    parser.add_argument("--cookies", help="session cookie for the API, e.g. 'authservice_session=...'")
    parser.add_argument("--package", default=str(COMPILED_PIPELINE),
                        help="compiled pipeline to upload (default: the one in this package; "
                             "compile your own with your image registry, see `kdflow compile`)")
    parser.add_argument("--pipeline-name", default=PIPELINE_NAME, help=f"pipeline to add a version to "
                                                                       f"(default {PIPELINE_NAME})")
    parser.add_argument("--pipeline-root", help="gs:// URI for the runs' artifacts "
                                                "(default: defaultPipelineRoot of the namespace's kfp-launcher ConfigMap)")
    parser.add_argument("--service-account", help="Kubernetes service account the runs' pods use, "
                                                  "e.g. kdflow-pipeline-runner from manifests/")
    parser.add_argument("--preset", default="imdb", help=f"parameter set: {', '.join(presets.PRESETS)} (default imdb)")
    parser.add_argument("--param", "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="set a pipeline parameter (repeatable)")


def add_submit_arguments(parser) -> None:
    add_cluster_arguments(parser)
    parser.add_argument("--run-name", help="display name of the run (default: kdflow-PRESET-TIME)")
    parser.add_argument("--no-cache", action="store_true",
                        help="run every step again: sets data_version to the submit time, which every step depends on")
    parser.set_defaults(command=submit_command)


def add_schedule_arguments(parser) -> None:
    add_cluster_arguments(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--cron", help='KFP cron, six fields with seconds first, e.g. "0 0 3 * * 0" (Sundays 03:00 UTC)')
    action.add_argument("--list", action="store_true", help="list the recurring runs of the experiment")
    action.add_argument("--delete", metavar="NAME", help="delete the recurring run NAME")
    parser.add_argument("--name", default="kdflow-retraining", help="recurring run to create or replace "
                                                                    "(default kdflow-retraining)")
    parser.set_defaults(command=schedule_command)


def submit_command(args) -> int:
    parameters = run_parameters(args)
    if args.no_cache:
        if parameters[DATA_VERSION]:
            raise KdflowInputError(f"--no-cache sets data_version itself: drop --param data_version="
                                   f"{parameters[DATA_VERSION]}, or drop --no-cache to reuse that version's cache.")
        parameters[DATA_VERSION] = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    package = checked_package(args.package)
    check_pipeline_root(args.pipeline_root)
    run_name = args.run_name or f"kdflow-{args.preset}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    with api_errors(args.host):
        client = connect(args)
        pipeline_id, version_id, experiment_id = upload_into_experiment(client, args, package)
        run = client.run_pipeline(
            experiment_id=experiment_id, job_name=run_name, params=parameters, pipeline_id=pipeline_id,
            version_id=version_id, pipeline_root=args.pipeline_root, service_account=args.service_account,
        )
    print(f"run id: {run.run_id}")
    return 0


def schedule_command(args) -> int:
    if args.list:
        return list_schedules(args)
    if args.delete:
        return delete_schedule(args)
    return create_schedule(args)


def create_schedule(args) -> int:
    cron = check_cron(args.cron)
    parameters = run_parameters(args)
    if parameters[DATA_VERSION]:
        raise KdflowInputError(f"--param data_version={parameters[DATA_VERSION]} cannot be fixed for a schedule: "
                               "each run sets it to its scheduled time so that it reads fresh data; drop it.")
    if not parameters["publish_uri"]:
        raise KdflowInputError("A scheduled retraining publishes its student: pass --param publish_uri=gs://BUCKET/"
                               "models (a new student replaces the published one only when it passes the gate).")
    # Every scheduled run gets another data_version, so data_prep reads the source again and, its output
    # being new, no later step is taken from the cache either.
    parameters[DATA_VERSION] = SCHEDULED_TIME
    package = checked_package(args.package)
    check_pipeline_root(args.pipeline_root)
    with api_errors(args.host):
        client = connect(args)
        pipeline_id, version_id, experiment_id = upload_into_experiment(client, args, package)
        replaced = list(recurring_runs(client, experiment_id, args.name))
        # Created before the old one goes, so a failure never leaves the pipeline unscheduled.
        created = client.create_recurring_run(
            experiment_id=experiment_id, job_name=args.name, cron_expression=cron, max_concurrency=1,
            no_catchup=True, params=parameters, pipeline_id=pipeline_id, version_id=version_id,
            pipeline_root=args.pipeline_root, service_account=args.service_account,
        )
        for old in replaced:
            client.delete_recurring_run(old.recurring_run_id)
    verb = "replaced" if replaced else "created"
    print(f"{verb} recurring run {args.name} ({created.recurring_run_id}): cron {cron!r}, one run at a time, "
          "no catch-up")
    return 0


def list_schedules(args) -> int:
    with api_errors(args.host):
        client = connect(args)
        experiment = find_experiment(client, args.experiment, args.namespace)
        scheduled = list(recurring_runs(client, experiment.experiment_id)) if experiment else []
    for recurring in scheduled:
        cron = recurring.trigger.cron_schedule.cron if recurring.trigger.cron_schedule else "periodic"
        print(f"{recurring.display_name}\t{cron}\t{recurring.mode}\t{recurring.recurring_run_id}")
    if not scheduled:
        print(f"no recurring runs in experiment {args.experiment}")
    return 0


def delete_schedule(args) -> int:
    with api_errors(args.host):
        client = connect(args)
        experiment = find_experiment(client, args.experiment, args.namespace)
        named = list(recurring_runs(client, experiment.experiment_id, args.delete)) if experiment else []
        if not named:
            raise KdflowInputError(f"--delete {args.delete}: experiment {args.experiment} has no recurring run "
                                   "of that name; `kdflow schedule --list` shows them.")
        for recurring in named:
            client.delete_recurring_run(recurring.recurring_run_id)
    print(f"deleted recurring run {args.delete}")
    return 0


def run_parameters(args) -> dict:
    """The parameters every run gets: the preset's, then --param values, checked before anything is sent."""
    return presets.resolve(args.preset, presets.parse_overrides(args.overrides))


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
    for text, (field, low, high) in zip(fields, CRON_FIELDS):
        if not all(cron_term_is_valid(term, field, low, high) for term in text.split(",")):
            raise KdflowInputError(
                f"--cron {expression!r}: {text!r} is not a valid {field} field (values {low}-{high}, with "
                "*, ranges a-b, lists a,b and steps */n); e.g. '0 0 3 * * 0' runs Sundays at 03:00 UTC.")
    return " ".join(fields)


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
        raise KdflowInputError(f"--pipeline-root {pipeline_root} is not an object-store URI: give e.g. "
                               "gs://BUCKET/pipeline-root (the cluster's pods cannot see a local folder).")


def connect(args):
    """A kfp.Client for --host, authenticated by --token, KDFLOW_KFP_TOKEN, --cookies or the pod's token."""
    token = args.token or os.environ.get(TOKEN_ENV)
    credentials = None
    projected_token = Path(os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH)
    if not token and not args.cookies and projected_token.is_file():
        credentials = ServiceAccountTokenVolumeCredentials(str(projected_token))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # kfp warns on every Client about pre-2.0 servers
        # The namespace goes with each call, not here: kfp.Client would also take it as the namespace KFP is
        # installed in when it finds the API in-cluster.
        return kfp.Client(host=args.host, existing_token=token, cookies=args.cookies, credentials=credentials)


@contextlib.contextmanager
def api_errors(host: str | None):
    """Turns the API's refusals and an unreachable host into one sentence for the user."""
    where = host or os.environ.get("KF_PIPELINES_ENDPOINT") or "the in-cluster Kubeflow Pipelines API"
    try:
        yield
    except kfp_server_api.ApiException as error:
        hint = ("pass --token, set KDFLOW_KFP_TOKEN or pass --cookies with a valid session"
                if error.status in (401, 403) else "check --host and --namespace")
        raise KdflowInputError(f"{where} answered HTTP {error.status} {error.reason} "
                               f"({api_message(error.body)}): {hint}.") from None
    except (urllib3.exceptions.HTTPError, TimeoutError) as error:
        raise KdflowInputError(f"{where} cannot be reached ({type(error).__name__}): check --host, "
                               "e.g. https://kubeflow.example.com/pipeline.") from None


def api_message(body) -> str:
    try:
        return json.loads(body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(body or "").strip()[:200] or "no message"


def upload_into_experiment(client, args, package: Path) -> tuple[str, str, str]:
    """Uploads the package as a new pipeline version; returns its pipeline, version and experiment ids."""
    pipeline_id, version_id = upload_version(client, package, args.pipeline_name, args.namespace)
    experiment = client.create_experiment(args.experiment, namespace=args.namespace)
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
