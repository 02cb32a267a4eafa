"""What the teacher_train and distill steps share: their common settings, Trainer settings, the padding collator,
the curves report."""

import base64
import html
import io
import json

from .data import LABEL, MODEL_INPUTS
from .errors import KdflowInputError
from .settings import check_choice, check_positive, check_seed

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAINING_LOG = "training_log.json"  # the Trainer log history, saved in a trained student's folder
PROVENANCE = "distillation.json"  # the settings a student was distilled with (seed included), in its folder
# The help of the settings both training steps take, for their Settings declarations.
TRAINING_HELP = {
    "epochs": "Training epochs.",
    "learning_rate": "Peak learning rate (linear decay after 10% warm-up).",
    "precision": "auto (bf16 on GPUs that support it, else fp16; on a CPU, bf16 where it has bf16 kernels, else "
                 "fp32), fp32, bf16 or fp16.",
    "seed": "Random seed of initialisation, shuffling and dropout.",
    "checkpoint_steps": "Optimizer steps between checkpoints, from which a restarted (e.g. preempted) task resumes; "
                        "0 for none.",
    "checkpoint_uri": "Where checkpoints go (gs:// or a folder on a volume); empty: beside the output in the pipeline "
                      "root.",
}


# The help of the settings of the steps that run a fine-tuned teacher (teacher_check, teacher_eval, teacher_shard).
TEACHER_HELP = {
    "teacher": "URI of the fine-tuned teacher: a folder, a hub id or gs://.",
    "precision": "What the teacher computes in: auto (bf16 where the GPU or CPU has bf16 kernels), fp32, bf16 or fp16.",
}


def check_training_settings(settings) -> None:
    """The checks of the settings both training steps take (see TRAINING_HELP, and their batch_size)."""
    check_choice("precision", settings.precision, PRECISIONS)
    check_positive(settings, "epochs", "batch_size", "learning_rate")
    check_seed(settings.seed)
    if settings.checkpoint_steps < 0:
        raise KdflowInputError(f"checkpoint_steps={settings.checkpoint_steps} must be a number of optimizer steps, or "
                               "0 for no checkpoints.")


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
                     dataloader_num_workers: int = 0, checkpoint_steps: int = 0) -> dict:
    """Keyword arguments for `TrainingArguments` shared by every kdflow training step.

    Batches are grouped by length (dynamic padding then pads little), the validation split is evaluated each
    epoch, about 20 loss points are logged per run, and a checkpoint is written into `output_dir` (a scratch
    folder, never the model artifact) every `checkpoint_steps` optimizer steps, none when it is 0.
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
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=dataloader_num_workers,
        # The collators pick their columns; Trainer would otherwise drop extra ones such as teacher_logits.
        remove_unused_columns=False,
        **precision_flags(precision),
    )


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
    batch["labels"] = torch.tensor([row[LABEL] for row in rows], dtype=torch.long)
    return dict(batch)
