"""The distill step in several processes (torchrun, DDP over gloo on this CPU) against one process."""

import json
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.inference import evaluate_on_test
from kdflow.components.distill import task
from kdflow.components.teacher_eval import task as teacher_eval
from kdflow.components.teacher_train import task as teacher_train

from test_distill_trainer import tiny_distilbert

BATCH_SIZE = 16  # the global batch: 8 rows in each of 2 processes


@pytest.fixture(scope="module")
def students(tmp_path_factory, prepared_data_dir, tokenizer_dir):
    """A trained teacher's logits distilled into the same student by one process and by two; folder by nproc."""
    root = tmp_path_factory.mktemp("processes")
    teacher_train.run(data_dir=str(prepared_data_dir), teacher="config:tiny-bert", output_dir=str(root / "teacher"),
                      curves_path=str(root / "teacher.html"), epochs=8, batch_size=16, learning_rate=2e-3)
    teacher_eval.run(data_dir=str(prepared_data_dir), teacher=str(root / "teacher"), logits_dir=str(root / "logits"))
    # A student without dropout: given the same rows, one process and two compute the same losses.
    tiny_distilbert(len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))).save_pretrained(str(root / "initial"))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(root / "initial"))
    folders = {}
    for nproc in (1, 2):
        folders[nproc] = root / f"student-{nproc}"
        task.launch(nproc=nproc, data_dir=str(prepared_data_dir), teacher_logits_dir=str(root / "logits"),
                    teacher=str(root / "teacher"), student=str(root / "initial"), output_dir=str(folders[nproc]),
                    curves_path=str(root / f"curves-{nproc}.html"), epochs=8, batch_size=BATCH_SIZE,
                    learning_rate=2e-3)
    return folders


def training_log(folder: Path) -> list[dict]:
    return json.loads((folder / "training_log.json").read_text())


def test_two_processes_log_the_losses_of_one_with_the_same_global_batch(students):
    one, two = ([entry for entry in training_log(students[nproc]) if "loss" in entry] for nproc in (1, 2))
    assert len(one) == len(two) >= 3
    # The same rows in every step (batch_size is global and split across the processes), no dropout: the processes'
    # mean of halves' means equals one mean over the batch, and DDP's averaged gradients equal one process's. What is
    # left is float summation order, about 1e-6 relative per step; 1e-4 leaves room for it to compound over the
    # first steps. Another batch order or a per-process batch of 16 would differ by several percent.
    for first, second in zip(one[:3], two[:3]):
        assert first["step"] == second["step"]
        for name in ("loss", "hard_loss", "soft_loss"):
            assert second[name] == pytest.approx(first[name], rel=1e-4), (name, first["step"])


def test_two_processes_train_a_student_that_meets_the_smoke_bar(students, prepared_data_dir):
    data = load_prepared(str(prepared_data_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(students[2]))
    assert evaluate_on_test(model, data.tokenizer, data)["accuracy"] >= 0.90


def test_two_processes_write_what_one_writes(students):
    files = {nproc: sorted(path.name for path in folder.iterdir()) for nproc, folder in students.items()}
    assert files[1] == files[2]
    one, two = training_log(students[1]), training_log(students[2])
    assert [sorted(entry) for entry in one] == [sorted(entry) for entry in two]


def test_a_batch_that_does_not_split_across_the_processes_is_refused_before_they_start(tmp_path):
    with pytest.raises(KdflowInputError, match="batch_size=9 does not split evenly across 2 processes"):
        task.launch(nproc=2, data_dir=str(tmp_path), teacher_logits_dir="", teacher="t", student="from_teacher",
                    output_dir=str(tmp_path / "student"), curves_path=str(tmp_path / "c.html"), batch_size=9)
