"""The distill step: trains the student on the teacher's softened outputs and the hard labels.

Run as a KFP component (component.py) or directly:

    python -m kdflow.components.distill.task --data DATA_DIR --teacher-logits LOGITS_DIR \
        --teacher TEACHER_URI --student from_teacher --output STUDENT_DIR --curves curves.html

Every `--checkpoint-steps` optimizer steps a checkpoint goes to `--checkpoint-uri` (default: STUDENT_DIR-checkpoints);
the same command started again after a kill resumes from the newest complete one (see common/checkpoints.py).
With `--nproc N` it starts itself in N processes under torchrun (DDP: NCCL on GPUs, one GPU each; gloo on CPU).
Under a torchrun started elsewhere (several nodes, see the README's "Several nodes") it runs as the process it
is. `--batch-size` is the global batch of an optimizer step (before gradient accumulation), split evenly across
the processes, so a run takes the same steps with any number of them; only the first process (rank 0) writes.
"""

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kdflow.components.common import checkpoints, models, storage
from kdflow.components.common.data import MODEL_INPUTS, load_prepared, retokenize
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.training import PROVENANCE, TRAINING_LOG, curves_html, trainer_settings

from .hyperparameters import MODES, check_attention_dropout, check_distillation_hyperparameters, check_processes
from .trainer import (
    TEACHER_INPUT_PREFIX, TEACHER_LOGITS, DistillationArguments, DistillationCollator, DistillationTrainer,
)


def run(*, data_dir: str, teacher_logits_dir: str, teacher: str, student: str, output_dir: str, curves_path: str,
        student_layers: int = 0, student_attention_dropout: float = 0.0, distill_mode: str = "cached",
        temperature: float = 2.0, alpha: float = 0.5,
        epochs: float = 2.0, batch_size: int = 8, learning_rate: float = 5e-5, gradient_accumulation_steps: int = 1,
        precision: str = "auto", seed: int = 42, dataloader_num_workers: int = 0, checkpoint_steps: int = 500,
        checkpoint_uri: str = "") -> dict:
    """Distills `teacher` into `student` and saves the student (with its tokenizer) in `output_dir`.

    With `checkpoint_steps` above 0 it checkpoints to `checkpoint_uri` (default: beside `output_dir`) and resumes
    from there when the same training (settings and data) was cut off.

    Returns the training figures (runtime, samples per second, last losses).
    """
    import datasets
    from transformers import set_seed

    check_distillation_hyperparameters(temperature, alpha, distill_mode)
    check_attention_dropout(student_attention_dropout)
    check_processes(batch_size, int(os.environ.get("WORLD_SIZE", 1)))
    set_seed(seed)
    data = load_prepared(data_dir)
    teacher_model = None
    if distill_mode == "online" or student == models.FROM_TEACHER:
        teacher_model = models.load_classifier(teacher, data.num_labels, fine_tuned=True)
    student_model, student_tokenizer = build_student(student, data, teacher_model, student_layers,
                                                     student_attention_dropout)
    models.check_max_length(student_model.config, data.max_length, "student")

    train, validation = data.splits["train"], data.splits["validation"]
    same_vocabulary = student_tokenizer.get_vocab() == data.tokenizer.get_vocab()
    if distill_mode == "cached":
        models.check_same_vocabulary(data.tokenizer, student_tokenizer, "student")
        logits = datasets.load_from_disk(teacher_logits_dir)
        train, validation = attach_teacher_logits(train, logits["train"]), attach_teacher_logits(validation, logits["validation"])
        teacher_model = None  # only needed to initialise the student
    elif not same_vocabulary:
        train, validation = (retokenize_for_student(split, student_tokenizer, data.max_length) for split in (train, validation))

    settings = {
        "teacher": teacher, "student": student, "student_layers": student_layers,
        "student_attention_dropout": student_attention_dropout, "distill_mode": distill_mode,
        "temperature": temperature, "alpha": alpha, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "gradient_accumulation_steps": gradient_accumulation_steps,
        "precision": precision, "seed": seed, "data": data.info,
    }
    checkpoint_dir = checkpoints.location(checkpoint_uri or checkpoints.default_uri(output_dir), "distill",
                                          settings) if checkpoint_steps else ""
    with tempfile.TemporaryDirectory(prefix="kdflow-distill-") as scratch:
        args = DistillationArguments(
            temperature=temperature, alpha=alpha,
            # batch_size is the global batch: each of several processes takes its share of every batch.
            accelerator_config={"split_batches": True},
            **trainer_settings(
                output_dir=scratch, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                precision=precision, train_rows=len(train), gradient_accumulation_steps=gradient_accumulation_steps,
                dataloader_num_workers=dataloader_num_workers, checkpoint_steps=checkpoint_steps,
            ),
        )
        trainer = DistillationTrainer(
            model=student_model, args=args, train_dataset=train, eval_dataset=validation,
            data_collator=DistillationCollator(student_tokenizer, data.max_length,
                                               None if same_vocabulary else data.tokenizer),
            processing_class=student_tokenizer, teacher=teacher_model,
        )
        result = checkpoints.train(trainer, checkpoint_dir)
        figures = {**result.metrics, **trainer.evaluate()}
        if not trainer.is_world_process_zero():
            return figures
        trainer.save_model(scratch + "/student")
        Path(scratch, "student", TRAINING_LOG).write_text(json.dumps(trainer.state.log_history, indent=1))
        # Where the student came from, for its model card.
        Path(scratch, "student", PROVENANCE).write_text(json.dumps(settings, indent=2))
        # Moved in only now: a failed run leaves no student that looks finished.
        storage.move_into(Path(scratch, "student"), Path(output_dir))
    if checkpoint_dir:
        storage.delete(checkpoint_dir)  # the student is saved: nothing left to resume
    Path(curves_path).write_text(curves_html(trainer.state.log_history, "Distillation losses"))
    return figures


def launch(nproc: int = 1, **arguments) -> dict | None:
    """`run(**arguments)` in this process, or in `nproc` processes on this node under torchrun.

    Returns run's figures when it ran here; the processes print theirs in their log.
    """
    if nproc < 1:
        raise KdflowInputError(f"nproc={nproc} must be at least 1.")
    if nproc == 1:
        return run(**arguments)
    # The checks a process would make, made once here so a mistake reads as one sentence, not nproc tracebacks.
    check_distillation_hyperparameters(arguments.get("temperature", 2.0), arguments.get("alpha", 0.5),
                                       arguments.get("distill_mode", "cached"))
    check_attention_dropout(arguments.get("student_attention_dropout", 0.0))
    check_processes(arguments.get("batch_size", 8), nproc)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "kdflow.components.distill.task", *command_line(arguments)]
    subprocess.run(command, check=True)
    return None


# run()'s arguments whose command-line flag is not the argument's name with dashes.
FLAGS = {"data_dir": "--data", "teacher_logits_dir": "--teacher-logits", "output_dir": "--output",
         "curves_path": "--curves"}


def command_line(arguments: dict) -> list[str]:
    """run()'s keyword arguments as the flags of main()."""
    return [part for name, value in arguments.items()
            for part in (FLAGS.get(name, "--" + name.replace("_", "-")), str(value))]


def build_student(student: str, data, teacher_model, student_layers: int, attention_dropout: float):
    """The student model and its tokenizer: a checkpoint's own, else the one the data was prepared with.

    `attention_dropout` is for a from_teacher student; the others keep their configuration's.
    """
    if student == models.FROM_TEACHER:
        return models.student_from_teacher(teacher_model, student_layers, attention_dropout), data.tokenizer
    if models.is_config_spec(student):
        return (models.load_classifier(student, data.num_labels, vocab_size=len(data.tokenizer), role="student"),
                data.tokenizer)
    return models.load_classifier(student, data.num_labels, role="student"), models.load_tokenizer(student)


def attach_teacher_logits(split, logits):
    if len(logits) != len(split):
        raise KdflowInputError(
            f"The teacher logits hold {len(logits)} rows but the split has {len(split)}: recompute them with "
            "teacher_eval on this data."
        )
    return split.add_column(TEACHER_LOGITS, logits[TEACHER_LOGITS])


def retokenize_for_student(split, tokenizer, max_length: int):
    """Keeps the data's token ids for the teacher and adds the student's own, from the text."""
    renamed = split.rename_columns({name: TEACHER_INPUT_PREFIX + name for name in MODEL_INPUTS})
    return retokenize(renamed, tokenizer, max_length)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared-data folder (data_prep output)")
    parser.add_argument("--teacher-logits", default="", help="teacher logits folder (teacher_eval output)")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher: folder, hub id or gs:// URI")
    parser.add_argument("--student", default=models.FROM_TEACHER, help="from_teacher, config:NAME or a checkpoint")
    parser.add_argument("--output", required=True, help="folder for the student")
    parser.add_argument("--curves", required=True, help="HTML file for the loss curves")
    parser.add_argument("--student-layers", type=int, default=0)
    parser.add_argument("--student-attention-dropout", type=float, default=0.0,
                        help="attention dropout of a from_teacher student (0: PyTorch's fused attention kernel)")
    parser.add_argument("--distill-mode", choices=MODES, default="cached")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoint-steps", type=int, default=500, help="steps between checkpoints; 0: none")
    parser.add_argument("--checkpoint-uri", default="", help="gs:// or folder; default OUTPUT-checkpoints")
    parser.add_argument("--nproc", type=int, default=1,
                        help="processes on this node under torchrun, one GPU each (gloo on CPU); "
                             "--batch-size stays the global batch")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    figures = launch(
        nproc=args.nproc,
        data_dir=args.data, teacher_logits_dir=args.teacher_logits, teacher=args.teacher, student=args.student,
        output_dir=args.output, curves_path=args.curves, student_layers=args.student_layers,
        student_attention_dropout=args.student_attention_dropout,
        distill_mode=args.distill_mode, temperature=args.temperature, alpha=args.alpha, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        gradient_accumulation_steps=args.gradient_accumulation_steps, precision=args.precision, seed=args.seed,
        checkpoint_steps=args.checkpoint_steps, checkpoint_uri=args.checkpoint_uri,
    )
    if figures is not None:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
