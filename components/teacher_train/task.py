"""The teacher_train step: fine-tunes a base checkpoint, or trains a configured model from scratch, on the data.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.teacher_train.task --data DATA_DIR --teacher-model TEACHER_DIR \
        --training-curves curves.html --teacher config:tiny-bert --epochs 2 --batch-size 16 --learning-rate 5e-5 \
        --precision auto --seed 42 --checkpoint-steps 500 --checkpoint-uri "" \
        --report-to mlflow --tracking-uri http://mlflow:5000 --experiment kdflow-student

With tracking, the pipeline run's name comes from KDFLOW_RUN_NAME (see common/training.py).

Checkpoints and resuming as in the distill step (see common/checkpoints.py); an empty `--checkpoint-uri` puts them
beside TEACHER_DIR.
"""

import json
import logging
import sys
import tempfile
from pathlib import Path

from kdflow.components.common import checkpoints, models, step, storage
from kdflow.components.common.data import load_prepared
from kdflow.components.common.inference import fit_decision_thresholds
from kdflow.components.common.settings import record
from kdflow.components.common.training import TRACKING_HELP, curves_html, pad_batch, tracked, trainer_settings

from .settings import Files, Result, Settings

# Where checkpoints and logs go, not what is trained: left out of the checkpoint identity, so a restart elsewhere
# (or in another pipeline run) resumes.
NOT_IDENTITY = ("checkpoint_steps", "checkpoint_uri", *TRACKING_HELP)


def run(settings: Settings, files: Files) -> Result:
    """Trains the teacher into `files.teacher_model`; returns its location (the KFP component returns its URI)."""
    figures = train(settings, files)
    logging.getLogger(__name__).info("teacher training figures: %s", json.dumps(figures, indent=2))
    return Result(teacher_uri=files.teacher_model)


def train(settings: Settings, files: Files) -> dict:
    """Trains `settings.teacher` on the train split, saves it with the data's tokenizer in `files.teacher_model`;
    returns the training figures (runtime, samples per second, last losses).

    Checkpoints every `checkpoint_steps` to `checkpoint_uri` (default: beside the teacher) and resumes from them
    when the same training (settings and data) was cut off. Logs to `report_to` as the pipeline run's `teacher`,
    and records where in the teacher's folder (common.training.Tracking).
    """
    from transformers import TrainingArguments, set_seed

    from kdflow.components.common.trainer import GuardedTrainer

    with tracked(settings, "teacher") as tracking, tempfile.TemporaryDirectory(prefix="kdflow-teacher-") as scratch:
        set_seed(settings.seed)
        data = load_prepared(files.data)
        model = models.load_classifier(settings.teacher, data.num_labels, vocab_size=len(data.tokenizer))
        models.set_labels(model, data)
        models.check_teacher_fits_data(settings.teacher, data, model.config)
        identity = {**record(settings, *NOT_IDENTITY), "data": data.info}
        checkpoint_dir = checkpoints.location(settings.checkpoint_uri or checkpoints.default_uri(files.teacher_model),
                                              "teacher_train", identity) if settings.checkpoint_steps else ""
        trainer = GuardedTrainer(
            model=model,
            args=TrainingArguments(**trainer_settings(
                output_dir=scratch, epochs=settings.epochs, batch_size=settings.batch_size,
                learning_rate=settings.learning_rate, seed=settings.seed, precision=settings.precision,
                train_rows=len(data.splits["train"]), report_to=settings.report_to,
                checkpoint_steps=settings.checkpoint_steps,
            )),
            train_dataset=data.splits["train"],
            eval_dataset=data.splits["validation"],
            data_collator=lambda rows: pad_batch(data.tokenizer, rows, data.max_length),
            processing_class=data.tokenizer,
            learning_rate_parameter="teacher_learning_rate",
        )
        figures = {**checkpoints.train(trainer, checkpoint_dir).metrics, **trainer.evaluate()}
        fit_decision_thresholds(model, data.tokenizer, data)
        trainer.save_model(files.teacher_model)
    if tracking:
        tracking.write(files.teacher_model)
    if checkpoint_dir:
        storage.delete(checkpoint_dir)  # the teacher is saved: nothing left to resume
    Path(files.training_curves).write_text(curves_html(trainer.state.log_history, "Teacher training losses"))
    return figures


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
