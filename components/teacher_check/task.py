"""The teacher_check step: a fine-tuned teacher given by the user is checked against the data before any work."""

import argparse

from kdflow.components.common import models
from kdflow.components.common.data import load_prepared


def run(*, data_dir: str, teacher: str) -> str:
    """Checks that `teacher` is a fine-tuned classifier that fits the data, and returns its URI."""
    data = load_prepared(data_dir)
    model = models.load_classifier(teacher, data.num_labels, fine_tuned=True)
    models.check_teacher_fits_data(teacher, data, model.config)
    return teacher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared-data folder (data_prep output)")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher: folder, hub id or gs:// URI")
    args = parser.parse_args(argv)
    print(run(data_dir=args.data, teacher=args.teacher))


if __name__ == "__main__":
    main()
