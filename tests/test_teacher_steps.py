"""teacher_train, teacher_check and teacher_eval on tiny models: row-aligned logits and early refusals."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from kdflow.components.common import inference
from kdflow.components.common.data import UNLABELED, UNLABELED_SPLIT, load_prepared, save_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import Evaluation, Gate
from kdflow.components.merge_logits import task as merge_logits
from kdflow.components.student_eval import task as student_eval
from kdflow.components.teacher_check import task as teacher_check
from kdflow.components.teacher_eval import task as teacher_eval
from kdflow.components.teacher_shard import task as teacher_shard
from kdflow.components.teacher_train import task as teacher_train


def bert_config(vocab_size, **overrides):
    values = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)
    return BertConfig(**{**values, **overrides})


def save(model, folder, tokenizer_dir):
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(folder))
    return str(folder)


def train_teacher(tmp_path, prepared_data_dir, output="teacher", **settings) -> dict:
    """Trains a tiny teacher into tmp_path/output, with the pipeline's defaults (pipelines/distillation.py) where
    `settings` names none; returns the training figures."""
    settings = teacher_train.Settings(**{
        "teacher": "config:tiny-bert", "epochs": 2.0, "batch_size": 16, "learning_rate": 5e-5, "precision": "auto",
        "seed": 42, "checkpoint_steps": 500, "checkpoint_uri": "", "report_to": "none", "tracking_uri": "",
        "experiment": "kdflow-student", **settings})
    files = teacher_train.Files(data=str(prepared_data_dir), teacher_model=str(tmp_path / output),
                                training_curves=str(tmp_path / "curves.html"))
    return teacher_train.train(settings, files)


def check_teacher(tmp_path, prepared_data_dir, teacher: str):
    return teacher_check.run(teacher_check.Settings(teacher=teacher),
                             teacher_check.Files(data=str(prepared_data_dir), teacher_card=str(tmp_path / "card.md")))


def shard_logits(prepared_data_dir, teacher: str, shard: int, shards: int, folder) -> None:
    teacher_shard.run(teacher_shard.Settings(teacher=teacher, shard=shard, shards=shards, precision="fp32"),
                      teacher_shard.Files(data=str(prepared_data_dir), teacher_logits=str(folder)))


@pytest.fixture()
def teacher_dir(tmp_path, tokenizer_dir):
    torch.manual_seed(0)
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    return save(BertForSequenceClassification(bert_config(vocab_size)), tmp_path / "teacher", tokenizer_dir)


def evaluate_teacher(tmp_path, prepared_data_dir, teacher: str, cache_logits: bool = True):
    """teacher_eval in fp32 into tmp_path/eval; returns its files."""
    files = teacher_eval.Files(data=str(prepared_data_dir), teacher_logits=str(tmp_path / "eval" / "logits"),
                               teacher_metrics=str(tmp_path / "eval" / "metrics.json"),
                               teacher_confusion=str(tmp_path / "eval" / "confusion.json"))
    teacher_eval.run(teacher_eval.Settings(teacher=teacher, cache_logits=cache_logits, precision="fp32"), files)
    return files


def test_teacher_eval_caches_logits_that_line_up_with_their_rows(tmp_path, monkeypatch, prepared_data_dir, teacher_dir):
    monkeypatch.setattr(teacher_eval, "INFERENCE_BATCH_SIZE", 7)  # several batches of each split
    files = evaluate_teacher(tmp_path, prepared_data_dir, teacher_dir)
    logits = datasets.load_from_disk(files.teacher_logits)
    data = load_prepared(str(prepared_data_dir))
    model = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    for split in ("train", "validation"):
        assert len(logits[split]) == len(data.splits[split])
        # Rows of different lengths, each run alone (no padding): batching by length must not reorder them.
        for row in (0, 5, len(data.splits[split]) - 1):
            ids = torch.tensor([data.splits[split][row]["input_ids"]])
            with torch.no_grad():
                expected = model(input_ids=ids).logits[0].numpy()
            np.testing.assert_allclose(logits[split][row]["teacher_logits"], expected, atol=1e-5)
    metrics = Evaluation.read(files.teacher_metrics)
    assert 0.0 <= metrics.scores.accuracy <= 1.0 and metrics.gate is None
    assert np.array(metrics.scores.confusion_matrix).sum() == metrics.scores.rows == len(data.splits["test"])
    assert set(metrics.scores.latency_ms) == {"1", "32"} and metrics.scores.parameters > 0
    # What the KFP UI draws.
    assert json.loads(Path(files.teacher_confusion).read_text()) == {
        "labels": ["negative", "positive"], "matrix": metrics.scores.confusion_matrix}


def test_a_teacher_in_a_bucket_scores_as_the_same_teacher_on_disk(tmp_path, prepared_data_dir, teacher_dir,
                                                                  bucket_uri):
    from kdflow.components.common import storage

    storage.upload_folder(str(teacher_dir), f"{bucket_uri}/teachers/tiny")
    from_bucket = evaluate_teacher(tmp_path / "bucket", prepared_data_dir, f"{bucket_uri}/teachers/tiny")
    on_disk = evaluate_teacher(tmp_path / "disk", prepared_data_dir, str(teacher_dir))
    assert (Evaluation.read(from_bucket.teacher_metrics).scores.confusion_matrix
            == Evaluation.read(on_disk.teacher_metrics).scores.confusion_matrix)
    np.testing.assert_array_equal(datasets.load_from_disk(from_bucket.teacher_logits)["train"]["teacher_logits"],
                                  datasets.load_from_disk(on_disk.teacher_logits)["train"]["teacher_logits"])


def test_bf16_logits_are_close_to_fp32_ones(prepared_data_dir, teacher_dir):
    data = load_prepared(str(prepared_data_dir))
    model = BertForSequenceClassification.from_pretrained(teacher_dir)
    fp32, bf16 = (np.array(inference.teacher_logits(model, data, precision=precision)["train"]["teacher_logits"])
                  for precision in ("fp32", "bf16"))
    assert not np.array_equal(bf16, fp32)  # the products did run in bf16
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


@pytest.mark.slow
def test_teacher_train_learns_the_data(tmp_path, prepared_data_dir):
    figures = train_teacher(tmp_path, prepared_data_dir, epochs=8, learning_rate=2e-3)
    data = load_prepared(str(prepared_data_dir))
    model = BertForSequenceClassification.from_pretrained(str(tmp_path / "teacher"))
    metrics = inference.evaluate_on_test(model, data.tokenizer, data)
    assert figures["train_loss"] > 0
    assert metrics["accuracy"] >= 0.9  # one sentiment word decides each test row: easy to learn
    assert "Teacher training losses" in (tmp_path / "curves.html").read_text()
    # The trained teacher passes teacher_check, run as a command: it returns the teacher's URI and describes it.
    teacher_check.main(["--data", str(prepared_data_dir), "--teacher-card", str(tmp_path / "card.md"),
                        "--teacher", str(tmp_path / "teacher"), "--teacher-uri", str(tmp_path / "teacher_uri")])
    assert (tmp_path / "teacher_uri").read_text() == str(tmp_path / "teacher")
    card = (tmp_path / "card.md").read_text()
    assert "BertForSequenceClassification" in card and "- Labels: 2" in card
    assert f"- Vocabulary: {len(data.tokenizer)} tokens" in card and "- Position limit: 256 tokens" in card


def test_teacher_check_refuses_a_base_model_without_classifier_head(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    base = save(BertModel(bert_config(vocab_size)), tmp_path / "base", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="train_teacher=true"):
        check_teacher(tmp_path, prepared_data_dir, base)


def test_teacher_check_refuses_another_label_count(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    three = save(BertForSequenceClassification(bert_config(vocab_size, num_labels=3)), tmp_path / "t3", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="num_labels=2"):
        check_teacher(tmp_path, prepared_data_dir, three)


def test_teacher_check_refuses_a_multi_label_teacher_for_single_label_data(tmp_path, prepared_data_dir,
                                                                           tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    config = bert_config(vocab_size, problem_type="multi_label_classification")
    sigmoid = save(BertForSequenceClassification(config), tmp_path / "sigmoid", tokenizer_dir)
    with pytest.raises(KdflowInputError, match=r"is a multi-label classifier \(a sigmoid per label\) but the data is "
                                               "problem_type=single_label"):
        check_teacher(tmp_path, prepared_data_dir, sigmoid)


def test_teacher_check_refuses_max_length_above_its_positions(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    short = save(BertForSequenceClassification(bert_config(vocab_size, max_position_embeddings=32)),
                 tmp_path / "short", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="max_length=64 is above the teacher's position limit of 32"):
        check_teacher(tmp_path, prepared_data_dir, short)


def test_teacher_check_refuses_a_teacher_with_another_vocabulary(tmp_path, prepared_data_dir, teacher_dir):
    from transformers import BertTokenizer

    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "film"])}).save_pretrained(
        teacher_dir)
    with pytest.raises(KdflowInputError, match="vocabulary"):
        check_teacher(tmp_path, prepared_data_dir, teacher_dir)


def test_a_learning_rate_that_blows_up_the_loss_stops_teacher_train(tmp_path, prepared_data_dir):
    # lr 1e6 makes the weights overflow within a few steps (step 4 of 12 here): training must stop there.
    with pytest.raises(KdflowInputError, match=r"loss became (nan|inf) at step \d+ of 12.*lower teacher_learning_rate, "
                                               r"now 1e\+06.*precision=bf16"):
        train_teacher(tmp_path, prepared_data_dir, output="t", learning_rate=1e6)
    assert not (tmp_path / "t").exists()
def test_logits_of_three_shards_merged_equal_the_single_tasks_row_for_row(tmp_path, prepared_data_dir, teacher_dir):
    data = load_prepared(str(prepared_data_dir))
    model = BertForSequenceClassification.from_pretrained(teacher_dir)
    # What teacher_eval stores unsharded, in other batches (7 rows) than the shards' (INFERENCE_BATCH_SIZE).
    single = inference.teacher_logits(model, data, batch_size=7, precision="fp32")
    shard_dirs = [str(tmp_path / f"shard-{index}") for index in range(3)]
    for index, folder in enumerate(shard_dirs):
        shard_logits(prepared_data_dir, teacher_dir, index, 3, folder)
    # Collected artifacts come in no promised order: the merge must go by the shards' indices.
    merge_logits.main(["--shards", *shard_dirs[::-1], "--teacher-logits", str(tmp_path / "merged")])
    merged = datasets.load_from_disk(str(tmp_path / "merged"))
    for split in ("train", "validation"):  # 96 and 32 rows: the validation shards differ in size (10, 11, 11)
        assert len(merged[split]) == len(single[split])
        np.testing.assert_allclose(np.array(merged[split]["teacher_logits"]), np.array(single[split]["teacher_logits"]),
                                   atol=1e-5)


@pytest.fixture(scope="module")
def data_with_unlabeled(tmp_path_factory, prepared_data_dir):
    """The prepared data with an unlabeled split of 50 rows, as data_prep adds it."""
    from conftest import make_rows

    data = load_prepared(str(prepared_data_dir))
    texts = make_rows(50, 3)["text"]
    unlabeled = datasets.Dataset.from_dict({"text": texts, "label": [UNLABELED] * len(texts)}).map(
        lambda batch: data.tokenizer(batch["text"], truncation=True, max_length=data.max_length,
                                     return_token_type_ids=False), batched=True,
    ).map(lambda row: {"length": len(row["input_ids"])})
    folder = tmp_path_factory.mktemp("with-unlabeled")
    save_prepared(str(folder), datasets.DatasetDict({**data.splits, UNLABELED_SPLIT: unlabeled}), data.tokenizer,
                  data.info)
    return folder


def test_teacher_logits_of_the_unlabeled_split_line_up_with_its_rows_sharded_or_not(tmp_path, monkeypatch,
                                                                                     data_with_unlabeled, teacher_dir):
    monkeypatch.setattr(teacher_eval, "INFERENCE_BATCH_SIZE", 7)  # several batches
    single = datasets.load_from_disk(evaluate_teacher(tmp_path, data_with_unlabeled, teacher_dir).teacher_logits)
    data = load_prepared(str(data_with_unlabeled))
    assert list(single) == list(inference.logit_splits(data)) == ["train", "validation", UNLABELED_SPLIT]
    unlabeled = data.splits[UNLABELED_SPLIT]
    assert len(single[UNLABELED_SPLIT]) == len(unlabeled) == 50
    model = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    for row in (0, 5, len(unlabeled) - 1):
        with torch.no_grad():
            expected = model(input_ids=torch.tensor([unlabeled[row]["input_ids"]])).logits[0].numpy()
        np.testing.assert_allclose(single[UNLABELED_SPLIT][row]["teacher_logits"], expected, atol=1e-5)
    shard_dirs = [str(tmp_path / f"shard-{index}") for index in range(3)]
    for index, folder in enumerate(shard_dirs):
        shard_logits(data_with_unlabeled, teacher_dir, index, 3, folder)
    merge_logits.main(["--shards", *shard_dirs[::-1], "--teacher-logits", str(tmp_path / "merged")])
    merged = datasets.load_from_disk(str(tmp_path / "merged"))
    assert list(merged) == list(single)
    for split in single:
        np.testing.assert_allclose(np.array(merged[split]["teacher_logits"]), np.array(single[split]["teacher_logits"]),
                                   atol=1e-5)


def test_merge_refuses_a_missing_shard(tmp_path, prepared_data_dir, teacher_dir):
    for index in (0, 2):
        shard_logits(prepared_data_dir, teacher_dir, index, 3, tmp_path / f"shard-{index}")
    with pytest.raises(KdflowInputError, match=r"indices \[0, 2\]"):
        merge_logits.run(None, merge_logits.Files(shards=[str(tmp_path / "shard-0"), str(tmp_path / "shard-2")],
                                                  teacher_logits=str(tmp_path / "merged")))
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("shard, shards, named", [(3, 3, r"shard=3 must lie in \[0, shards=3\)"),
                                                   (0, 2, "precision='fp8' is not one of")])
def test_teacher_shard_refuses_bad_settings_before_any_work(shard, shards, named):
    with pytest.raises(KdflowInputError, match=named):
        teacher_shard.Settings(teacher="t", shard=shard, shards=shards, precision="fp32" if shard else "fp8")


def test_teacher_eval_without_cache_logits_writes_no_logits(tmp_path, prepared_data_dir, teacher_dir):
    files = evaluate_teacher(tmp_path, prepared_data_dir, teacher_dir, cache_logits=False)
    assert [path.name for path in Path(files.teacher_logits).iterdir()] == [teacher_eval.NOT_HERE]  # a note, no logits
    assert 0.0 <= Evaluation.read(files.teacher_metrics).scores.accuracy <= 1.0


def test_student_eval_gates_a_student_on_the_teachers_accuracy_from_its_command_line(tmp_path, prepared_data_dir,
                                                                                      teacher_dir):
    teacher = evaluate_teacher(tmp_path, prepared_data_dir, teacher_dir, cache_logits=False)
    out = tmp_path / "student"
    # The teacher as its own student: the same predictions, so it keeps all of its accuracy.
    student_eval.main(["--data", str(prepared_data_dir), "--student", teacher_dir, "--teacher-metrics",
                       teacher.teacher_metrics, "--student-metrics", str(out / "metrics.json"), "--student-confusion",
                       str(out / "confusion.json"), "--min-retention", "0.97", "--min-accuracy-margin", "0.05",
                       "--passed", str(tmp_path / "passed"),
                       "--retention", str(tmp_path / "retention")])
    metrics = Evaluation.read(out / "metrics.json")
    teacher_accuracy = Evaluation.read(teacher.teacher_metrics).scores.accuracy
    assert metrics.scores.accuracy == metrics.gate.teacher_accuracy == teacher_accuracy > 0
    # Retention 1.0; whether it passes is the accuracy floor's call on this untrained teacher (see test_results).
    assert metrics.gate == Gate.judge(metrics.scores, Evaluation.read(teacher.teacher_metrics).scores, 0.97, 0.05)
    assert metrics.gate.retention == 1.0
    assert (tmp_path / "passed").read_text() == json.dumps(metrics.gate.passed)  # true/false, as conditions compare
    assert json.loads((tmp_path / "retention").read_text()) == 1.0
    assert json.loads((out / "confusion.json").read_text())["matrix"] == metrics.scores.confusion_matrix


def test_student_eval_refuses_a_negative_min_retention():
    with pytest.raises(KdflowInputError, match=r"min_retention=-0\.1 must lie in \[0, 1\]"):
        student_eval.Settings(min_retention=-0.1, min_accuracy_margin=0.05)
