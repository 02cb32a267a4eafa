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
"""

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.images import DEFAULT_REGISTRY, IMAGE_KINDS, check_registry
from kdflow.components.common.summary import score_rows
from kdflow.components.distill.hyperparameters import check_processes

from . import cluster, containers, image_build, presets

# kfp.local streams each task's log through print(); a task's own input error ends up in it as this line.
INPUT_ERROR_LINE = re.compile(r"KdflowInputError: (.+)$")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except KdflowInputError as error:
        print(f"kdflow: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdflow", description="Knowledge distillation as Kubeflow Pipelines.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the pipeline locally with kfp.local")
    run.add_argument("--preset", default="smoke", help=f"parameter set: {', '.join(presets.PRESETS)} (default smoke)")
    run.add_argument("--data", help="dataset: a local folder or gs:// prefix with train/test files, or a hub name")
    run.add_argument("--output", default="runs/latest", help="folder for summary.json and the run's artifacts")
    run.add_argument("--publish-uri", help="publish a student that passes its gate here (gs://bucket/prefix or a folder)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                     help="override a pipeline parameter (repeatable)")
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
    compile_.add_argument("--output", help="where to write the YAML (default distillation.yaml, "
                                           "distillation-argo.yaml or distillation-argo-cron.yaml)")
    compile_.add_argument("--gcp-key-secret", default="",
                          help="mount this Kubernetes secret's key.json as GCS credentials in every task "
                               "(default: the pod's service account, through Workload Identity)")
    compile_.add_argument("--image-registry", default=DEFAULT_REGISTRY,
                          help=f"registry of the task images, REGISTRY/kdflow-KIND:VERSION (default {DEFAULT_REGISTRY})")
    add_scale_arguments(compile_)
    compile_.set_defaults(command=compile_command)

    cluster.add_submit_arguments(commands.add_parser(
        "submit", help="upload the compiled pipeline to Kubeflow Pipelines and start a run"))
    cluster.add_schedule_arguments(commands.add_parser(
        "schedule", help="create or replace (--list, --delete) a recurring run that retrains on a cron schedule"))

    images = commands.add_parser("images", help="container images of the steps").add_subparsers(
        required=True, metavar="COMMAND")
    build = images.add_parser("build", help="build the CPU runtime and CUDA trainer images from images/",
                              epilog="Arguments after -- go to the engine's build command unchanged.")
    build.add_argument("--engine", choices=image_build.ENGINES, default=image_build.default_engine(),
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
    train.add_argument("--teacher", required=True, help="a fine-tuned BERT teacher's folder (both sides use it)")
    train.add_argument("--data", required=True, help="a folder with train.parquet and test.parquet (text, label)")
    train.add_argument("--output", default="bench/train", help="working folder; bench_train.json goes here")
    train.add_argument("--rows", type=int, default=1000, help="training rows of each side (default 1000)")
    train.add_argument("--eval-rows", type=int, default=1000, help="held-out test rows both students are scored on")
    train.add_argument("--max-length", type=int, default=512, help="tokens kept per review (default 512)")
    train.add_argument("--epochs", type=float, default=2.0)
    train.add_argument("--recipe-max-steps", type=int, default=0,
                       help="stop the recipe after this many steps and extrapolate its time (for long GPU runs)")
    train.add_argument("--repeats", type=int, default=3, help="runs of both sides; figures are medians (default 3)")
    train.add_argument("--student-layers", type=int, default=3)
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--peak-tflops", type=float, default=0.0,
                       help="the GPU's dense bf16 peak, for model FLOPs utilisation (default: known GPUs by name)")
    train.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                       help="change a setting of kdflow's distill step (batch_size, learning_rate, precision, ...)")
    train.set_defaults(command=bench_train_command)
    infer = benches.add_parser("infer", help="throughput and accuracy of teacher, student and its ONNX files")
    infer.add_argument("--teacher", required=True, help="a fine-tuned teacher's folder")
    infer.add_argument("--student", required=True, help="a trained student's folder")
    infer.add_argument("--data", required=True, help="a folder with test.parquet (text, label)")
    infer.add_argument("--output", default="bench/infer", help="folder for the ONNX files and bench_infer.json")
    infer.add_argument("--rows", type=int, default=512, help="test rows, served at batch 32 (default 512)")
    infer.add_argument("--batch-1-rows", type=int, default=64, help="of those, the rows served one at a time")
    infer.add_argument("--max-length", type=int, default=512)
    infer.add_argument("--repeats", type=int, default=3, help="passes; figures are medians (default 3)")
    infer.set_defaults(command=bench_infer_command)
    return parser


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings that shape the DAG and its GPU requests, so they are fixed when the pipeline is built."""
    parser.add_argument("--teacher-shards", type=at_least_one, default=1, metavar="N",
                        help="compute the teacher's logits on the training data in N parallel tasks, one GPU each, "
                             "merged in row order (default 1: within teacher_eval)")
    parser.add_argument("--nproc", type=at_least_one, default=1, metavar="N",
                        help="run distill in N processes under torchrun on one node, requesting N GPUs; batch_size "
                             "stays the global batch (default 1)")


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def scale_settings(args) -> dict:
    return {"teacher_shards": args.teacher_shards, "nproc": args.nproc}


def run_command(args) -> int:
    overrides = presets.parse_overrides(args.overrides)
    if args.publish_uri:
        overrides["publish_uri"] = args.publish_uri
    parameters = presets.resolve(args.preset, overrides, args.data)
    check_processes(parameters["batch_size"], args.nproc)
    for destination in ("publish_uri", "checkpoint_uri"):
        if parameters[destination]:
            # Here and not in presets.check: kdflow submit's machine need not have the cluster's write access.
            storage.check_writable(parameters[destination], destination)
    if args.runner == "docker":
        parameters = containers.with_absolute_local_paths(parameters)
    if parameters["publish_uri"] and not parameters["model_version"]:
        # Versions sort by time; the run knows its version, so it can report the publish decision.
        parameters["model_version"] = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    output = Path(args.output).resolve()
    summary_path = output / "summary.json"
    report_path = output / "quality_report.html"
    for stale in (summary_path, report_path):  # a previous run's results must not pass for this run's
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    outputs = run_locally(parameters, output / "pipeline_root", args.runner, scale_settings(args))
    summary = summary_of_run(outputs, parameters, args.preset, time.monotonic() - started)
    if parameters["publish_uri"]:
        summary["publish"] = publish_decision(parameters)
    output.mkdir(parents=True, exist_ok=True)
    shutil.copy(summary["artifacts"]["quality_report"], report_path)
    summary_path.write_text(json.dumps(summary, indent=2))
    print(results_table(summary))
    print(f"\nsummary: {summary_path}\nquality report: {report_path}")
    return 0


def run_locally(parameters: dict, pipeline_root: Path, runner: str = "subprocess",
                settings: dict | None = None) -> dict:
    """Runs the pipeline with kfp.local, its steps in this interpreter or in containers; returns its outputs by name.

    `settings`: platform settings the pipeline is built with (teacher_shards, nproc).
    """
    import kfp.local

    from . import platform
    from .distillation import distillation_pipeline

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if runner == "docker":
        pipeline, task_runner = containers.pipeline_and_runner(distillation_pipeline, parameters, settings or {})
    else:
        pipeline = platform.with_settings(distillation_pipeline, **(settings or {}))
        task_runner = kfp.local.SubprocessRunner(use_venv=False)
    kfp.local.init(runner=task_runner, pipeline_root=str(pipeline_root))
    log = Tee(sys.stdout)
    try:
        with contextlib.redirect_stdout(log):
            return pipeline(**parameters).outputs
    except RuntimeError as failure:
        reasons = [match.group(1) for line in log.lines() if (match := INPUT_ERROR_LINE.search(line))]
        if reasons:
            raise KdflowInputError(reasons[-1]) from None
        raise SystemExit(f"kdflow: error: the pipeline failed ({failure}); the failing step's log is above.") from None


class Tee(io.TextIOBase):
    """Writes through to a stream and keeps a copy, so a failed run's log can be searched for its reason."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def lines(self) -> list[str]:
        return self.copy.getvalue().splitlines()


def summary_of_run(outputs: dict, parameters: dict, preset: str, duration_s: float) -> dict:
    """summary.json: the report step's summary of the run, with the run's settings and where its artifacts are."""
    summary = json.loads(outputs["summary"])
    artifacts = {name: artifact.path for name, artifact in outputs.items() if name != "summary"}
    artifacts["quality_report"] = summary.pop("report")
    return {**summary, "preset": preset, "parameters": parameters, "duration_s": round(duration_s, 1),
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
    onnx = summary["onnx"]
    lines = [f"{'model':<24}{'accuracy':>10}{'macro F1':>10}"]
    lines += [f"{name:<24}{accuracy:>10.4f}{'' if f1 is None else f'{f1:.4f}':>10}"
              for name, accuracy, f1 in score_rows(summary)]
    gate = "passed" if summary["gate"]["passed"] else "FAILED"
    lines.append(f"retention {summary['retention']:.4f} (gate {gate} at {summary['gate']['min_retention']}), "
                 f"ONNX max |diff| {onnx['max_abs_diff']:.2e}, {summary['duration_s']:.0f} s")
    if "publish" in summary:
        decision = summary["publish"]
        verdict = "promoted to latest" if decision["promoted"] else "not promoted"
        lines.append(f"publish: version {decision['version']} {verdict} ({decision.get('version_uri', decision.get('reason'))})")
    return "\n".join(lines)


def compile_command(args) -> int:
    if args.target == "argo":
        return compile_argo(args)
    if args.cron:
        raise KdflowInputError("--cron makes an Argo CronWorkflow: add --target argo.")
    args.output = args.output or "distillation.yaml"
    from kfp import compiler

    from . import platform
    from .distillation import distillation_pipeline

    check_registry(args.image_registry, "--image-registry")
    pipeline = platform.with_settings(distillation_pipeline, gcp_key_secret=args.gcp_key_secret,
                                      image_registry=args.image_registry, **scale_settings(args))
    compiler.Compiler().compile(pipeline, package_path=args.output)
    print(f"compiled pipeline: {args.output}")
    return 0


def compile_argo(args) -> int:
    from . import argo, platform
    from .distillation import distillation_pipeline

    if args.gcp_key_secret:
        raise KdflowInputError(
            "--gcp-key-secret is for the KFP target: on Argo, steps and the GCS artifact repository take their "
            "credentials from the workflow's service account (e.g. argo submit --serviceaccount NAME)."
        )
    if args.teacher_shards > 1:
        raise KdflowInputError(
            "--teacher-shards is for the KFP target: Argo has no step that collects the artifacts of a loop's "
            "tasks, which merging the shards needs; compile for Argo without it (teacher_eval computes the logits)."
        )
    check_registry(args.image_registry, "--image-registry")
    pipeline = platform.with_settings(distillation_pipeline, image_registry=args.image_registry, nproc=args.nproc)
    if args.cron:
        document, output = argo.cron_workflow(args.cron, pipeline), args.output or "distillation-argo-cron.yaml"
    else:
        document, output = argo.workflow_template(pipeline), args.output or "distillation-argo.yaml"
    argo.write(document, output)
    print(f"compiled Argo {document['kind']}: {output}")
    return 0


def images_build_command(args) -> int:
    image_build.build(args.engine, [args.only] if args.only else list(IMAGE_KINDS), args.registry, args.base_image,
                      args.engine_args)
    return 0


def bench_train_command(args) -> int:
    from .bench import train

    train.bench_train(teacher=args.teacher, data=args.data, output=args.output, rows=args.rows,
                      eval_rows=args.eval_rows, max_length=args.max_length, epochs=args.epochs,
                      recipe_max_steps=args.recipe_max_steps, repeats=args.repeats, student_layers=args.student_layers,
                      seed=args.seed, distill_settings=train.parse_settings(args.settings),
                      peak_tflops=args.peak_tflops)
    return 0


def bench_infer_command(args) -> int:
    from .bench import infer

    infer.bench_infer(teacher=args.teacher, student=args.student, data=args.data, output=args.output, rows=args.rows,
                      batch_1_rows=args.batch_1_rows, max_length=args.max_length, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
