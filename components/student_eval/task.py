"""The student_eval step: the student's test metrics, its retention of the teacher's accuracy, and the gate.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.student_eval.task --data DATA_DIR --student STUDENT_DIR \
        --teacher-metrics teacher_metrics.json --student-metrics student_metrics.json \
        --student-confusion student_confusion.json --min-retention 0.97 [--passed passed.txt]
"""

import sys

from kdflow.components.common import step
from kdflow.components.common.data import load_prepared, split_for_tokenizer
from kdflow.components.common.inference import (
    INFERENCE_BATCH_SIZE, evaluate_on_test, footprint, latencies_ms, torch_runner,
)
from kdflow.components.common.results import Evaluation, Gate, Scores

from .settings import Files, Result, Settings


def run(settings: Settings, files: Files) -> Result:
    """Writes the student's test metrics with `retention` = student accuracy / teacher accuracy and whether it
    passes the gate; returns the gate's decision and the retention."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = load_prepared(files.data)
    teacher = Evaluation.read(files.teacher_metrics).scores
    model = AutoModelForSequenceClassification.from_pretrained(files.student)
    tokenizer = AutoTokenizer.from_pretrained(files.student)
    scores = evaluate_on_test(model, tokenizer, data, INFERENCE_BATCH_SIZE)
    scores.update(footprint(model, files.student),
                  latency_ms=latencies_ms(torch_runner(model), split_for_tokenizer(data, "test", tokenizer), tokenizer))
    student = Scores.from_dict(scores)
    gate = Gate.judge(student, teacher, settings.min_retention, settings.min_accuracy_margin)
    metrics = Evaluation(student, label_names=data.info["label_names"], gate=gate)
    metrics.write(files.student_metrics)
    metrics.write_confusion(files.student_confusion)
    return Result(passed=gate.passed, retention=gate.retention)


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
