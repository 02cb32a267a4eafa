"""teacher_train, teacher_check and teacher_eval on tiny models: row-aligned logits and early refusals."""

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.teacher_check import task as teacher_check
from kdflow.components.teacher_eval import task as teacher_eval
from kdflow.components.teacher_train import task as teacher_train


def bert_config(vocab_size, **overrides):
    values = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=128)
    return BertConfig(**{**values, **overrides})


def save(model, folder, tokenizer_dir):
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture()
def teacher_dir(tmp_path, tokenizer_dir):
    torch.manual_seed(0)
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    return save(BertForSequenceClassification(bert_config(vocab_size)), tmp_path / "teacher", tokenizer_dir)


def test_cached_logits_line_up_with_their_rows(tmp_path, prepared_data_dir, teacher_dir):
    metrics = teacher_eval.run(data_dir=str(prepared_data_dir), teacher=teacher_dir, logits_dir=str(tmp_path / "l"),
                               batch_size=7, precision="fp32")
    logits = datasets.load_from_disk(str(tmp_path / "l"))
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
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == len(data.splits["test"])


def test_bf16_logits_are_close_to_fp32_ones(prepared_data_dir, teacher_dir):
    data = load_prepared(str(prepared_data_dir))
    model = BertForSequenceClassification.from_pretrained(teacher_dir)
    fp32, bf16 = (np.array(teacher_eval.teacher_logits(model, data, precision=precision)["train"]["teacher_logits"])
                  for precision in ("fp32", "bf16"))
    assert not np.array_equal(bf16, fp32)  # the products did run in bf16
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_teacher_train_learns_the_data(tmp_path, prepared_data_dir):
    figures = teacher_train.run(data_dir=str(prepared_data_dir), teacher="config:tiny-bert",
                                output_dir=str(tmp_path / "teacher"), curves_path=str(tmp_path / "curves.html"),
                                epochs=8, batch_size=16, learning_rate=2e-3)
    metrics = teacher_eval.run(data_dir=str(prepared_data_dir), teacher=str(tmp_path / "teacher"),
                               logits_dir=str(tmp_path / "logits"))
    assert figures["train_loss"] > 0
    assert metrics["accuracy"] >= 0.9  # one sentiment word decides each test row: easy to learn
    assert teacher_check.run(data_dir=str(prepared_data_dir), teacher=str(tmp_path / "teacher")) == str(tmp_path / "teacher")


def test_teacher_check_refuses_a_base_model_without_classifier_head(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    base = save(BertModel(bert_config(vocab_size)), tmp_path / "base", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="train_teacher=true"):
        teacher_check.run(data_dir=str(prepared_data_dir), teacher=base)


def test_teacher_check_refuses_another_label_count(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    three = save(BertForSequenceClassification(bert_config(vocab_size, num_labels=3)), tmp_path / "t3", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="num_labels=2"):
        teacher_check.run(data_dir=str(prepared_data_dir), teacher=three)


def test_teacher_check_refuses_max_length_above_its_positions(tmp_path, prepared_data_dir, tokenizer_dir):
    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    short = save(BertForSequenceClassification(bert_config(vocab_size, max_position_embeddings=32)),
                 tmp_path / "short", tokenizer_dir)
    with pytest.raises(KdflowInputError, match="max_length=64 is above the teacher's position limit of 32"):
        teacher_check.run(data_dir=str(prepared_data_dir), teacher=short)


def test_teacher_check_refuses_a_teacher_with_another_vocabulary(tmp_path, prepared_data_dir, teacher_dir):
    from transformers import BertTokenizer

    BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "film"])}).save_pretrained(
        teacher_dir)
    with pytest.raises(KdflowInputError, match="vocabulary"):
        teacher_check.run(data_dir=str(prepared_data_dir), teacher=teacher_dir)


def test_a_learning_rate_that_blows_up_the_loss_stops_teacher_train(tmp_path, prepared_data_dir):
    # lr 1e6 makes the weights overflow within a few steps (step 4 of 12 here): training must stop there.
    with pytest.raises(KdflowInputError, match=r"loss became (nan|inf) at step \d+ of 12.*lower teacher_learning_rate, "
                                               r"now 1e\+06.*precision=bf16"):
        teacher_train.run(data_dir=str(prepared_data_dir), teacher="config:tiny-bert", output_dir=str(tmp_path / "t"),
                          curves_path=str(tmp_path / "curves.html"), epochs=2, batch_size=16, learning_rate=1e6)
    assert not (tmp_path / "t").exists()
def test_logits_of_three_shards_merged_equal_the_single_tasks_row_for_row(tmp_path, prepared_data_dir, teacher_dir):
    from kdflow.components.merge_logits import task as merge_logits
    from kdflow.components.teacher_shard import task as teacher_shard

    teacher_eval.run(data_dir=str(prepared_data_dir), teacher=teacher_dir, logits_dir=str(tmp_path / "single"),
                     batch_size=7)
    shard_dirs = [str(tmp_path / f"shard-{index}") for index in range(3)]
    for index, folder in enumerate(shard_dirs):
        teacher_shard.run(data_dir=str(prepared_data_dir), teacher=teacher_dir, shard=index, shards=3,
                          logits_dir=folder, batch_size=7)
    # Collected artifacts come in no promised order: the merge must go by the shards' indices.
    merge_logits.run(shard_dirs=shard_dirs[::-1], logits_dir=str(tmp_path / "merged"))
    single = datasets.load_from_disk(str(tmp_path / "single"))
    merged = datasets.load_from_disk(str(tmp_path / "merged"))
    for split in ("train", "validation"):  # 96 and 32 rows: the validation shards differ in size (10, 11, 11)
        assert len(merged[split]) == len(single[split])
        np.testing.assert_allclose(np.array(merged[split]["teacher_logits"]), np.array(single[split]["teacher_logits"]),
                                   atol=1e-5)


def test_merge_refuses_a_missing_shard(tmp_path, prepared_data_dir, teacher_dir):
    from kdflow.components.merge_logits import task as merge_logits
    from kdflow.components.teacher_shard import task as teacher_shard

    for index in (0, 2):
        teacher_shard.run(data_dir=str(prepared_data_dir), teacher=teacher_dir, shard=index, shards=3,
                          logits_dir=str(tmp_path / f"shard-{index}"))
    with pytest.raises(KdflowInputError, match=r"indices \[0, 2\]"):
        merge_logits.run(shard_dirs=[str(tmp_path / "shard-0"), str(tmp_path / "shard-2")],
                         logits_dir=str(tmp_path / "merged"))
    assert not (tmp_path / "merged").exists()


def test_teacher_eval_without_cache_logits_writes_no_logits(tmp_path, prepared_data_dir, teacher_dir):
    metrics = teacher_eval.run(data_dir=str(prepared_data_dir), teacher=teacher_dir, logits_dir=str(tmp_path / "l"),
                               cache_logits=False)
    assert [path.name for path in (tmp_path / "l").iterdir()] == [teacher_eval.NOT_HERE]  # a note, no logits
    assert 0.0 <= metrics["accuracy"] <= 1.0
