"""Bad input through `kdflow run`: each case stops with one sentence that names the parameter and the fix, before
any training, and leaves no summary or report that could pass for a result.

The first cases stop before the pipeline starts; the others inside it, in data_prep or teacher_check.
"""

import shutil

import pandas as pd
import pytest

from kdflow.pipelines.cli import main

# A small smoke run: a case that gets past data_prep would take seconds, not minutes, to show it.
SMALL = ["--set", "max_train_samples=200", "--set", "max_eval_samples=50"]


def reviews(labels: list[int]) -> pd.DataFrame:
    words = ["good", "great", "fine", "bad", "dull", "poor", "plot", "film", "actors", "story"]
    return pd.DataFrame({"text": [f"{words[i % 10]} {words[(i // 10) % 10]} {i}" for i in range(len(labels))],
                         "label": labels})


def source_folder(tmp_path, train, test, extension="parquet"):
    """A dataset folder; a DataFrame is written as the extension's format, bytes as they are."""
    folder = tmp_path / "data"
    folder.mkdir()
    for split, content in (("train", train), ("test", test)):
        path = folder / f"{split}.{extension}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif extension == "csv":
            content.to_csv(path, index=False)
        else:
            content.to_parquet(path)
    return str(folder)


def teacher_without_weights(tmp_path, tokenizer_dir):
    from transformers import BertConfig

    folder = tmp_path / "teacher"
    shutil.copytree(tokenizer_dir, folder)
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    return str(folder)


def blocked_folder(tmp_path):
    # A path below a file: no user may create it. (A folder without write permission would not stop root.)
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "models")


BALANCED = [0, 1] * 60
# Case -> (its arguments, made from tmp_path t and the tokenizer folder k; a part of its sentence, {tmp} for t).
CASES = {
    # Parameters, checked before the pipeline starts.
    "unknown preset": (lambda t, k: ["--preset", "nope"], "--preset 'nope' is unknown: use one of"),
    "unknown --set name": (lambda t, k: ["--set", "temprature=3"], "did you mean temperature?"),
    "--set without a value": (lambda t, k: ["--set", "epochs"], "is not NAME=VALUE"),
    "--set of the wrong type": (lambda t, k: ["--set", "epochs=two"], "epochs=two is not a valid float"),
    "--set of a float for an int": (lambda t, k: ["--set", "seed=1.5"], "seed=1.5 is not a valid int"),
    "temperature 0": (lambda t, k: ["--set", "temperature=0"], "temperature=0.0 must be above 0"),
    "alpha above 1": (lambda t, k: ["--set", "alpha=1.5"], "alpha=1.5 must lie in [0, 1]"),
    "attention dropout 1": (lambda t, k: ["--set", "student_attention_dropout=1"],
                            "student_attention_dropout=1.0 must lie in [0, 1)"),
    "unknown distill_mode": (lambda t, k: ["--set", "distill_mode=fast"], "distill_mode='fast' is not one of"),
    "unknown truncation_side": (lambda t, k: ["--set", "truncation_side=middle"], "truncation_side='middle'"),
    "negative checkpoint_steps": (lambda t, k: ["--set", "checkpoint_steps=-1"], "checkpoint_steps=-1 must be"),
    "batch not split by --nproc": (lambda t, k: ["--nproc", "3"], "batch_size=32 does not split evenly across 3"),
    "accuracy margin of 1": (lambda t, k: ["--set", "min_accuracy_margin=1"], "min_accuracy_margin=1.0 must lie in [0, 1)"),
    "accuracy margin nan": (lambda t, k: ["--set", "min_accuracy_margin=nan"], "min_accuracy_margin=nan must lie in"),
    "imdb preset without a teacher": (lambda t, k: ["--preset", "imdb"], "needs a teacher"),
    "minilm preset without data": (lambda t, k: ["--preset", "minilm"], "The minilm preset needs --data"),
    "publish URI without write access": (lambda t, k: ["--publish-uri", blocked_folder(t)],
                                         "publish_uri='{tmp}/a-file/models' cannot be written"),
    "publish to a missing bucket": (lambda t, k: ["--publish-uri", "gs://no-such-bucket/models"],
                                    "publish_uri='gs://no-such-bucket/models': Bucket gs://no-such-bucket does not "
                                    "exist"),
    # The data, checked by data_prep before tokenizing.
    "data folder that does not exist": (lambda t, k: ["--data", str(t / "missing")], "source='{tmp}/missing' is not"),
    "data in a missing bucket": (lambda t, k: ["--data", "gs://no-such-bucket/reviews"],
                                 "Bucket gs://no-such-bucket does not exist"),
    "wrong file type": (lambda t, k: ["--data", source_folder(t, b"text\tlabel\n", b"text\tlabel\n", "txt")],
                        "holds no train and test files: put train.parquet"),
    "unreadable file": (lambda t, k: ["--data", source_folder(t, b"not parquet at all", reviews(BALANCED))],
                        "The train files of source='{tmp}/data' could not be read"),
    "empty split": (lambda t, k: ["--data", source_folder(t, reviews(BALANCED), reviews([]), "csv")],
                    "The test split of source='{tmp}/data' is empty"),
    "no text column": (lambda t, k:
                       ["--data", source_folder(t, *[reviews(BALANCED).rename(columns={"text": "x"})] * 2)],
                       "text_column='text' is not a column of the train split (it has x, label)"),
    "labels out of range": (lambda t, k: ["--data", source_folder(t, reviews([0, 1, 2] * 40), reviews(BALANCED))],
                            "label_column='label' holds 2 in the train split, outside [0, 2)"),
    "one class only": (lambda t, k: ["--data", source_folder(t, reviews([1] * 120), reviews(BALANCED))],
                       "The train split holds only label 1"),
    "duplicate-only data": (lambda t, k: ["--data", source_folder(t, pd.concat([reviews([0, 1])] * 60),
                                                                  reviews(BALANCED))],
                            "also appears in train (2 distinct texts in"),
    # The teacher, checked by teacher_check before any model is evaluated or trained.
    "teacher folder without weights": (
        lambda t, k: ["--set", f"teacher={teacher_without_weights(t, k)}", "--set", "train_teacher=false",
                      "--set", "tokenizer=", *SMALL],
        "teacher='{tmp}/teacher' could not be loaded"),
}


# The cases a step refuses inside the pipeline take a second or more each (kfp.local starts the steps): one stays in
# the fast lane, so that it covers a step's sentence reaching the command line through its error file.
FIRST_IN_PIPELINE = "data folder that does not exist"
IN_PIPELINE = list(CASES)[list(CASES).index(FIRST_IN_PIPELINE):]


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow)
                                  if case in IN_PIPELINE[1:] else case for case in CASES])
def test_bad_input_stops_the_run_with_one_sentence_and_no_result(case, tmp_path, tokenizer_dir, capsys, request):
    arguments, needle = CASES[case]
    if "bucket" in case:
        request.getfixturevalue("gcs")  # a real GCS emulator, without those buckets
    output = tmp_path / "out"
    assert main(["run", "--preset", "smoke", "--output", str(output), *arguments(tmp_path, tokenizer_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("kdflow: error: ") and needle.format(tmp=tmp_path) in error, error
    assert error[-1] in ".?", error
    assert not (output / "summary.json").exists() and not (output / "quality_report.html").exists()
