"""The distill step: trains the student on the teacher's softened outputs and the hard labels.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.distill.task --data DATA_DIR --teacher-logits LOGITS_DIR --student STUDENT_DIR \
        --training-curves curves.html --teacher TEACHER_URI --student-spec from_teacher --temperature T ...

Every `--checkpoint-steps` optimizer steps a checkpoint goes to `--checkpoint-uri` (empty: STUDENT_DIR-checkpoints);
the same command started again after a kill resumes from the newest complete one (see common/checkpoints.py).
With `--processes N` it starts itself in N processes under torchrun (DDP: NCCL on GPUs, one GPU each; gloo on CPU).
Under a torchrun started elsewhere (several nodes, see the README's "Several nodes") it runs as the process it
is. `--batch-size` is the global batch of an optimizer step (before gradient accumulation), split evenly across
the processes, so a run takes the same steps with any number of them; only the first process (rank 0) writes.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from kdflow.components.common import checkpoints, models, step, storage
from kdflow.components.common.data import MODEL_INPUTS, load_prepared, retokenize
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import as_arguments, record
from kdflow.components.common.training import (
    PROVENANCE, TRACKING_HELP, TRAINING_LOG, curves_html, tracked, trainer_settings,
)

from .settings import Files, Result, Settings, check_processes  # noqa: F401 (Result: the step's interface)
from .trainer import (
    TEACHER_INPUT_PREFIX, TEACHER_LOGITS, DistillationArguments, DistillationCollator, DistillationTrainer,
)

# Where checkpoints and logs go, not what is trained: left out of the checkpoint identity, so a restart elsewhere
# (or in another pipeline run) resumes.
NOT_IDENTITY = ("checkpoint_steps", "checkpoint_uri", "processes", *TRACKING_HELP, "tracked_as")


def run(settings: Settings, files: Files) -> dict | None:
    """Distills the teacher into the student, in this process or, with `processes` above 1, in that many processes on
    this node under torchrun. Returns the training figures (runtime, samples per second, last losses) when it
    trained here; the processes print theirs in their log.
    """
    if settings.processes == 1 or "WORLD_SIZE" in os.environ:
        return train(settings, files)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={settings.processes}", "-m", "kdflow.components.distill.task",
               *as_arguments(files), *as_arguments(replace(settings, processes=1))]
    subprocess.run(command, check=True)
    return None


def train(settings: Settings, files: Files) -> dict:
    """Distills `settings.teacher` into the student and saves it (with its tokenizer) in `files.student`.

    With `checkpoint_steps` above 0 it checkpoints to `checkpoint_uri` (default: beside the student) and resumes
    from there when the same training (settings and data) was cut off. Logs to `report_to` as the pipeline run's
    `tracked_as` training, and records where in the student's folder (common.training.Tracking).
    """
    import datasets
    from transformers import set_seed

    check_processes(settings.batch_size, int(os.environ.get("WORLD_SIZE", 1)))
    with tracked(settings, settings.tracked_as) as tracking, \
            tempfile.TemporaryDirectory(prefix="kdflow-distill-") as scratch:
        set_seed(settings.seed)
        data = load_prepared(files.data)
        teacher_model = None
        if settings.distill_mode == "online" or settings.student_spec == models.FROM_TEACHER:
            teacher_model = models.load_classifier(settings.teacher, data.num_labels, fine_tuned=True)
        student_model, student_tokenizer = build_student(settings.student_spec, data, teacher_model,
                                                         settings.student_layers, settings.student_attention_dropout)
        models.check_max_length(student_model.config, data.max_length, "student")

        train_split, validation = data.splits["train"], data.splits["validation"]
        same_vocabulary = student_tokenizer.get_vocab() == data.tokenizer.get_vocab()
        if settings.distill_mode == "cached":
            models.check_same_vocabulary(data.tokenizer, student_tokenizer, "student")
            logits = datasets.load_from_disk(files.teacher_logits)
            train_split = attach_teacher_logits(train_split, logits["train"])
            validation = attach_teacher_logits(validation, logits["validation"])
            teacher_model = None  # only needed to initialise the student
        elif not same_vocabulary:
            train_split, validation = (retokenize_for_student(split, student_tokenizer, data.max_length)
                                       for split in (train_split, validation))

        provenance = {**record(settings, *NOT_IDENTITY), "data": data.info}
        checkpoint_dir = checkpoints.location(settings.checkpoint_uri or checkpoints.default_uri(files.student),
                                              "distill", provenance) if settings.checkpoint_steps else ""
        args = DistillationArguments(
            temperature=settings.temperature, alpha=settings.alpha,
            # batch_size is the global batch: each of several processes takes its share of every batch.
            accelerator_config={"split_batches": True},
            **trainer_settings(
                output_dir=scratch, epochs=settings.epochs, batch_size=settings.batch_size,
                learning_rate=settings.learning_rate, seed=settings.seed, precision=settings.precision,
                train_rows=len(train_split), gradient_accumulation_steps=settings.gradient_accumulation_steps,
                report_to=settings.report_to, checkpoint_steps=settings.checkpoint_steps,
            ),
        )
        trainer = DistillationTrainer(
            model=student_model, args=args, train_dataset=train_split, eval_dataset=validation,
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
        Path(scratch, "student", PROVENANCE).write_text(json.dumps(provenance, indent=2))
        if tracking:
            tracking.write(Path(scratch, "student"))
        # Moved in only now: a failed run leaves no student that looks finished.
        storage.move_into(Path(scratch, "student"), Path(files.student))
    if checkpoint_dir:
        storage.delete(checkpoint_dir)  # the student is saved: nothing left to resume
    Path(files.training_curves).write_text(curves_html(trainer.state.log_history, "Distillation losses"))
    return figures


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


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
