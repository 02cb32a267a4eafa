"""The student_eval step: the student's test metrics, its retention of the teacher's accuracy, and the gate.

    python -m kdflow.components.student_eval.task --data DATA_DIR --student STUDENT_DIR \
        --teacher-metrics teacher_metrics.json --min-retention 0.97 --metrics student_metrics.json
"""

import argparse
import json
from pathlib import Path

from kdflow.components.common.data import load_prepared, split_for_tokenizer
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.inference import evaluate_on_test, footprint, latencies_ms, torch_runner
from kdflow.components.common.metrics import read_metrics, write_metrics_file


def run(*, data_dir: str, student_dir: str, teacher_metrics_path: str, min_retention: float = 0.97,
        batch_size: int = 64) -> dict:
    """Test metrics of the student, `retention` = student accuracy / teacher accuracy, and `passed`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not 0 <= min_retention:
        raise KdflowInputError(f"min_retention={min_retention} must be 0 or more: 0.97 keeps 97% of the teacher's accuracy.")
    data = load_prepared(data_dir)
    teacher_accuracy = read_metrics(teacher_metrics_path)["accuracy"]
    model = AutoModelForSequenceClassification.from_pretrained(student_dir)
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    metrics = evaluate_on_test(model, tokenizer, data, batch_size)
    metrics.update(footprint(model, student_dir),
                   latency_ms=latencies_ms(torch_runner(model), split_for_tokenizer(data, "test", tokenizer), tokenizer))
    retention = metrics["accuracy"] / teacher_accuracy if teacher_accuracy else 0.0
    return {
        **metrics, "label_names": data.info["label_names"], "teacher_accuracy": teacher_accuracy,
        "retention": retention, "min_retention": min_retention, "passed": retention >= min_retention,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared-data folder (data_prep output)")
    parser.add_argument("--student", required=True, help="the student's save_pretrained folder")
    parser.add_argument("--teacher-metrics", required=True, help="teacher_eval's metrics JSON")
    parser.add_argument("--min-retention", type=float, default=0.97)
    parser.add_argument("--metrics", help="also write the metrics and the gate to this JSON file")
    parser.add_argument("--passed", help="also write the gate decision, true or false, to this file")
    args = parser.parse_args(argv)
    metrics = run(data_dir=args.data, student_dir=args.student, teacher_metrics_path=args.teacher_metrics,
                  min_retention=args.min_retention)
    if args.metrics:
        write_metrics_file(args.metrics, metrics)
    if args.passed:
        Path(args.passed).write_text(json.dumps(metrics["passed"]))  # true/false, as workflow conditions compare it
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
