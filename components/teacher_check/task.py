"""The teacher_check step: a fine-tuned teacher given by the user is checked against the data before any work.

Run as a KFP component (component.py) or directly:

    python -m kdflow.components.teacher_check.task --data DATA_DIR --teacher-card teacher.md --teacher TEACHER_URI \
        --teacher-uri teacher_uri.txt

It writes a short Markdown card of the teacher it checked, and returns the teacher's URI.
"""

import sys
from pathlib import Path

from kdflow.components.common import models, step
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError

from .settings import Files, Result, Settings


def run(settings: Settings, files: Files) -> Result:
    """Checks that the teacher is a fine-tuned classifier that fits the data, describes it in `files.teacher_card`,
    and returns its URI."""
    data = load_prepared(files.data)
    model = models.load_classifier(settings.teacher, data.num_labels, fine_tuned=True)
    models.check_teacher_fits_data(settings.teacher, data, model.config)
    check_problem_type(settings.teacher, data, model.config)
    Path(files.teacher_card).parent.mkdir(parents=True, exist_ok=True)
    Path(files.teacher_card).write_text(teacher_card(settings.teacher, model.config, data.max_length))
    return Result(teacher_uri=settings.teacher)


def check_problem_type(teacher: str, data, config) -> None:
    """A fine-tuned teacher answers the data's kind of question: one class per text, or a set of labels."""
    if data.multi_label != models.is_multi_label(config):
        kinds = ("a single-label classifier (softmax)", "a multi-label classifier (a sigmoid per label)")
        raise KdflowInputError(
            f"The teacher {teacher!r} is {kinds[models.is_multi_label(config)]} but the data is "
            f"problem_type={'multi_label' if data.multi_label else 'single_label'}: give a teacher fine-tuned for "
            "that problem type, or set train_teacher=true to fine-tune one."
        )


def teacher_card(teacher: str, config, max_length: int) -> str:
    """The teacher in a few lines of Markdown: what it is, and the limits the data was checked against."""
    architecture = ", ".join(config.architectures or []) or type(config).__name__
    limit = models.position_limit(config)
    return "\n".join([
        "# Teacher",
        "",
        f"- Checkpoint: `{teacher}`",
        f"- Architecture: {architecture} (model type `{config.model_type}`)",
        f"- Labels: {config.num_labels}",
        f"- Vocabulary: {config.vocab_size:,} tokens",
        f"- Position limit: {f'{limit:,} tokens' if limit else 'none'} (the data keeps {max_length:,} per row)",
    ]) + "\n"


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
