"""Resuming after preemption: the distill step as a process, SIGKILLed after its first complete checkpoint and
started again with the same command, ends with the student an uninterrupted run trains."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from kdflow.components.common import checkpoints
from kdflow.components.common.settings import as_arguments
from kdflow.components.distill import task as distill
from kdflow.components.teacher_eval import task as teacher_eval

# 96 train rows in batches of 16: 6 optimizer steps an epoch, 24 in all, a checkpoint every 4.
SETTINGS = {"epochs": 4.0, "batch_size": 16, "learning_rate": 1e-3, "precision": "fp32", "seed": 5,
            "checkpoint_steps": 4}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tokenizer_dir, prepared_data_dir, settings_for):
    """A tiny BERT teacher (dropout on, so resuming must restore the random state too) and its cached logits."""
    folder = tmp_path_factory.mktemp("teacher")
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128)).save_pretrained(str(folder / "model"))
    tokenizer.save_pretrained(str(folder / "model"))
    teacher_eval.run(settings_for(teacher_eval, teacher=str(folder / "model"), cache_logits=True),
                     teacher_eval.Files(data=str(prepared_data_dir), teacher_logits=str(folder / "logits"),
                                        teacher_metrics=str(folder / "metrics.json"),
                                        teacher_confusion=str(folder / "confusion.json")))
    return str(folder / "model"), str(folder / "logits")


def settings_and_files(settings_for, prepared_data_dir, teacher, output: Path, checkpoint_uri: Path):
    settings = settings_for(distill, teacher=teacher[0], student_spec="from_teacher", processes=1,
                            checkpoint_uri=str(checkpoint_uri), **SETTINGS)
    files = distill.Files(data=str(prepared_data_dir), teacher_logits=teacher[1], student=str(output),
                          training_curves=f"{output}.html")
    return settings, files


def command(settings, files) -> list[str]:
    return [sys.executable, "-m", "kdflow.components.distill.task", *as_arguments(files), *as_arguments(settings)]


def kill_after_first_checkpoint(arguments: list[str], checkpoint_uri: Path, log: Path) -> None:
    with open(log, "w") as handle:
        process = subprocess.Popen(arguments, stdout=handle, stderr=subprocess.STDOUT)
        while not list(checkpoint_uri.glob(f"*/checkpoint-*/{checkpoints.MARKER}")):
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_a_killed_distill_step_resumes_and_trains_the_same_student(tmp_path, prepared_data_dir, teacher, settings_for):
    output, checkpoint_uri = tmp_path / "student", tmp_path / "checkpoints"
    arguments = command(*settings_and_files(settings_for, prepared_data_dir, teacher, output, checkpoint_uri))
    kill_after_first_checkpoint(arguments, checkpoint_uri, tmp_path / "killed.log")
    assert not output.exists()
    (training,) = checkpoint_uri.iterdir()
    complete = max(step for step, done in checkpoints.steps_found(str(training)).items() if done)
    assert complete < 24
    # A later checkpoint cut off while being written (no marker, a truncated file) must not be resumed from.
    cut_off = training / f"checkpoint-{complete + 1}"
    shutil.copytree(training / f"checkpoint-{complete}", cut_off)
    (cut_off / checkpoints.MARKER).unlink()
    (cut_off / "model.safetensors").write_bytes(b"cut off")

    resumed = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The uninterrupted run, here while the resumed one starts up.
    distill.run(*settings_and_files(settings_for, prepared_data_dir, teacher, tmp_path / "uninterrupted",
                                    tmp_path / "other"))
    log, errors = resumed.communicate()
    assert resumed.returncode == 0, errors[-3000:]
    assert f"kdflow: resuming from step {complete}, the newest complete checkpoint at {training}" in log
    assert not checkpoint_uri.joinpath(training.name).exists()  # deleted once the student was saved
    # Weights, optimizer, scheduler, random states and the position in the data all come back from the
    # checkpoint, so on one CPU in fp32 the resumed run repeats the uninterrupted one's arithmetic exactly.
    expected, got = (load_file(str(folder / "model.safetensors")) for folder in (tmp_path / "uninterrupted", output))
    assert all(torch.equal(expected[name], got[name]) for name in expected)
    evaluations = [[entry["eval_loss"] for entry in json.loads((folder / "training_log.json").read_text())
                    if "eval_loss" in entry] for folder in (tmp_path / "uninterrupted", output)]
    assert evaluations[0] == evaluations[1] and len(evaluations[0]) == 5  # each epoch's, and the final one


def test_only_checkpoints_with_their_marker_count(tmp_path):
    for step, marked in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"weights")
        if marked:
            (folder / checkpoints.MARKER).write_text("{}")
    (tmp_path / "other-folder").mkdir()
    assert checkpoints.steps_found(str(tmp_path)) == {2: True, 4: True, 6: False}
    assert checkpoints.newest_complete(str(tmp_path)) == (4, str(tmp_path / "checkpoint-4"))
    assert checkpoints.newest_complete(str(tmp_path / "nothing-yet")) is None


def test_checkpoints_in_object_storage_are_marked_last_pruned_and_resumed_from(tmp_path, bucket_uri):
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from kdflow.components.common import storage

    uri = f"{bucket_uri}/runs/distill-0123"
    mirror = checkpoints.CheckpointMirror(uri)
    args = SimpleNamespace(output_dir=str(tmp_path), save_steps=2)
    for step in (2, 4):  # what Trainer leaves in its scratch folder before it calls on_save
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(bytes([step]) * 1000)
        mirror.on_save(args, TrainerState(global_step=step), TrainerControl())
    assert checkpoints.steps_found(uri) == {4: True}  # checkpoint-2 went once checkpoint-4 was complete
    storage.upload_folder(str(tmp_path / "checkpoint-4"), f"{uri}/checkpoint-6")  # cut off before its marker
    step, folder = checkpoints.newest_complete(uri)
    assert step == 4 and (Path(folder) / "model.safetensors").read_bytes() == bytes([4]) * 1000
    storage.delete(uri)
    assert storage.list_files(uri) == [] and storage.list_files(bucket_uri) == []
