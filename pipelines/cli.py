"""The `kdflow` command line.

    kdflow run --preset smoke --output runs/smoke          # the whole pipeline in this process (kfp.local)
    kdflow run --preset imdb --set teacher=PATH --set max_train_samples=2000
    kdflow run --preset smoke --runner docker             # every step in its container image
    kdflow compile --output distillation.yaml              # the pipeline as KFP YAML, for a cluster
    kdflow compile --target argo [--cron "0 3 * * 0"]      # an Argo WorkflowTemplate (or CronWorkflow)
    kdflow submit --host URL --param teacher=gs://...      # a run on Kubeflow Pipelines (see cluster.py)
    kdflow schedule --host URL --cron "0 0 3 * * 0" ...    # scheduled retraining on Kubeflow Pipelines
    kdflow images build                                    # the container images the steps run in
    kdflow bench train --teacher DIR --data DIR            # kdflow's distill step against the recipe, side by side
    kdflow bench infer --teacher DIR --student DIR --data DIR   # serving speed: teacher, student, its ONNX files
    kdflow bench quality --data DIR                        # each loss addition against the honest baselines
    kdflow bench tokenizer --tokenizer DIR --data DIR      # the served model's tokenizer against Hugging Face's
    kdflow bench int8 --export DIR --data DIR              # the int8 file's accuracy on several kinds of CPU
    kdflow bench serve --model URI --teacher DIR --data DIR  # kdflow serve against the teacher's HF pipeline
    kdflow bench shapes --data DIR                         # a teacher and a published student of the recipe's shapes
    kdflow serve PUBLISH_URI/MODEL_NAME [--http-port 8080] # the published champion on KServe's model server

Every parser is here, and every command is a function of this module that calls the pipeline's modules: presets,
targets (kfp, argo, local, images), cluster and bench. Library code raises KdflowInputError (exit status 2) or
KdflowFailure (1); only main turns them into exit statuses.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowFailure, KdflowInputError
from kdflow.components.common.images import DEFAULT_REGISTRY, IMAGE_KINDS, check_registry
from kdflow.components.common.results import RunSummary, score_rows
from kdflow.components.serving.settings import ServeSettings

from . import cluster, presets
from .distillation import PIPELINE_NAME
from .platform import GKE_ACCELERATOR_LABEL, Placement, Platform
from .targets import argo, images, kfp, local, run_folder

BENCH = "kdflow.pipelines.bench"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except KdflowInputError as error:
        print(f"kdflow: error: {error}", file=sys.stderr)
        return 2
    except KdflowFailure as failure:
        print(f"kdflow: error: {failure}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # kdflow run says more, where it knows which step it stopped
        print("kdflow: interrupted.", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdflow", description="Knowledge distillation as Kubeflow Pipelines.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline locally with kfp.local")
    run.add_argument("--preset", default="smoke", help=f"parameter set: {', '.join(presets.PRESETS)} (default smoke)")
    run.add_argument("--data", help="dataset: a local folder, gs:// or s3:// prefix with train/test files, or a hub "
                                    "name")
    run.add_argument("--output", type=folder_to_write, default="runs/latest", help="folder for summary.json and the run's artifacts")
    run.add_argument("--publish-uri", help="publish a student that passes its gate here (gs:// or s3://bucket/prefix, or a folder)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable)")
    run.add_argument("--verbose", action="store_true",
                     help="stream every step's log here as it runs (default: a line per step; the logs go to "
                          "OUTPUT/logs/STEP.log)")
    run.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                     help="subprocess: every step in this Python environment (default); docker: every step in its "
                          "container image, through Docker or podman's Docker API socket (DOCKER_HOST)")
    add_scale_arguments(run)
    run.set_defaults(command=run_command)

    compile_ = commands.add_parser("compile", help="compile the pipeline to KFP YAML or Argo Workflows resources")
    compile_.add_argument("--target", choices=("kfp", "argo"), default="kfp",
                          help="kfp: a KFP pipeline; argo: an Argo WorkflowTemplate, for Argo without KFP "
                               "(default kfp)")
    compile_.add_argument("--cron", metavar="SCHEDULE",
                          help="with --target argo: a CronWorkflow running the WorkflowTemplate on this five-field "
                               "schedule (UTC), e.g. '0 3 * * 0'")
    compile_.add_argument("--output", type=file_to_write, help="where to write the YAML (default distillation.yaml, "
                                           "distillation-argo.yaml or distillation-argo-cron.yaml)")
    compile_.add_argument("--gcp-key-secret", default="",
                          help="mount this Kubernetes secret's key.json as GCS credentials in every task "
                               "(default: the pod's service account, through Workload Identity)")
    compile_.add_argument("--s3-secret", default="", metavar="NAME",
                          help="set this Kubernetes secret's keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY as "
                               "environment variables of every task, the credentials of s3:// locations")
    compile_.add_argument("--s3-endpoint", default="", metavar="URL",
                          help="set AWS_ENDPOINT_URL in every task: the http(s) URL of an S3-compatible store such as "
                               "MinIO or SeaweedFS (default: AWS S3)")
    compile_.add_argument("--image-registry", default=DEFAULT_REGISTRY,
                          help=f"registry of the task images, REGISTRY/kdflow-KIND:VERSION (default {DEFAULT_REGISTRY})")
    add_scale_arguments(compile_)
    add_scheduling_arguments(compile_)
    compile_.set_defaults(command=compile_command)

    submit = commands.add_parser("submit", help="upload the compiled pipeline to Kubeflow Pipelines and start a run")
    add_cluster_arguments(submit)
    add_scheduling_arguments(submit)
    submit.add_argument("--run-name", help="display name of the run (default: kdflow-PRESET-TIME)")
    submit.add_argument("--no-cache", action="store_true",
                        help="run every step again: sets data_version to the submit time, which every step depends on")
    submit.set_defaults(command=submit_command)

    schedule = commands.add_parser(
        "schedule", help="create or replace (--list, --delete) a recurring run that retrains on a cron schedule")
    add_cluster_arguments(schedule)
    add_scheduling_arguments(schedule)
    action = schedule.add_mutually_exclusive_group(required=True)
    action.add_argument("--cron", help='KFP cron, six fields with seconds first, e.g. "0 0 3 * * 0" (Sundays 03:00 UTC)')
    action.add_argument("--list", action="store_true", help="list the recurring runs of the experiment")
    action.add_argument("--delete", metavar="NAME", help="delete the recurring run NAME")
    schedule.add_argument("--name", default="kdflow-retraining", help="recurring run to create or replace "
                                                                      "(default kdflow-retraining)")
    schedule.set_defaults(command=schedule_command)

    serve = commands.add_parser(
        "serve", help="serve a published student on KServe's model server: text in, labels out (v1 and v2 REST)")
    serve.add_argument("model", metavar="MODEL",
                       help="a model's folder holding latest.json (PUBLISH_URI/MODEL_NAME: the version it names, "
                            "reloaded when it moves) or one published version (PUBLISH_URI/MODEL_NAME/VERSION); a "
                            "folder, gs:// or s3://")
    for item in dataclasses.fields(ServeSettings):
        serve.add_argument(f"--{item.name.replace('_', '-')}", type=item.type, default=item.default,
                           help=f"{item.metadata['help']} (default {item.default})")
    serve.set_defaults(command=serve_command)

    image_commands = commands.add_parser("images", help="container images of the steps").add_subparsers(
        required=True, metavar="COMMAND")
    build = image_commands.add_parser("build", help="build the CPU runtime and CUDA trainer images from images/",
                              epilog="Arguments after -- go to the engine's build command unchanged.")
    build.add_argument("--engine", choices=images.ENGINES, default=images.default_engine(),
                       help="the container engine (default: docker if on PATH, else podman)")
    build.add_argument("--registry", default=DEFAULT_REGISTRY,
                       help=f"tag the images REGISTRY/kdflow-KIND:VERSION (default {DEFAULT_REGISTRY})")
    build.add_argument("--only", choices=IMAGE_KINDS, help="build this image only (default: both)")
    build.add_argument("--base-image", default="", help="the BASE_IMAGE build argument (default: the Dockerfile's)")
    build.add_argument("engine_args", nargs="*", metavar="-- ENGINE_ARG", help=argparse.SUPPRESS)
    build.set_defaults(command=images_build_command)

    bench = commands.add_parser("bench", help="benchmarks: distillation against the recipe, and serving speed")
    benches = bench.add_subparsers(required=True, metavar="COMMAND")
    train = benches.add_parser("train", help="the recipe as written and kdflow's distill step, side by side")
    train.add_argument("--teacher", type=existing_folder, required=True, help="a fine-tuned BERT teacher's folder (both sides use it)")
    train.add_argument("--data", type=existing_folder, required=True, help="a folder with train.parquet and test.parquet (text, label)")
    train.add_argument("--output", type=folder_to_write, default="bench/train", help="working folder; bench_train.json goes here")
    train.add_argument("--rows", type=whole_number(1), default=1000, help="training rows of each side (default 1000)")
    train.add_argument("--eval-rows", type=whole_number(1), default=1000, help="held-out test rows both students are scored on")
    train.add_argument("--max-length", type=whole_number(1), default=512, help="tokens kept per review (default 512)")
    train.add_argument("--epochs", type=finite_number, default=2.0)
    train.add_argument("--recipe-max-steps", type=whole_number(0), default=0,
                       help="stop the recipe after this many steps and extrapolate its time (for long GPU runs)")
    train.add_argument("--repeats", type=whole_number(1), default=3, help="runs of both sides; figures are medians (default 3)")
    train.add_argument("--student-layers", type=whole_number(1), default=3)
    train.add_argument("--seed", type=whole_number(0), default=42)
    train.add_argument("--peak-tflops", type=finite_number, default=0.0,
                       help="the GPU's dense bf16 peak, for model FLOPs utilisation (default: known GPUs by name)")
    train.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                       help="change a setting of kdflow's distill step (batch_size, learning_rate, precision, ...)")
    train.set_defaults(command=bench_train_command)
    infer = benches.add_parser("infer", help="throughput and accuracy of teacher, student and its ONNX files")
    infer.add_argument("--teacher", type=existing_folder, required=True, help="a fine-tuned teacher's folder")
    infer.add_argument("--student", type=existing_folder, required=True, help="a trained student's folder")
    infer.add_argument("--data", type=existing_folder, required=True, help="a folder with test.parquet (text, label)")
    infer.add_argument("--output", type=folder_to_write, default="bench/infer", help="folder for the ONNX files and bench_infer.json")
    infer.add_argument("--rows", type=whole_number(1), default=512, help="test rows, served at batch 32 (default 512)")
    infer.add_argument("--batch-1-rows", type=whole_number(1), default=64, help="of those, the rows served one at a time")
    infer.add_argument("--max-length", type=whole_number(1), default=512)
    infer.add_argument("--repeats", type=whole_number(1), default=3, help="passes; figures are medians (default 3)")
    infer.set_defaults(command=bench_infer_command)
    serving = benches.add_parser("serve", help="kdflow serve against a Hugging Face pipeline of the teacher, under "
                                               "the same load at several concurrencies")
    serving.add_argument("--model", required=True, help="what kdflow serve serves: PUBLISH_URI/MODEL_NAME or a version")
    serving.add_argument("--teacher", type=existing_folder, required=True, help="the fine-tuned teacher's folder")
    serving.add_argument("--data", type=existing_folder, required=True, help="a folder with test.parquet (text, label)")
    serving.add_argument("--output", type=folder_to_write, default="bench/serve",
                         help="folder for bench_serve.json, bench_serve.md and the servers' logs")
    serving.add_argument("--requests", type=whole_number(1), default=1000,
                         help="reviews per pass, each pass its own; each concurrency answers at most this many "
                              "(default 1000)")
    serving.add_argument("--duration-s", type=float, default=60.0, help="most seconds per concurrency (default 60)")
    serving.add_argument("--concurrency", type=whole_number(1), nargs="+", default=[1, 8, 32],
                         help="clients asking at once, one level after another (default 1 8 32)")
    serving.add_argument("--passes", type=whole_number(1), default=3,
                         help="passes over the levels, each on reviews of its own; figures are medians (default 3)")
    serving.add_argument("--max-length", type=whole_number(1), default=256,
                         help="the teacher's truncation, in tokens (default 256, the minilm preset's)")
    serving.set_defaults(command=bench_serve_command)
    shapes = benches.add_parser("shapes", help="a teacher and a published student of the recipe's shapes (random "
                                               "weights), for bench serve")
    shapes.add_argument("--data", type=existing_folder, required=True,
                        help="a folder with train.parquet and test.parquet (text, label)")
    shapes.add_argument("--output", type=folder_to_write, default="bench/shapes",
                        help="a new or empty folder for the models, the published version and the steps' files")
    shapes.add_argument("--rows", type=whole_number(1), default=2000,
                        help="training rows: they calibrate the int8 file, 2%% of them bound its drop (default 2000)")
    shapes.add_argument("--eval-rows", type=whole_number(1), default=500,
                        help="test rows onnx_export measures the exports on (default 500)")
    shapes.set_defaults(command=bench_shapes_command)
    tokenizer = benches.add_parser("tokenizer", help="the served model's tokenizer against Hugging Face's, on every "
                                                    "test text")
    tokenizer.add_argument("--tokenizer", type=existing_folder, required=True,
                           help="a folder with a Hugging Face tokenizer (a student's, or a pretrained model's)")
    tokenizer.add_argument("--data", type=existing_folder, required=True, help="a folder with test.parquet (text)")
    tokenizer.add_argument("--max-length", type=whole_number(1), default=256, help="tokens kept (default 256)")
    tokenizer.add_argument("--output", type=folder_to_write, default="bench/tokenizer",
                           help="folder for bench_tokenizer.json")
    tokenizer.set_defaults(command=bench_tokenizer_command)
    int8 = benches.add_parser("int8", help="the int8 file's accuracy against fp32 on OpenVINO, for several kinds of "
                                           "CPU imitated on this one")
    int8.add_argument("--export", type=existing_folder, required=True,
                      help="an onnx_export output folder or a published version (model.onnx, model.int8.qdq.onnx)")
    int8.add_argument("--data", type=existing_folder, required=True,
                      help="the data_prep output it was exported from (its test split is scored)")
    int8.add_argument("--also", nargs="+", default=[], metavar="ONNX_FILE",
                      help="other int8 files of the same model to score beside it")
    int8.add_argument("--max-eval-samples", type=whole_number(0), default=0,
                      help="test rows to score; 0 scores them all (default)")
    int8.add_argument("--output", type=folder_to_write, default="bench/int8",
                      help="folder for bench_int8.json and bench_int8.md")
    int8.set_defaults(command=bench_int8_command)
    quality = benches.add_parser("quality", help="the baselines and each distillation configuration, over seeds")
    quality.add_argument("--data", type=existing_folder, required=True,
                         help="a folder with train, test and unsup parquet files (text, label), such as the IMDb splits")
    quality.add_argument("--output", type=folder_to_write, default="bench/quality",
                         help="working folder; bench_quality.json and .md go here (a cut-off bench resumes from them)")
    quality.add_argument("--rows", type=whole_number(1), default=2000, help="labeled training rows (default 2000)")
    quality.add_argument("--eval-rows", type=whole_number(1), default=5000, help="test rows every model is scored on")
    quality.add_argument("--seeds", type=whole_number(1), default=3, help="trainings of each configuration (default 3)")
    quality.add_argument("--unlabeled-rows", type=whole_number(1), default=4000,
                         help="unlabeled rows the teacher labels for the configurations that use them (default 4000)")
    quality.add_argument("--configurations", type=comma_separated, default=(), metavar="KEY,...",
                         help="train only these (a, b, logits, intermediate, unlabeled, intermediate+unlabeled); "
                              "default all")
    quality.add_argument("--preset", default="minilm", help="the preset whose parameters the bench runs (default minilm)")
    quality.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                         help="change a pipeline parameter of the preset (max_length, ...)")
    quality.set_defaults(command=bench_quality_command)
    return parser


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings that shape the DAG and its GPU requests, so they are fixed when the pipeline is built."""
    parser.add_argument("--teacher-shards", type=whole_number(1), default=Platform.teacher_shards, metavar="N",
                        help="compute the teacher's logits on the training data in N parallel tasks, one GPU each, "
                             "merged in row order (default 1: within teacher_eval)")
    parser.add_argument("--nproc", type=whole_number(1), default=Platform.processes, metavar="N",
                        help="run distill in N processes under torchrun on one node, requesting N GPUs; batch_size "
                             "stays the global batch (default 1)")


def add_scheduling_arguments(parser: argparse.ArgumentParser) -> None:
    """Where on Kubernetes the CPU steps and the GPU steps run and what they reserve there: compiled into the pipeline,
    so `submit` and `schedule` given any of them compile a package for them."""
    options = parser.add_argument_group(
        "pod scheduling", "compiled into the pipeline (submit and schedule compile one for them), for the GPU steps "
                          "(teacher_train, teacher_eval, teacher_shard, distill and its baseline) and the CPU steps "
                          "(the others) separately")
    for steps in ("cpu", "gpu"):
        which = f"the {steps.upper()} steps"
        options.add_argument(f"--{steps}-node-selector", action="append", default=[], metavar="KEY=VALUE",
                             help=f"run {which} only on nodes with this label (repeatable)")
        options.add_argument(f"--{steps}-toleration", dest=f"{steps}_tolerations", action="append", default=[],
                             metavar="KEY[=VALUE]:EFFECT",
                             help=f"let {which} run on nodes with this taint, written as `kubectl taint` writes it; "
                                  "without =VALUE whatever its value (repeatable)")
        options.add_argument(f"--{steps}-step-requests", default="", metavar="cpu=N,memory=N",
                             help=f"CPU and memory each pod of {which} reserves, e.g. cpu=2,memory=8Gi")
        options.add_argument(f"--{steps}-step-limits", default="", metavar="cpu=N,memory=N",
                             help=f"the most CPU and memory each pod of {which} may use, e.g. cpu=4,memory=16Gi")
    options.add_argument("--gpu-type", default="", metavar="VALUE",
                         help="run the GPU steps on nodes whose --gpu-type-label has this value, e.g. "
                              "nvidia-tesla-a100 (default: any GPU node)")
    options.add_argument("--gpu-type-label", default=GKE_ACCELERATOR_LABEL, metavar="KEY",
                         help=f"the node label that names the GPU type (default {GKE_ACCELERATOR_LABEL}, GKE's; "
                              "nvidia.com/gpu.product on nodes labelled by the NVIDIA GPU operator)")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `submit` and `schedule` share: where the API is, who we are, what the runs get."""
    parser.add_argument("--host", help="the Kubeflow Pipelines API, e.g. https://kubeflow.example.com/pipeline "
                                       "(default: KF_PIPELINES_ENDPOINT, else kfp's in-cluster address)")
    parser.add_argument("--namespace", help="the Kubeflow profile namespace (multi-user clusters)")
    parser.add_argument("--experiment", default="kdflow", help="experiment the runs belong to (default kdflow)")
    parser.add_argument("--token", help=f"bearer token for the API (default: the {cluster.TOKEN_ENV} environment "
                                        "variable)")
    parser.add_argument("--cookies", help="session cookie for the API, e.g. 'authservice_session=...'")
    parser.add_argument("--ca-bundle", metavar="FILE.pem",
                        help="PEM certificate of the CA that signed the API's TLS certificate, for a private CA "
                             "(kfp.Client trusts public CAs only; it reads neither SSL_CERT_FILE nor "
                             "REQUESTS_CA_BUNDLE)")
    parser.add_argument("--package", help="compiled pipeline to upload (default: the one in this package, or with "
                                          "scheduling options one compiled for them; compile your own with your "
                                          "image registry, see `kdflow compile`)")
    parser.add_argument("--pipeline-name", default=PIPELINE_NAME, help=f"pipeline to add a version to "
                                                                       f"(default {PIPELINE_NAME})")
    parser.add_argument("--pipeline-root", help="gs:// URI for the runs' artifacts "
                                                "(default: defaultPipelineRoot of the namespace's kfp-launcher ConfigMap)")
    parser.add_argument("--service-account", help="Kubernetes service account the runs' pods use, "
                                                  "e.g. kdflow-pipeline-runner from manifests/")
    parser.add_argument("--preset", default="imdb", help=f"parameter set: {', '.join(presets.PRESETS)} (default imdb)")
    parser.add_argument("--param", "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="set a pipeline parameter (repeatable)")


# argparse types: a bad value stops the command with argparse's one line naming the option, before any work.
def whole_number(least: int):
    """An int of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
        return value
    return parse


def finite_number(text: str) -> float:
    """A finite float of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be a finite number of 0 or more")
    return value


def comma_separated(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def existing_folder(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return text


def folder_to_write(text: str) -> str:
    """A folder that may not exist yet; not a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file: give a folder")
    return text


def file_to_write(text: str) -> str:
    """A file that may not exist yet; not a folder."""
    if Path(text).is_dir() or text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder: give a file name in it")
    return text


def platform_of(args, **settings) -> Platform:
    """The compile-time settings of the pipeline a command builds."""
    return Platform(teacher_shards=args.teacher_shards, processes=args.nproc, **settings)


def scheduling_of(args) -> dict:
    """The Platform settings of add_scheduling_arguments' options."""
    return dict(
        cpu_steps=Placement("cpu", node_selector=tuple(args.cpu_node_selector), tolerations=tuple(args.cpu_tolerations),
                            requests=args.cpu_step_requests, limits=args.cpu_step_limits),
        gpu_steps=Placement("gpu", node_selector=tuple(args.gpu_node_selector), tolerations=tuple(args.gpu_tolerations),
                            requests=args.gpu_step_requests, limits=args.gpu_step_limits),
        gpu_type=args.gpu_type, gpu_type_label=args.gpu_type_label,
    )


def run_command(args) -> int:
    overrides = presets.parse_overrides(args.overrides)
    if args.publish_uri:
        overrides["publish_uri"] = args.publish_uri
    platform = platform_of(args)
    parameters = presets.resolve(args.preset, overrides, args.data, platform)
    # Here and not in presets.check: kdflow submit's machine need not reach the cluster's API or storage.
    if parameters["deploy"]:
        check_cluster_access(parameters, args.runner)
    for destination in ("publish_uri", "checkpoint_uri"):
        if parameters[destination]:
            storage.check_writable(parameters[destination], destination)
    if args.runner == "docker":
        parameters = local.with_absolute_local_paths(parameters)
    if parameters["publish_uri"] and not parameters["model_version"]:
        # Versions sort by time; the run knows its version, so it can report the publish decision.
        parameters["model_version"] = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    output = Path(args.output).resolve()
    with run_folder.held(output):
        return run_in_folder(output, parameters, args, platform)


def check_cluster_access(parameters: dict, runner: str) -> None:
    """A run that deploys needs the Kubernetes API at its very end: checked before it starts, as its destinations."""
    if runner == "docker":
        raise KdflowInputError("deploy=true cannot run with --runner docker: the deploy step's container sees neither "
                               "KUBECONFIG nor a cluster's service account; use --runner subprocess or set "
                               "deploy=false.")
    from kdflow.components.deploy import task as deploy  # the Kubernetes client, only for a run that deploys

    deploy.check_access(parameters["deploy_namespace"], parameters["model_name"])


def run_in_folder(output: Path, parameters: dict, args, platform: Platform) -> int:
    """The run, once it holds its folder: the pipeline, then summary.json and the quality report beside its logs."""
    summary_path = output / "summary.json"
    report_path = output / "quality_report.html"
    for stale in (summary_path, report_path):  # a previous run's results must not pass for this run's
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    logs = run_folder.StepLogs(output / "logs", sys.stdout, args.verbose)
    try:
        with logs.capturing():
            outputs = local.run_locally(parameters, output / "pipeline_root", args.runner, platform)
    except KdflowFailure as failure:
        raise KdflowFailure(f"{failure}: see {logs.failed_log or logs.run_log.name}.") from None
    except KeyboardInterrupt:
        step = f"in {logs.step} " if logs.step else ""
        print(f"kdflow: interrupted {step}after {time.monotonic() - started:.0f} s; the finished steps' outputs stay "
              f"in {output / 'pipeline_root'} and their logs in {logs.folder}; a new run starts from the first step.",
              file=sys.stderr)
        return 130
    for step in local.step_names(platform):
        if step not in logs.seen:
            print(f"{step}: skipped (its condition was false)")
    summary = summary_of_run(outputs, parameters, args.preset, time.monotonic() - started)
    if parameters["publish_uri"]:
        summary["publish"] = publish_decision(parameters)
    shutil.copy(summary["artifacts"]["quality_report"], report_path)
    summary_path.write_text(json.dumps(summary, indent=2))
    print(results_table(summary))
    print(f"\nsummary: {summary_path}\nquality report: {report_path}\nlogs: {output / 'logs'}")
    tracking = RunSummary.from_dict(summary).tracking
    if tracking:
        where = f"run {tracking.run_id}" if tracking.run_id else tracking.log_dir
        print(f"tracking: {tracking.report_to} at {tracking.tracking_uri}, {tracking.run_name}/{tracking.step} "
              f"({where})")
    return 0


def summary_of_run(outputs: dict, parameters: dict, preset: str, duration_s: float) -> dict:
    """summary.json: the report step's summary of the run (a RunSummary), with the run's settings and where its
    artifacts are."""
    summary = RunSummary.from_json(outputs["summary"])
    artifacts = {name: artifact.path for name, artifact in outputs.items()
                 if name not in ("summary", "quality_report_uri")}
    artifacts["quality_report"] = outputs["quality_report_uri"]
    return {**summary.to_dict(), "preset": preset, "parameters": parameters, "duration_s": round(duration_s, 1),
            "artifacts": artifacts}


def publish_decision(parameters: dict) -> dict:
    """The publish step's decision, as it recorded it at the destination; none when the gate stopped it."""
    recorded = storage.read_text(storage.join(
        parameters["publish_uri"], parameters["model_name"], "decisions", f"{parameters['model_version']}.json"))
    if recorded is None:
        return {"promoted": False, "version": parameters["model_version"],
                "reason": "the student did not pass its gate, so publish did not run"}
    return json.loads(recorded)


def results_table(summary: dict) -> str:
    """The run's scores as `kdflow run` prints them; `summary` is summary.json's content (summary_of_run's)."""
    record = RunSummary.from_dict(summary)
    rows = score_rows(record)
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [f"{'model':<{width}}{'accuracy':>10}{'macro F1':>10}"]
    lines += [f"{name:<{width}}{accuracy:>10.4f}{'' if f1 is None else f'{f1:.4f}':>10}" for name, accuracy, f1 in rows]
    gate = "passed" if record.gate.passed else "FAILED"
    if record.student.multi_label:
        lines.append("multi-label: accuracy is the share of rows with every label right; the gate compares macro F1")
    lines.append(f"retention {record.retention:.4f} (gate {gate} at {record.gate.min_retention}), "
                 f"ONNX max |diff| {record.onnx.max_abs_diff:.2e}, {summary['duration_s']:.0f} s")
    lines += [f"gate: {reason}" for reason in record.gate.reasons]
    if "publish" in summary:
        decision = summary["publish"]
        verdict = "promoted to latest" if decision["promoted"] else "not promoted"
        lines.append(f"publish: version {decision['version']} {verdict} ({decision.get('version_uri', decision.get('reason'))})")
    return "\n".join(lines)


def compile_command(args) -> int:
    check_registry(args.image_registry, "--image-registry")
    platform = platform_of(args, gcp_key_secret=args.gcp_key_secret, image_registry=args.image_registry,
                           s3_secret=args.s3_secret, s3_endpoint=args.s3_endpoint, **scheduling_of(args))
    if args.target == "argo":
        output = args.output or ("distillation-argo-cron.yaml" if args.cron else "distillation-argo.yaml")
        kind = argo.compile_pipeline(platform, output, args.cron)
        print(f"compiled Argo {kind}: {output}" + (f"; {cluster.next_runs_text(args.cron)}" if args.cron else ""))
        return 0
    if args.cron:
        raise KdflowInputError("--cron makes an Argo CronWorkflow: add --target argo.")
    output = args.output or "distillation.yaml"
    kfp.compile_pipeline(platform, output)
    print(f"compiled pipeline: {output}")
    return 0


def cluster_of(args) -> cluster.Cluster:
    """The Kubeflow Pipelines API and run settings that `submit` and `schedule` were given."""
    return cluster.Cluster(host=args.host, namespace=args.namespace, token=args.token, cookies=args.cookies,
                           ca_bundle=args.ca_bundle,
                           experiment=args.experiment, pipeline_name=args.pipeline_name,
                           pipeline_root=args.pipeline_root, service_account=args.service_account)


def run_parameters(args) -> dict:
    """The parameters every run gets: the preset's, then --param values, checked before anything is sent."""
    return presets.resolve(args.preset, presets.parse_overrides(args.overrides))


@contextlib.contextmanager
def package_to_upload(args):
    """The compiled pipeline `submit` and `schedule` upload: --package, by default the one in this package; with
    scheduling options, the pipeline compiled for them into a temporary file."""
    platform = Platform(**scheduling_of(args))
    if platform == Platform():
        yield args.package or str(cluster.COMPILED_PIPELINE)
        return
    if args.package:
        raise KdflowInputError(f"--package {args.package} is compiled already, so scheduling options cannot change it: "
                               "compile it with them (`kdflow compile ... --output FILE`), or drop --package.")
    with tempfile.TemporaryDirectory(prefix="kdflow-") as folder:
        package = str(Path(folder) / "distillation.yaml")
        kfp.compile_pipeline(platform, package)
        yield package


def submit_command(args) -> int:
    run_name = f"kdflow-{args.preset}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}" if args.run_name is None \
        else args.run_name
    with package_to_upload(args) as package:
        run_id = cluster.submit(cluster_of(args), package, run_parameters(args), run_name, args.no_cache)
    print(f"run id: {run_id}")
    return 0


def schedule_command(args) -> int:
    if args.list:
        scheduled = cluster.list_schedules(cluster_of(args))
        for recurring in scheduled:
            cron = recurring.trigger.cron_schedule.cron if recurring.trigger.cron_schedule else "periodic"
            upcoming = cluster.next_runs_text(cron) if recurring.trigger.cron_schedule else ""
            print(f"{recurring.display_name}\t{cron}\t{recurring.mode}\t{recurring.recurring_run_id}\t{upcoming}")
        if not scheduled:
            print(f"no recurring runs in experiment {args.experiment}")
        return 0
    if args.delete is not None:
        cluster.delete_schedule(cluster_of(args), args.delete)
        print(f"deleted recurring run {args.delete}")
        return 0
    with package_to_upload(args) as package:
        created = cluster.schedule(cluster_of(args), package, args.name, args.cron, run_parameters(args))
    verb = "replaced" if created.replaced else "created"
    print(f"{verb} recurring run {args.name} ({created.recurring_run_id}): cron {created.cron!r}, one run at a time, "
          f"no catch-up; {cluster.next_runs_text(created.cron)}")
    return 0


def images_build_command(args) -> int:
    images.build(args.engine, [args.only] if args.only else list(IMAGE_KINDS), args.registry, args.base_image,
                 args.engine_args)
    return 0


def bench_module(name: str):
    """kdflow.pipelines.bench.NAME, imported only when a bench command runs: the container images leave the
    benchmarks out (images/*.Dockerfile)."""
    try:
        return import_module(f"{BENCH}.{name}")
    except ModuleNotFoundError as missing:
        if missing.name not in (BENCH, f"{BENCH}.{name}"):
            raise
        raise KdflowInputError("the benchmarks are not installed in this image: run them from a source checkout "
                               "(`pip install -e .`).") from None


def bench_train_command(args) -> int:
    train = bench_module("train")

    train.bench_train(teacher=args.teacher, data=args.data, output=args.output, rows=args.rows,
                      eval_rows=args.eval_rows, max_length=args.max_length, epochs=args.epochs,
                      recipe_max_steps=args.recipe_max_steps, repeats=args.repeats, student_layers=args.student_layers,
                      seed=args.seed, distill_settings=train.parse_settings(args.settings),
                      peak_tflops=args.peak_tflops)
    return 0


def serve_command(args) -> int:
    from kdflow.components.serving import server

    settings = ServeSettings(**{item.name: getattr(args, item.name) for item in dataclasses.fields(ServeSettings)})
    server.serve(args.model, settings)
    return 0


def bench_infer_command(args) -> int:
    infer = bench_module("infer")

    infer.bench_infer(teacher=args.teacher, student=args.student, data=args.data, output=args.output, rows=args.rows,
                      batch_1_rows=args.batch_1_rows, max_length=args.max_length, repeats=args.repeats)
    return 0


def bench_serve_command(args) -> int:
    bench_module("serve").bench_serve(model=args.model, teacher=args.teacher, data=args.data, output=args.output,
                                      requests=args.requests, duration_s=args.duration_s,
                                      concurrency=tuple(args.concurrency), passes=args.passes,
                                      max_length=args.max_length)
    return 0


def bench_shapes_command(args) -> int:
    bench_module("shapes").bench_shapes(data=args.data, output=args.output, rows=args.rows, eval_rows=args.eval_rows)
    return 0


def bench_tokenizer_command(args) -> int:
    bench_module("tokenizer").bench_tokenizer(tokenizer=args.tokenizer, data=args.data, output=args.output,
                                              max_length=args.max_length)
    return 0


def bench_int8_command(args) -> int:
    bench_module("int8").bench_int8(export=args.export, data=args.data, output=args.output, also=tuple(args.also),
                                    max_eval_samples=args.max_eval_samples)
    return 0


def bench_quality_command(args) -> int:
    quality = bench_module("quality")

    quality.bench_quality(data=args.data, output=args.output, rows=args.rows, eval_rows=args.eval_rows,
                          seeds=args.seeds, unlabeled_rows=args.unlabeled_rows, configurations=args.configurations,
                          preset=args.preset,
                          overrides=presets.parse_overrides(args.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
