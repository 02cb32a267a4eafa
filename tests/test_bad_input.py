"""Bad input through the real command line: each case stops with one sentence that names the setting or option
and says what to do, prints no traceback, and leaves no summary or report that could pass for a result.

Every pipeline parameter and every option that takes a value has a case. Most stop before any step runs (no
pipeline root is made); the cases from FIRST_IN_PIPELINE on are refused by a step, in data_prep or teacher_check.
"""

import re
import shutil

import pandas as pd
import pytest

from kdflow.pipelines.cli import main

# A small smoke run: a case that gets past data_prep would take seconds, not minutes, to show it.
SMALL = ["--set", "max_train_samples=200", "--set", "max_eval_samples=50"]
# The last line of a refusal: kdflow's own ("kdflow: error: ") or argparse's ("kdflow bench train: error: ").
ERROR_LINE = re.compile(r"^kdflow( [a-z-]+)*: error: ")


def run(*words):
    """A `kdflow run --preset smoke` case with these words."""
    return lambda t, k: ["run", "--preset", "smoke", "--output", str(t / "out"), *words]


def setting(pair):
    return run("--set", pair)


def submit(command="submit"):
    """`kdflow submit` (or schedule) with valid parameters, to an API that nothing serves: a case that got past the
    checks would fail to connect instead of naming its option."""
    return [command, "--host", "http://127.0.0.1:9", "--param", "teacher=gs://bucket/teacher", "--param",
            "publish_uri=gs://bucket/models"]


def reviews(labels: list[int]) -> pd.DataFrame:
    words = ["good", "great", "fine", "bad", "dull", "poor", "plot", "film", "actors", "story"]
    return pd.DataFrame({"text": [f"{words[i % 10]} {words[(i // 10) % 10]} {i}" for i in range(len(labels))],
                         "label": labels})


def topic_reviews(labels: list[list[str]]) -> pd.DataFrame:
    """Multi-label rows: the label column holds a list of names per text."""
    return reviews([0] * len(labels)).assign(label=labels)


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


def labels_only(tmp_path):
    """An unlabeled source that holds labels and no texts."""
    reviews(BALANCED)[["label"]].to_parquet(tmp_path / "labels.parquet")
    return tmp_path / "labels.parquet"


def teacher_without_weights(tmp_path, tokenizer_dir):
    from transformers import BertConfig

    folder = tmp_path / "teacher"
    shutil.copytree(tokenizer_dir, folder)
    BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    return str(folder)


def a_file(tmp_path) -> str:
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file")


def blocked_folder(tmp_path) -> str:
    # A path below a file: no user may create it. (A folder without write permission would not stop root.)
    return f"{a_file(tmp_path)}/models"


BALANCED = [0, 1] * 60
# Case -> (its command line, made from tmp_path t and the tokenizer folder k; a part of its sentence, {tmp} for t).
CASES = {
    # kdflow run's options.
    "unknown preset": (run("--preset", "nope"), "--preset 'nope' is unknown: use one of"),
    "unknown --set name": (setting("temprature=3"), "did you mean temperature?"),
    "--set without a value": (setting("epochs"), "is not NAME=VALUE"),
    "--output that is a file": (lambda t, k: ["run", "--output", a_file(t)], "argument --output: '{tmp}/a-file' is a file"),
    "--runner unknown": (run("--runner", "kube"), "argument --runner: invalid choice: 'kube'"),
    "--nproc 0": (run("--nproc", "0"), "argument --nproc: 0 must be at least 1"),
    "--nproc not a number": (run("--nproc", "two"), "argument --nproc: 'two' is not a whole number"),
    "--teacher-shards 0": (run("--teacher-shards", "0"), "argument --teacher-shards: 0 must be at least 1"),
    "batch not split by --nproc": (run("--nproc", "3"), "batch_size=32 does not split evenly across 3"),
    "publish URI without write access": (lambda t, k: [*run()(t, k), "--publish-uri", blocked_folder(t)],
                                         "publish_uri='{tmp}/a-file/models' cannot be written"),
    "publish to a missing bucket": (run("--publish-uri", "gs://no-such-bucket/models"),
                                    "publish_uri='gs://no-such-bucket/models': Bucket gs://no-such-bucket does not "
                                    "exist"),
    # Every pipeline parameter, by --set.
    "source empty": (setting("source="), "The smoke preset needs --data"),
    "text_column with a control character": (setting("text_column=te\x07xt"), "text_column='te\\x07xt' holds the control"),
    "label_column with a tab": (setting("label_column=la\tbel"), "label_column='la\\tbel' holds the control"),
    "num_labels 1": (setting("num_labels=1"), "num_labels=1 must be 0 (read it from the data) or at least 2"),
    "problem_type unknown": (setting("problem_type=multilabel"),
                             "problem_type='multilabel' is not one of single_label, multi_label"),
    "decision_threshold outside (0, 1)": (run("--preset", "smoke-multi-label", "--set", "decision_threshold=1.5"),
                                          "decision_threshold=1.5 must lie in (0, 1)"),
    "decision_threshold of a single-label task": (setting("decision_threshold=0.5"),
                                                  "decision_threshold=0.5 is for problem_type=multi_label"),
    "tokenizer empty with a config teacher": (setting("tokenizer="), "has no tokenizer: set tokenizer"),
    "max_length 0": (setting("max_length=0"), "max_length=0 must be a positive number of tokens"),
    "unknown truncation_side": (setting("truncation_side=middle"), "truncation_side='middle'"),
    "negative max_train_samples": (setting("max_train_samples=-5"), "max_train_samples=-5 must be a row count"),
    "negative max_eval_samples": (setting("max_eval_samples=-1"), "max_eval_samples=-1 must be a row count"),
    "validation_fraction 0": (setting("validation_fraction=0"), "validation_fraction=0.0 must lie in (0, 1)"),
    "validation_fraction above 1": (setting("validation_fraction=1.5"), "validation_fraction=1.5 must lie in (0, 1)"),
    "imdb preset without a teacher": (run("--preset", "imdb"), "needs a teacher"),
    "teacher config that does not exist": (setting("teacher=config:nope"), "teacher='config:nope' names no configuration"),
    "teacher from_teacher": (setting("teacher=from_teacher"), "teacher=from_teacher is for students only"),
    "train_teacher not a bool": (setting("train_teacher=maybe"), "train_teacher=maybe is not a valid bool"),
    "teacher_epochs inf": (setting("teacher_epochs=inf"), "teacher_epochs=inf must be a finite number"),
    "teacher_batch_size 0": (setting("teacher_batch_size=0"), "teacher_batch_size=0 must be above 0"),
    "teacher_learning_rate -1": (setting("teacher_learning_rate=-1"), "teacher_learning_rate=-1.0 must be above 0"),
    "student empty": (setting("student="), "student='' names no model"),
    "student config that does not exist": (setting("student=config:nope"), "student='config:nope' names no configuration"),
    "student_layers -1": (setting("student_layers=-1"), "student_layers=-1 must be a number of layers"),
    "attention dropout 1": (setting("student_attention_dropout=1"), "student_attention_dropout=1.0 must lie in [0, 1)"),
    "unknown distill_mode": (setting("distill_mode=fast"), "distill_mode='fast' is not one of"),
    "temperature 0": (setting("temperature=0"), "temperature=0.0 must be above 0"),
    "temperature inf": (setting("temperature=inf"), "temperature=inf must be a finite number"),
    "alpha above 1": (setting("alpha=1.5"), "alpha=1.5 must lie in [0, 1]"),
    "alpha nan": (setting("alpha=nan"), "alpha=nan must be a finite number"),
    "epochs not a number": (setting("epochs=two"), "epochs=two is not a valid float"),
    "epochs 0": (setting("epochs=0"), "epochs=0.0 must be above 0"),
    "epochs inf": (setting("epochs=inf"), "epochs=inf must be a finite number"),
    "batch_size 0": (setting("batch_size=0"), "batch_size=0 must be above 0"),
    "learning_rate 0": (setting("learning_rate=0"), "learning_rate=0.0 must be above 0"),
    "learning_rate -1": (setting("learning_rate=-1"), "learning_rate=-1.0 must be above 0"),
    "learning_rate nan": (setting("learning_rate=nan"), "learning_rate=nan must be a finite number"),
    "gradient_accumulation_steps 0": (setting("gradient_accumulation_steps=0"),
                                      "gradient_accumulation_steps=0 must be above 0"),
    "unknown precision": (setting("precision=fp8"), "precision='fp8' is not one of auto, fp32, bf16, fp16"),
    "compare_baseline not a bool": (setting("compare_baseline=2"), "compare_baseline=2 is not a valid bool"),
    **{f"negative {weight}": (run("--set", "distill_mode=online", "--set", f"{weight}=-1"),
                              f"{weight}=-1.0 is negative: give 0 (off) or a positive weight")
       for weight in ("hidden_cosine_weight", "hidden_mse_weight", "embedding_mse_weight", "attention_kl_weight")},
    "intermediate term in cached mode": (setting("attention_kl_weight=0.5"),
                                         "attention_kl_weight=0.5 needs the teacher's hidden states, which "
                                         "distill_mode=cached does not keep: set distill_mode=online"),
    "layer_map that does not read": (setting("layer_map=1-2"), "layer_map='1-2' is not STUDENT:TEACHER pairs"),
    "layer_map naming layer 0": (setting("layer_map=0:1"), "layer_map='0:1' names layer 0"),
    "hidden_projection not a bool": (setting("hidden_projection=maybe"), "hidden_projection=maybe is not a valid bool"),
    "pretrained_teacher for a checkpoint student": (
        run("--set", "compare_baseline=true", "--set", "student=config:tiny-distilbert"),
        "pretrained_teacher='config:tiny-bert' applies to student=from_teacher only"),
    "max_unlabeled_samples -1": (setting("max_unlabeled_samples=-1"), "max_unlabeled_samples=-1"),
    "min_retention above 1": (setting("min_retention=2"), "min_retention=2.0 must lie in [0, 1]"),
    "min_retention below 0": (setting("min_retention=-0.1"), "min_retention=-0.1 must lie in [0, 1]"),
    "accuracy margin of 1": (setting("min_accuracy_margin=1"), "min_accuracy_margin=1.0 must lie in [0, 1)"),
    "accuracy margin nan": (setting("min_accuracy_margin=nan"), "min_accuracy_margin=nan must be a finite number"),
    "accuracy margin no student can pass": (run("--set", "num_labels=2", "--set", "min_accuracy_margin=0.5"),
                                            "min_accuracy_margin=0.5 cannot be passed with num_labels=2"),
    "parity_tolerance -1": (setting("parity_tolerance=-1"), "parity_tolerance=-1.0 must be above 0"),
    "parity_tolerance 0": (setting("parity_tolerance=0"), "parity_tolerance=0.0 must be above 0"),
    "max_int8_drop 1": (setting("max_int8_drop=1"), "max_int8_drop=1.0 must lie in [0, 1)"),
    "max_int8_drop -0.01": (setting("max_int8_drop=-0.01"), "max_int8_drop=-0.01 must lie in [0, 1)"),
    "publish_uri by --set without write access": (lambda t, k: setting(f"publish_uri={blocked_folder(t)}")(t, k),
                                                  "publish_uri='{tmp}/a-file/models' cannot be written"),
    "model_name climbing out": (setting("model_name=../x"), "model_name='../x' must be letters, digits"),
    "model_name empty": (setting("model_name="), "model_name='' must be letters, digits"),
    "model_name with a newline": (setting("model_name=a\nb"), "model_name='a\\nb' holds the control character"),
    "model_version climbing out": (setting("model_version=a/../../b"), "model_version='a/../../b' must be letters"),
    "promotion_tolerance -1": (setting("promotion_tolerance=-1"), "promotion_tolerance=-1.0 must lie in [0, 1]"),
    "promotion_tolerance 2": (setting("promotion_tolerance=2"), "promotion_tolerance=2.0 must lie in [0, 1]"),
    "seed -1": (setting("seed=-1"), "seed=-1 must lie in [0, 2**32)"),
    "seed 2**32": (setting("seed=4294967296"), "seed=4294967296 must lie in [0, 2**32)"),
    "seed not an int": (setting("seed=1.5"), "seed=1.5 is not a valid int"),
    "negative checkpoint_steps": (setting("checkpoint_steps=-1"), "checkpoint_steps=-1 must be"),
    "checkpoint_uri without write access": (lambda t, k: setting(f"checkpoint_uri={blocked_folder(t)}")(t, k),
                                            "checkpoint_uri='{tmp}/a-file/models' cannot be written"),
    "data_version with a newline": (setting("data_version=2026-12-06\n# injected"),
                                    "data_version='2026-12-06\\n# injected' holds the control character"),
    "minilm preset without data": (run("--preset", "minilm"), "The minilm preset needs --data"),
    # kdflow compile.
    "compile --target unknown": (lambda t, k: ["compile", "--target", "tekton"], "argument --target: invalid choice"),
    "compile --cron without argo": (lambda t, k: ["compile", "--cron", "0 3 * * 0", "--output", str(t / "p.yaml")],
                                    "--cron makes an Argo CronWorkflow: add --target argo."),
    "compile --output a folder": (lambda t, k: ["compile", "--output", str(t)], "argument --output: '{tmp}' is a folder"),
    "compile --image-registry with a scheme": (lambda t, k: ["compile", "--image-registry", "https://r.example.com/"],
                                               "--image-registry 'https://r.example.com/' is not a registry path"),
    "compile --teacher-shards 0": (lambda t, k: ["compile", "--teacher-shards", "0"],
                                   "argument --teacher-shards: 0 must be at least 1"),
    "compile --nproc -1": (lambda t, k: ["compile", "--nproc", "-1"], "argument --nproc: -1 must be at least 1"),
    # kdflow submit and schedule: refused before anything is sent (nothing listens at API).
    **{f"submit {option} {value!r}": (lambda t, k, option=option, value=value: [*submit(), option, value], sentence)
       for option, value, sentence in [
           ("--host", "ftp://kfp.example.com", "--host 'ftp://kfp.example.com' is not an http(s) URL"),
           ("--host", "https://me:s3cret@kfp.example.com", "--host https://me:***@kfp.example.com holds credentials"),
           ("--namespace", "Team_A", "--namespace 'Team_A' is not a valid Kubernetes name"),
           ("--experiment", " ", "--experiment ' ' is empty or holds control characters"),
           ("--token", "abc\ndef", "--token is empty or holds control characters"),
           ("--cookies", "", "--cookies is empty or holds control characters"),
           ("--ca-bundle", "no-such-ca.pem", "--ca-bundle no-such-ca.pem is not a file"),
           ("--package", "no-such-pipeline.yaml", "--package no-such-pipeline.yaml is not a file"),
           ("--pipeline-name", "kdflow\tdistillation", "--pipeline-name 'kdflow\\tdistillation' is empty or holds"),
           ("--pipeline-root", "pipeline-root", "--pipeline-root pipeline-root is not an object-store URI"),
           ("--service-account", "Runner", "--service-account 'Runner' is not a valid Kubernetes name"),
           ("--preset", "nope", "--preset 'nope' is unknown"),
           ("--param", "epochs=two", "--set epochs=two is not a valid float"),
           ("--run-name", "", "--run-name '' is empty or holds control characters"),
       ]},
    "schedule --cron of five fields": (lambda t, k: [*submit("schedule"), "--cron", "0 3 * * 0"],
                                       "--cron '0 3 * * 0'"),
    "schedule --cron out of range": (lambda t, k: [*submit("schedule"), "--cron", "0 99 3 * * 0"],
                                     "'99' is not a valid minute field"),
    "schedule --name empty": (lambda t, k: [*submit("schedule"), "--cron", "0 0 3 * * 0", "--name", ""],
                              "--name '' is empty or holds control characters"),
    "schedule --delete empty": (lambda t, k: [*submit("schedule"), "--delete", ""],
                                "--delete '' is empty or holds control characters"),
    "compile --cron out of range": (lambda t, k: ["compile", "--target", "argo", "--cron", "99 99 99 99 99"],
                                    "--cron '99 99 99 99 99': '99' is not a valid minute field"),
    "compile --cron template syntax": (lambda t, k: ["compile", "--target", "argo", "--cron", "{{x}} 3 * * 0"],
                                       "'{{{{x}}}}' is not a valid minute field"),  # braces doubled for format
    "compile --gcp-key-secret not a Kubernetes name": (lambda t, k: ["compile", "--gcp-key-secret", "GCP_Key"],
                                                       "--gcp-key-secret 'GCP_Key' is not a valid Kubernetes name"),
    # kdflow images build.
    "images --engine unknown": (lambda t, k: ["images", "build", "--engine", "kaniko"], "invalid choice: 'kaniko'"),
    "images --only unknown": (lambda t, k: ["images", "build", "--only", "gpu"], "invalid choice: 'gpu'"),
    "images --registry with capitals": (lambda t, k: ["images", "build", "--registry", "Registry.example.com"],
                                        "--registry 'Registry.example.com' is not a registry path"),
    "images --base-image not a reference": (lambda t, k: ["images", "build", "--base-image", "python 3.11"],
                                            "--base-image 'python 3.11' is not an image reference"),
    # kdflow bench train and bench infer.
    "bench train --teacher missing": (lambda t, k: ["bench", "train", "--teacher", str(t / "no"), "--data", str(t)],
                                      "argument --teacher: '{tmp}/no' is not a folder"),
    "bench train --data missing": (lambda t, k: ["bench", "train", "--teacher", k, "--data", str(t / "no")],
                                   "argument --data: '{tmp}/no' is not a folder"),
    **{f"bench train {option} {value}": (
        lambda t, k, option=option, value=value: ["bench", "train", "--teacher", k, "--data", k, option, value],
        f"argument {option}: {sentence}")
       for option, value, sentence in [
           ("--rows", "0", "0 must be at least 1"), ("--eval-rows", "0", "0 must be at least 1"), ("--max-length", "0", "0 must be at least 1"),
           ("--epochs", "nan", "nan must be a finite number"), ("--recipe-max-steps", "-1", "-1 must be at least 0"),
           ("--repeats", "0", "0 must be at least 1"), ("--student-layers", "0", "0 must be at least 1"),
           ("--seed", "-1", "-1 must be at least 0"), ("--peak-tflops", "inf", "inf must be a finite number")]},
    "bench train --output a file": (lambda t, k: ["bench", "train", "--teacher", k, "--data", k, "--output", a_file(t)],
                                    "argument --output: '{tmp}/a-file' is a file"),
    "bench train --set unknown": (lambda t, k: ["bench", "train", "--teacher", k, "--data", k, "--set", "speed=2"],
                                  "--set 'speed=2' must be NAME=VALUE with NAME a distill setting"),
    "bench infer --student missing": (lambda t, k: ["bench", "infer", "--teacher", k, "--student", str(t / "no"),
                                                    "--data", k], "argument --student: '{tmp}/no' is not a folder"),
    "bench infer --output a file": (lambda t, k: ["bench", "infer", "--teacher", k, "--student", k, "--data", k,
                                                  "--output", a_file(t)], "argument --output: '{tmp}/a-file' is a file"),
    **{f"bench infer {option} {value}": (
        lambda t, k, option=option, value=value: ["bench", "infer", "--teacher", k, "--student", k, "--data", k,
                                                  option, value],
        f"argument {option}: {sentence}")
       for option, value, sentence in [
           ("--rows", "0", "0 must be at least 1"), ("--batch-1-rows", "0", "0 must be at least 1"), ("--max-length", "x", "'x' is not a whole number"),
           ("--repeats", "0", "0 must be at least 1")]},
    "bench quality --data missing": (lambda t, k: ["bench", "quality", "--data", str(t / "no")],
                                     "argument --data: '{tmp}/no' is not a folder"),
    "bench quality --output a file": (lambda t, k: ["bench", "quality", "--data", k, "--output", a_file(t)],
                                      "argument --output: '{tmp}/a-file' is a file"),
    **{f"bench quality {option} 0": (
        lambda t, k, option=option: ["bench", "quality", "--data", k, option, "0"],
        f"argument {option}: 0 must be at least 1")
       for option in ("--rows", "--eval-rows", "--seeds", "--unlabeled-rows")},
    # The data, checked by data_prep before tokenizing.
    "data folder that does not exist": (lambda t, k: [*run()(t, k), "--data", str(t / "missing")], "source='{tmp}/missing' is not"),
    "data in a missing bucket": (lambda t, k: [*run()(t, k), "--data", "gs://no-such-bucket/reviews"],
                                 "Bucket gs://no-such-bucket does not exist"),
    "wrong file type": (lambda t, k: [*run()(t, k), "--data", source_folder(t, b"text\tlabel\n", b"text\tlabel\n", "txt")],
                        "holds no train and test files: put train.parquet"),
    "unreadable file": (lambda t, k: [*run()(t, k), "--data", source_folder(t, b"not parquet at all", reviews(BALANCED))],
                        "The train files of source='{tmp}/data' could not be read"),
    "empty split": (lambda t, k: [*run()(t, k), "--data", source_folder(t, reviews(BALANCED), reviews([]), "csv")],
                    "The test split of source='{tmp}/data' is empty"),
    "no text column": (lambda t, k:
                       [*run()(t, k), "--data", source_folder(t, *[reviews(BALANCED).rename(columns={"text": "x"})] * 2)],
                       "text_column='text' is not a column of the train split (it has x, label)"),
    "more classes than num_labels": (
        lambda t, k: [*setting("num_labels=2")(t, k), "--data", source_folder(t, reviews([0, 1, 2] * 40),
                                                                               reviews(BALANCED))],
        "label_column='label' holds 3 classes in the train split (0, 1, 2) but num_labels=2: set num_labels=3, or 0 "
        "to read it from the data"),
    "a test label train never has": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, reviews([0, 1] * 60), reviews([0, 1, 2] * 14))],
        "label_column='label' holds 2 in the test split, a label the train split never has (label_0, label_1)"),
    "one class only": (lambda t, k: [*setting("num_labels=2")(t, k), "--data",
                                     source_folder(t, reviews([1] * 120), reviews(BALANCED))],
                       "The train split holds only label 'label_1'"),
    "multi-label: an empty label list": (
        lambda t, k: [*setting("problem_type=multi_label")(t, k), "--data",
                      source_folder(t, topic_reviews([["plot"], ["cast", "plot"]] * 60),
                                    topic_reviews([["plot"], []] * 20))],
        "label_column='label' holds an empty label list in row 1 of the test split: give every row at least one label"),
    "multi-label: a test label train never has": (
        lambda t, k: [*setting("problem_type=multi_label")(t, k), "--data",
                      source_folder(t, topic_reviews([["plot"], ["cast", "plot"]] * 60),
                                    topic_reviews([["plot"], ["music"]] * 20))],
        "label_column='label' holds 'music' in the test split, a label the train split never has (cast, plot)"),
    "multi-label: labels that are not lists": (
        lambda t, k: [*setting("problem_type=multi_label")(t, k), "--data",
                      source_folder(t, reviews(BALANCED), reviews(BALANCED[:40]))],
        "label_column='label' holds int64 values in the train split, not lists of labels"),
    "duplicate-only data": (lambda t, k: [*run()(t, k), "--data", source_folder(t, pd.concat([reviews([0, 1])] * 60),
                                                                  reviews(BALANCED))],
                            "also appears in train (2 distinct texts in"),
    "test split that repeats train": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, reviews(BALANCED), reviews(BALANCED))],
        "108 of the 120 test texts of source='{tmp}/data' (90.0%) also appear in train, more than 1%"),
    "texts all empty": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, reviews(BALANCED),
                                                            reviews(BALANCED).assign(text=["", " "] * 60))],
        "Every text of the test split of source='{tmp}/data' is empty or whitespace (120 rows)"),
    "jsonl that is not UTF-8": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, b'{"text": "caf\xff", "label": 1}\n',
                                                            b'{"text": "good", "label": 1}\n', "jsonl")],
        "train.jsonl line 1 of source='{tmp}/data' is not valid UTF-8 (byte 0xff at position 14)"),
    "malformed jsonl line": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, b'{"text": "good", "label": 1}\n{"text": "bad"\n',
                                                            b'{"text": "good", "label": 1}\n', "jsonl")],
        "train.jsonl line 2 of source='{tmp}/data' is not a JSON object (Expecting ',' delimiter at position 15)"),
    "csv that is not UTF-8": (
        lambda t, k: [*run()(t, k), "--data", source_folder(t, reviews(BALANCED).to_csv(index=False).encode(),
                                                            "text,label\ncafé,1\n".encode("latin-1"), "csv")],
        "test.csv line 2 of source='{tmp}/data' is not valid UTF-8 (byte 0xe9 at position 4)"),
    "unlabeled_source that does not exist": (setting("unlabeled_source=/nonexistent/unsup.parquet"),
                                             "unlabeled_source='/nonexistent/unsup.parquet'"),
    "unlabeled_source with labels only": (
        lambda t, k: setting(f"unlabeled_source={labels_only(t)}")(t, k),
        "unlabeled_source='{tmp}/labels.parquet' holds labels ('label') but no texts"),
    # The teacher, checked by teacher_check before any model is evaluated or trained.
    "teacher folder without weights": (
        lambda t, k: [*run()(t, k), "--set", f"teacher={teacher_without_weights(t, k)}", "--set", "train_teacher=false",
                      "--set", "tokenizer=", *SMALL],
        "teacher='{tmp}/teacher' could not be loaded"),
}


# The cases a step refuses inside the pipeline take a second or more each (kfp.local starts the steps): one stays in
# the fast lane, so that it covers a step's sentence reaching the command line through its error file.
FIRST_IN_PIPELINE = "data folder that does not exist"
IN_PIPELINE = list(CASES)[list(CASES).index(FIRST_IN_PIPELINE):]


@pytest.mark.parametrize("case", [pytest.param(case, marks=pytest.mark.slow)
                                  if case in IN_PIPELINE[1:] else case for case in CASES])
def test_bad_input_stops_with_one_sentence_and_no_result(case, tmp_path, tokenizer_dir, capsys, request):
    command_line, needle = CASES[case]
    if "bucket" in case:
        request.getfixturevalue("gcs")  # a real GCS emulator, without those buckets
    try:
        status = main(command_line(tmp_path, str(tokenizer_dir)))
    except SystemExit as exit_:  # argparse's refusal
        status = exit_.code
    printed = capsys.readouterr()
    assert status == 2, printed
    error = printed.err.strip().splitlines()[-1]
    assert ERROR_LINE.match(error) and needle.format(tmp=tmp_path) in error, error
    assert error.startswith("kdflow: error: ") <= (error[-1] in ".?"), error  # kdflow's sentences end as sentences
    assert "Traceback" not in printed.out + printed.err
    assert "s3cret" not in printed.out + printed.err  # a password in a URL is masked
    output = tmp_path / "out"
    assert not (output / "summary.json").exists() and not (output / "quality_report.html").exists()
    # A setting or option is refused before any step runs: no step made the pipeline root.
    assert (case in IN_PIPELINE) == (output / "pipeline_root").exists(), case
