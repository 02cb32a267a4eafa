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
from kdflow.components.common.data import MODEL_INPUTS, UNLABELED_SPLIT, load_prepared, retokenize
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.inference import fit_decision_thresholds
from kdflow.components.common.settings import as_arguments, record
from kdflow.components.common.training import (
    PROVENANCE, TRACKING_HELP, TRAINING_LOG, curves_html, tracked, trainer_settings,
)

from .intermediate import MATCHER, WIDTH_BOUND, IntermediateMatcher, check_layer_map, default_layer_map
from .settings import (  # noqa: F401 (Result: the step's interface)
    TERMS, Files, Result, Settings, check_processes, parse_layer_map,
)
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
        from_teacher = settings.student_spec == models.FROM_TEACHER and not settings.layers_from
        if settings.distill_mode == "online" or from_teacher:
            teacher_model = models.load_classifier(settings.teacher, data.num_labels, fine_tuned=True)
        student_model, student_tokenizer = build_student(settings, data, teacher_model)
        models.set_labels(student_model, data)
        models.check_max_length(student_model.config, data.max_length, "student")

        train_split, validation = data.splits["train"], data.splits["validation"]
        # Unlabeled rows teach through the teacher only: a hard-label training (alpha 1, no intermediate term)
        # leaves them out.
        unlabeled = data.splits.get(UNLABELED_SPLIT) if teacher_has_say(settings) else None
        same_vocabulary = student_tokenizer.get_vocab() == data.tokenizer.get_vocab()
        if settings.distill_mode == "cached":
            models.check_same_vocabulary(data.tokenizer, student_tokenizer, "student")
            logits = datasets.load_from_disk(files.teacher_logits)
            train_split = attach_teacher_logits(train_split, logits["train"])
            validation = attach_teacher_logits(validation, logits["validation"])
            if unlabeled is not None:
                unlabeled = attach_teacher_logits(unlabeled, logits[UNLABELED_SPLIT])
            teacher_model = None  # only needed to initialise the student
        if unlabeled is not None:
            train_split = datasets.concatenate_datasets([train_split, unlabeled])
        if not same_vocabulary:  # online mode (cached mode refused it above)
            train_split, validation = (retokenize_for_student(split, student_tokenizer, data.max_length)
                                       for split in (train_split, validation))
        if any(getattr(settings, name) > 0 for name in TERMS):
            attach_matcher(settings, student_model, teacher_model, same_vocabulary)

        rows = {"labeled": len(data.splits["train"]), "unlabeled": len(unlabeled) if unlabeled is not None else 0}
        provenance = {**record(settings, *NOT_IDENTITY), "data": data.info, "rows": rows}
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
        figures = {**result.metrics, **trainer.evaluate(), **{f"{name}_rows": count for name, count in rows.items()}}
        if not trainer.is_world_process_zero():
            return figures
        if hasattr(student_model, MATCHER):
            delattr(student_model, MATCHER)  # its projections were for training only: never exported
            del student_model.config.tie_last_hidden_states  # set for the matcher only: not saved
        fit_decision_thresholds(student_model, student_tokenizer, data)
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


def build_student(settings: Settings, data, teacher_model):
    """The student model and its tokenizer: a checkpoint's own, else the one the data was prepared with.

    A from_teacher student is made from `teacher_model`'s layers, or from those of `layers_from` (a checkpoint of
    the same architecture with a new head: the pretrained baseline). `student_attention_dropout` is for a
    from_teacher student; the others keep their configuration's.
    """
    spec = settings.student_spec
    if spec == models.FROM_TEACHER:
        # A config: specification is built with the data's vocabulary, as the teacher it stands for was.
        source = (models.load_classifier(settings.layers_from, data.num_labels, vocab_size=len(data.tokenizer),
                                         role="layers_from") if settings.layers_from else teacher_model)
        return (models.student_from_teacher(source, settings.student_layers, settings.student_attention_dropout),
                data.tokenizer)
    if models.is_config_spec(spec):
        return (models.load_classifier(spec, data.num_labels, vocab_size=len(data.tokenizer), role="student"),
                data.tokenizer)
    return models.load_classifier(spec, data.num_labels, role="student"), models.load_tokenizer(spec)


def teacher_has_say(settings: Settings) -> bool:
    return settings.alpha < 1 or any(getattr(settings, name) > 0 for name in TERMS)


def attach_matcher(settings: Settings, student_model, teacher_model, same_vocabulary: bool) -> None:
    """Gives the student the intermediate terms to learn from (see intermediate.MATCHER), after the checks that
    need both models: tokens that line up, a layer map within both, widths that match or may be projected."""
    asked = next(name for name in TERMS if getattr(settings, name) > 0)
    if not same_vocabulary:
        raise KdflowInputError(f"{asked}={getattr(settings, asked)} compares the two models token by token, but the "
                               "student's tokenizer differs from the teacher's: use a student with the teacher's "
                               "tokenizer (e.g. from_teacher), or set the intermediate weights to 0.")
    student_config, teacher_config = student_model.config, teacher_model.config
    student_layers, teacher_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    made_from = ([index + 1 for index in models.teacher_layer_indices(teacher_config, student_layers)]
                 if settings.student_spec == models.FROM_TEACHER else None)
    layer_map = parse_layer_map(settings.layer_map) or default_layer_map(student_layers, teacher_layers, made_from)
    check_layer_map(layer_map, student_layers, teacher_layers, settings.layer_map)
    weights = {name: getattr(settings, name) for name in TERMS}
    student_width, teacher_width = student_config.hidden_size, teacher_config.hidden_size
    projected = [name for name in WIDTH_BOUND if weights[name] > 0]
    if student_width != teacher_width and projected and not settings.hidden_projection:
        raise KdflowInputError(f"{projected[0]}={weights[projected[0]]} compares hidden states of width "
                               f"{student_width} (student) and {teacher_width} (teacher), which only a projection "
                               "can match: set hidden_projection=true, or set the weight to 0.")
    if weights["attention_kl_weight"] > 0:  # attention maps are returned by the eager kernel only
        student_model.set_attn_implementation("eager")
        teacher_model.set_attn_implementation("eager")
    for model in (student_model, teacher_model):
        # transformers makes the last hidden state the final-normed output where an encoder has a final norm
        # (ModernBERT): a student's last layer would be compared, normed, with an unnormed teacher layer.
        model.config.tie_last_hidden_states = False
    student_model.add_module(MATCHER, IntermediateMatcher(weights, layer_map, student_width, teacher_width))


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
