"""What the teacher_train and distill steps share: their common settings, Trainer settings, experiment tracking, the
padding collator, the curves report."""

import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

from . import storage
from .data import LABEL, MODEL_INPUTS
from .errors import KdflowInputError
from .settings import check_choice, check_positive, check_seed

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAINING_LOG = "training_log.json"  # the Trainer log history, saved in a trained student's folder
PROVENANCE = "distillation.json"  # the settings a student was distilled with (seed included), in its folder
TRACKING = "tracking.json"  # where a model's training was logged (a Tracking), in its folder
# The help of the settings both training steps take, for their Settings declarations.
TRAINING_HELP = {
    "epochs": "Training epochs.",
    "learning_rate": "Peak learning rate (linear decay after 10% warm-up).",
    "precision": "auto (bf16 on GPUs that support it, else fp16; on a CPU, bf16 where it has bf16 kernels, else "
                 "fp32), fp32, bf16 or fp16.",
    "seed": "Random seed of initialisation, shuffling and dropout.",
    "checkpoint_steps": "Optimizer steps between checkpoints, from which a restarted (e.g. preempted) task resumes; "
                        "0 for none.",
    "checkpoint_uri": "Where checkpoints go (gs://, s3:// or a folder on a volume); empty: beside the output in the "
                      "pipeline root.",
}


# The help of the settings of the steps that run a fine-tuned teacher (teacher_check, teacher_eval, teacher_shard).
TEACHER_HELP = {
    "teacher": "URI of the fine-tuned teacher: a folder, a hub id, gs:// or s3://.",
    "precision": "What the teacher computes in: auto (bf16 where the GPU or CPU has bf16 kernels), fp32, bf16 or fp16.",
}


REPORT_TO = ("none", "tensorboard", "mlflow")
# The help of the tracking settings both training steps take (distill adds `tracked_as`).
TRACKING_HELP = {
    "report_to": "Where the Trainer logs its parameters, losses and metrics: none, tensorboard or mlflow (both need "
                 "the kdflow[tracking] extra).",
    "tracking_uri": "Where to: for mlflow an MLflow tracking server (http(s)://HOST:PORT) or a folder (file:PATH or a "
                    "path); for tensorboard a log folder (a path, or gs:// or s3:// uploaded when the step ends). "
                    "Required unless report_to is none.",
    "experiment": "The runs' MLflow experiment, or the folder under tracking_uri for TensorBoard; the pipeline passes "
                  "model_name.",
}
# The pipeline run's name, under which each training logs (RUN_NAME/teacher, /student or /baseline): an environment
# variable, not a setting, since a step's inputs make its cache key and a new name every run would never reuse a
# trained teacher (kubeflow/pipelines#4876). On a cluster it is the run's Argo workflow name (the platform sets it
# from the pod's label), in `kdflow run` the run's own name; elsewhere a name with the time.
RUN_NAME_ENV = "KDFLOW_RUN_NAME"
# The URI schemes each tracker takes besides a plain path: mlflow-skinny has no database store (sqlite:, postgresql:
# ...); an MLflow server keeps its runs wherever it is configured to.
TRACKING_SCHEMES = {"mlflow": ("http", "https", "file"), "tensorboard": ("gs", "s3")}
TRACKING_LOCATIONS = {
    "mlflow": "an MLflow tracking server (http(s)://HOST:PORT) or a folder (file:PATH or a path)",
    "tensorboard": "a log folder (a path, gs://BUCKET/PREFIX or s3://BUCKET/PREFIX)",
}


def check_training_settings(settings) -> None:
    """The checks of the settings both training steps take (see TRAINING_HELP, and their batch_size)."""
    check_choice("precision", settings.precision, PRECISIONS)
    check_positive(settings, "epochs", "batch_size", "learning_rate")
    check_seed(settings.seed)
    if settings.checkpoint_steps < 0:
        raise KdflowInputError(f"checkpoint_steps={settings.checkpoint_steps} must be a number of optimizer steps, or "
                               "0 for no checkpoints.")


def check_tracking_settings(settings) -> None:
    """The checks of the tracking settings (see TRACKING_HELP). There is no default location: one inside the step's
    container would be lost with it."""
    check_choice("report_to", settings.report_to, REPORT_TO)
    tracker = settings.report_to
    if tracker == "none":
        return
    if not settings.tracking_uri:
        raise KdflowInputError(f"report_to={tracker} needs tracking_uri: {TRACKING_LOCATIONS[tracker]}.")
    scheme = re.match(r"([a-zA-Z][\w+.-]*):", settings.tracking_uri)
    if scheme and scheme.group(1).lower() not in TRACKING_SCHEMES[tracker]:
        raise KdflowInputError(f"tracking_uri={storage.masked_uri(settings.tracking_uri)!r} is not a location "
                               f"report_to={tracker} logs to: give {TRACKING_LOCATIONS[tracker]}.")
    if not settings.experiment:
        raise KdflowInputError(f"experiment='' cannot name the {tracker} runs: give it a name.")


def precision_flags(precision: str) -> dict:
    """TrainingArguments flags for a precision; `auto` is bf16 on GPUs that have it, else fp16; on a CPU, bf16
    where oneDNN has bf16 kernels for it (AVX512 or AMX), else fp32: emulated bf16 on an AVX2-only CPU was measured
    25x slower than fp32 (a MiniLM-L6 training step, batch 16, 256 tokens: 77 s against 3 s)."""
    import torch

    precision = resolve_precision(precision)
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not torch.cuda.is_available()}


def resolve_precision(precision: str) -> str:
    """`precision` with `auto` replaced by what this machine runs fastest (see precision_flags); checked."""
    import torch

    check_choice("precision", precision, PRECISIONS)
    on_gpu = torch.cuda.is_available()
    if precision == "auto":
        if on_gpu:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    if precision == "fp16" and not on_gpu:
        raise KdflowInputError("precision=fp16 needs a GPU: use precision=bf16 or fp32 on a CPU.")
    return precision


def trainer_settings(*, output_dir: str, epochs: float, batch_size: int, learning_rate: float, seed: int,
                     precision: str, train_rows: int, gradient_accumulation_steps: int = 1,
                     report_to: str, dataloader_num_workers: int = 0, checkpoint_steps: int = 0) -> dict:
    """Keyword arguments for `TrainingArguments` shared by every kdflow training step.

    Batches are grouped by length (dynamic padding then pads little), the validation split is evaluated each
    epoch, about 20 loss points are logged per run (to `report_to` too, inside `tracked`), and a checkpoint is
    written into `output_dir` (a scratch folder, never the model artifact) every `checkpoint_steps` optimizer
    steps, none when it is 0.
    """
    steps = max(1, int(epochs * train_rows / (batch_size * gradient_accumulation_steps)))
    return dict(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size * 2,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate,
        weight_decay=0.01,
        warmup_steps=0.1,
        seed=seed,
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch",
        save_strategy="steps" if checkpoint_steps else "no",
        **({"save_steps": checkpoint_steps, "save_total_limit": 1} if checkpoint_steps else {}),
        logging_steps=max(1, steps // 20),
        report_to=report_to,
        disable_tqdm=True,
        dataloader_num_workers=dataloader_num_workers,
        # The collators pick their columns; Trainer would otherwise drop extra ones such as teacher_logits.
        remove_unused_columns=False,
        **precision_flags(precision),
    )


@dataclass(frozen=True)
class Tracking:
    """Where one training's parameters, losses and metrics went: the tracker (`report_to`), its `tracking_uri`
    (credentials masked), the experiment, the pipeline run's name and the training (`step`: teacher, student or
    baseline); in MLflow the ids of the experiment and of the run (named RUN_NAME/STEP, tagged kdflow.pipeline_run
    and kdflow.step), in TensorBoard the training's folder of event files."""

    report_to: str
    tracking_uri: str
    experiment: str
    run_name: str
    step: str
    experiment_id: str | None = None
    run_id: str | None = None
    log_dir: str | None = None

    def to_dict(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict) -> "Tracking":
        return cls(**{item.name: values[item.name] for item in fields(cls) if item.name in values})

    def write(self, model_dir) -> None:
        Path(model_dir, TRACKING).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def read(cls, model_dir) -> "Tracking | None":
        """The record in a trained model's folder; None when its training was not tracked."""
        path = Path(model_dir, TRACKING)
        return cls.from_dict(json.loads(path.read_text())) if path.exists() else None


def run_name() -> str:
    """The pipeline run's name (RUN_NAME_ENV); without one, this step's own, by its start time."""
    return os.environ.get(RUN_NAME_ENV) or f"kdflow-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


@contextlib.contextmanager
def tracked(settings, step: str):
    """Inside, what the Trainer logs (its parameters, losses and final metrics) goes to `settings.report_to` as the
    training `step` of the pipeline run (run_name()). Yields where (a Tracking); None when report_to is none,
    and in processes other than the first under torchrun, since the Trainer's callbacks log from the first alone.

    Enter it before any work: a missing tracking library stops the step at once.
    """
    if settings.report_to == "none":
        yield None
        return
    if find_spec(settings.report_to) is None:
        raise KdflowInputError(f"report_to={settings.report_to} needs {settings.report_to}, which this environment "
                               "lacks: install the kdflow[tracking] extra (pip install 'kdflow[tracking]').")
    if int(os.environ.get("RANK", "0")):
        yield None
        return
    where = Tracking(report_to=settings.report_to, tracking_uri=storage.masked_uri(settings.tracking_uri),
                     experiment=settings.experiment, run_name=run_name(), step=step)
    logged = logged_to_mlflow if settings.report_to == "mlflow" else logged_to_tensorboard
    with logged(settings, where) as where:
        yield where


@contextlib.contextmanager
def logged_to_mlflow(settings, where: Tracking):
    """Inside, the Trainer's MLflowCallback logs to a run opened here: it finds it active and leaves it open, so the
    step's evaluation after training lands in it too. (A run the callback opens itself ends with training: with
    transformers 5.25 the evaluation after it opened a second, unnamed run, left RUNNING.) The run ends FAILED when
    the step fails."""
    import mlflow

    # Checkpoints go to checkpoint_uri and the model is the step's artifact: no copies as MLflow artifacts. The
    # file store is in maintenance mode in MLflow 3 and refuses to open unless allowed; a file: URI asks for it.
    with environment(HF_MLFLOW_LOG_ARTIFACTS="0", MLFLOW_ALLOW_FILE_STORE="true"):
        mlflow.set_tracking_uri(settings.tracking_uri)
        experiment = mlflow.set_experiment(settings.experiment)
        tags = {"kdflow.pipeline_run": where.run_name, "kdflow.step": where.step}
        with mlflow.start_run(run_name=f"{where.run_name}/{where.step}", tags=tags) as run:
            yield replace(where, experiment_id=experiment.experiment_id, run_id=run.info.run_id)


@contextlib.contextmanager
def logged_to_tensorboard(settings, where: Tracking):
    """Inside, the Trainer's TensorBoardCallback writes to TRACKING_URI/EXPERIMENT/RUN_NAME/STEP; for object storage
    into a local folder first, uploaded when the step ends (failed or not: the logs of a failed training are the
    useful ones), since TensorBoard writes to gs:// only through TensorFlow."""
    log_dir = storage.join(settings.tracking_uri, settings.experiment, where.run_name, where.step)
    local = tempfile.mkdtemp(prefix="kdflow-tensorboard-") if storage.is_remote(log_dir) else log_dir
    try:
        with environment(TENSORBOARD_LOGGING_DIR=local):
            yield replace(where, log_dir=log_dir)
    finally:
        if local != log_dir:
            storage.upload_folder(local, log_dir)
            shutil.rmtree(local)


@contextlib.contextmanager
def environment(**values: str):
    """Sets environment variables inside, as the tracking callbacks read them, and puts back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def curves_html(log_history: list[dict], title: str) -> str:
    """A self-contained HTML page (the plot inlined as a data URI) with the training and validation losses."""
    return (
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
        f"<h2>{html.escape(title)}</h2>{loss_plot_img(log_history, title)}"
        f"<h3>Log</h3><pre>{html.escape(json.dumps(log_history, indent=1))}</pre></body></html>"
    )


def loss_plot_img(log_history: list[dict], title: str) -> str:
    """An HTML <img> of the losses in a Trainer log history, the PNG inlined as a data URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    series = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.endswith("loss") and "step" in entry:
                series.setdefault(key, []).append((entry["step"], value))
    for key, points in sorted(series.items()):
        axes.plot(*zip(*points), marker="o" if key.startswith("eval") else None, label=key)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss")
    axes.legend()
    axes.set_title(title)
    return figure_img(figure, title)


def figure_img(figure, title: str) -> str:
    """A matplotlib figure as an HTML <img>, the PNG inlined as a data URI; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    picture = base64.b64encode(buffer.getvalue()).decode()
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{picture}'>"


# Training batches pad to a multiple of this many tokens. With few distinct shapes oneDNN builds and caches few
# kernels: a bf16 distill step (256 IMDb rows, 512 tokens, 2-core AMX CPU) peaked at 1.3 GB instead of 2.0 GB and
# trained 8% faster (32: 1.4 GB; 128: no faster). GPUs' tensor cores want multiples of 8 anyway.
PAD_TO_MULTIPLE_OF = 64


def pad_batch(tokenizer, rows: list[dict], max_length: int) -> dict:
    """Model inputs padded to the longest row of the batch, rounded up to PAD_TO_MULTIPLE_OF but not beyond
    `max_length` (the data's, which the model's positions cover), and the labels; other columns are left out."""
    import torch

    longest = max(len(row[MODEL_INPUTS[0]]) for row in rows)
    length = max(longest, min(-(-longest // PAD_TO_MULTIPLE_OF) * PAD_TO_MULTIPLE_OF, max_length))
    batch = tokenizer.pad([{name: row[name] for name in MODEL_INPUTS} for row in rows], padding="max_length",
                          max_length=length, return_tensors="pt")
    labels = [row[LABEL] for row in rows]
    # Class ids, or a 0/1 float per label for multi-label data (Hugging Face's BCE takes floats).
    batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], list) else torch.long)
    return dict(batch)
