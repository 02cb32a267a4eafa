"""The teacher_train step: fine-tunes a base checkpoint, or trains a configured model from scratch, on the data.

    python -m kdflow.components.teacher_train.task --data DATA_DIR --teacher config:tiny-bert \
        --output TEACHER_DIR --curves curves.html

Checkpoints and resuming as in the distill step (see common/checkpoints.py).
"""

import argparse
import json
import tempfile
from pathlib import Path

from kdflow.components.common import checkpoints, models, storage
from kdflow.components.common.data import load_prepared
from kdflow.components.common.training import curves_html, pad_batch, trainer_settings


def run(*, data_dir: str, teacher: str, output_dir: str, curves_path: str, epochs: float = 2.0,
        batch_size: int = 16, learning_rate: float = 5e-5, precision: str = "auto", seed: int = 42,
        checkpoint_steps: int = 500, checkpoint_uri: str = "") -> dict:
    """Trains `teacher` on the train split, saves it with the data's tokenizer in `output_dir`; returns figures.

    Checkpoints every `checkpoint_steps` to `checkpoint_uri` (default: beside `output_dir`) and resumes from them
    when the same training (settings and data) was cut off.
    """
    from transformers import TrainingArguments, set_seed

    from kdflow.components.common.trainer import GuardedTrainer

    set_seed(seed)
    data = load_prepared(data_dir)
    model = models.load_classifier(teacher, data.num_labels, vocab_size=len(data.tokenizer))
    models.check_teacher_fits_data(teacher, data, model.config)
    identity = {"teacher": teacher, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                "precision": precision, "seed": seed, "data": data.info}
    checkpoint_dir = checkpoints.location(checkpoint_uri or checkpoints.default_uri(output_dir), "teacher_train",
                                          identity) if checkpoint_steps else ""
    with tempfile.TemporaryDirectory(prefix="kdflow-teacher-") as scratch:
        trainer = GuardedTrainer(
            model=model,
            args=TrainingArguments(**trainer_settings(
                output_dir=scratch, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                precision=precision, train_rows=len(data.splits["train"]), checkpoint_steps=checkpoint_steps,
            )),
            train_dataset=data.splits["train"],
            eval_dataset=data.splits["validation"],
            data_collator=lambda rows: pad_batch(data.tokenizer, rows, data.max_length),
            processing_class=data.tokenizer,
            learning_rate_parameter="teacher_learning_rate",
        )
        figures = {**checkpoints.train(trainer, checkpoint_dir).metrics, **trainer.evaluate()}
        trainer.save_model(output_dir)
    if checkpoint_dir:
        storage.delete(checkpoint_dir)  # the teacher is saved: nothing left to resume
    Path(curves_path).write_text(curves_html(trainer.state.log_history, "Teacher training losses"))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared-data folder (data_prep output)")
    parser.add_argument("--teacher", required=True, help="base checkpoint (folder, hub id, gs://) or config:NAME")
    parser.add_argument("--output", required=True, help="folder for the fine-tuned teacher")
    parser.add_argument("--curves", required=True, help="HTML file for the loss curves")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checkpoint-steps", type=int, default=500, help="steps between checkpoints; 0: none")
    parser.add_argument("--checkpoint-uri", default="", help="gs:// or folder; default OUTPUT-checkpoints")
    args = parser.parse_args(argv)
    figures = run(
        data_dir=args.data, teacher=args.teacher, output_dir=args.output, curves_path=args.curves,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        precision=args.precision, seed=args.seed, checkpoint_steps=args.checkpoint_steps,
        checkpoint_uri=args.checkpoint_uri,
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
