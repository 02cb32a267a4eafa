"""The Trainer subclass, the student initialisation and the distill step, on tiny models built from configs."""

import json

import pytest
import torch
from transformers import (
    AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
)

from kdflow.components.common import models
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.training import pad_batch, precision_flags
from kdflow.components.distill import task
from kdflow.components.distill.trainer import DistillationArguments, DistillationCollator, DistillationTrainer


def tiny_bert(vocab_size, layers=4, seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )).eval()


def tiny_distilbert(vocab_size, seed=0, positions=128):
    torch.manual_seed(seed)
    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=positions,
        dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0,
    ))


def rows_with_logits(prepared_data_dir, count=8):
    data = load_prepared(str(prepared_data_dir))
    split = data.splits["train"].select(range(count))
    logits = torch.randn(count, 2, generator=torch.Generator().manual_seed(1)).tolist()
    return data, split.add_column("teacher_logits", logits)


def one_step(tmp_path, data, split, batch_size, accumulation):
    """Trains a fresh student one optimizer step; returns its parameters and the logged loss."""
    args = DistillationArguments(
        output_dir=str(tmp_path / f"ga{accumulation}"), per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, max_steps=1, learning_rate=0.5, optim="sgd", weight_decay=0.0,
        lr_scheduler_type="constant", logging_steps=1, report_to="none", use_cpu=True, save_strategy="no",
        remove_unused_columns=False, disable_tqdm=True, temperature=2.0, alpha=0.5,
    )
    student = tiny_distilbert(len(data.tokenizer))
    trainer = DistillationTrainer(model=student, args=args, train_dataset=split,
                                  data_collator=DistillationCollator(data.tokenizer, data.max_length))
    trainer.train()
    loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    return torch.nn.utils.parameters_to_vector(student.parameters()).detach(), loss


def test_gradient_accumulation_2_equals_accumulation_1_on_the_same_samples(tmp_path, prepared_data_dir):
    data, split = rows_with_logits(prepared_data_dir, count=8)
    params_1, loss_1 = one_step(tmp_path, data, split, batch_size=8, accumulation=1)
    params_2, loss_2 = one_step(tmp_path, data, split, batch_size=4, accumulation=2)
    assert loss_2 == pytest.approx(loss_1, rel=1e-4)
    assert torch.allclose(params_1, params_2, atol=1e-5)


@pytest.mark.parametrize("max_length", [30, 100])
def test_batches_pad_to_a_multiple_of_64_within_the_data_max_length(prepared_data_dir, max_length):
    data = load_prepared(str(prepared_data_dir))
    rows = [{"input_ids": [5] * length, "attention_mask": [1] * length, "label": 0} for length in (3, 20)]
    batch = pad_batch(data.tokenizer, rows, max_length)
    assert batch["input_ids"].shape == (2, min(64, max_length))
    assert batch["attention_mask"].sum(dim=1).tolist() == [3, 20]  # the padding is masked


def test_cached_logits_give_the_same_loss_as_the_online_teacher(tmp_path, prepared_data_dir):
    data = load_prepared(str(prepared_data_dir))
    teacher = tiny_bert(len(data.tokenizer))
    split = data.splits["train"].select(range(6))
    with torch.no_grad():
        batch = DistillationCollator(data.tokenizer, data.max_length)([split[i] for i in range(6)])
        cached = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    args = DistillationArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", temperature=2.0, alpha=0.5)
    student = tiny_distilbert(len(data.tokenizer)).eval()
    online = DistillationTrainer(model=student, args=args, teacher=teacher)
    offline = DistillationTrainer(model=student, args=args)
    online_loss = online.compute_loss(student, dict(batch))
    offline_loss = offline.compute_loss(student, {**batch, "teacher_logits": cached})
    assert online_loss.item() == pytest.approx(offline_loss.item(), rel=1e-6)


def test_from_teacher_copies_every_other_layer_and_folds_token_types_into_positions():
    teacher = tiny_bert(40, layers=4)
    student = models.student_from_teacher(teacher)
    assert student.config.n_layers == 2
    for student_index, teacher_index in enumerate([0, 2]):
        source, target = teacher.bert.encoder.layer[teacher_index], student.distilbert.transformer.layer[student_index]
        assert torch.equal(target.attention.q_lin.weight, source.attention.self.query.weight)
        assert torch.equal(target.attention.v_lin.bias, source.attention.self.value.bias)
        assert torch.equal(target.ffn.lin2.weight, source.output.dense.weight)
        assert torch.equal(target.output_layer_norm.weight, source.output.LayerNorm.weight)
    embeddings = teacher.bert.embeddings
    assert torch.equal(student.distilbert.embeddings.position_embeddings.weight,
                       embeddings.position_embeddings.weight + embeddings.token_type_embeddings.weight[0])
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_from_teacher_with_all_layers_computes_the_teachers_hidden_states():
    # Copying every layer must reproduce BERT's encoder exactly: the mapping is complete and in the right places.
    teacher = tiny_bert(40, layers=2)
    student = models.student_from_teacher(teacher, num_layers=2).eval()
    input_ids = torch.randint(5, 40, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    expected = teacher.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    got = student.distilbert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    assert torch.allclose(got[attention_mask.bool()], expected[attention_mask.bool()], atol=1e-5)


@pytest.mark.parametrize("temperature, alpha, needle", [(0.0, 0.5, "temperature"), (-1.0, 0.5, "temperature"),
                                                        (2.0, 1.5, "alpha"), (2.0, -0.1, "alpha")])
def test_bad_hyperparameters_are_refused(tmp_path, temperature, alpha, needle):
    with pytest.raises(KdflowInputError, match=needle):
        DistillationArguments(output_dir=str(tmp_path), temperature=temperature, alpha=alpha)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU rules of precision=auto")
def test_auto_precision_on_a_cpu_is_bf16_only_where_oneDNN_has_bf16_kernels():
    # Emulated bf16 on an AVX2-only CPU trained MiniLM-L6 25x slower than fp32: auto must not pick it there.
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert precision_flags("auto") == {"bf16": native_bf16, "fp16": False, "use_cpu": True}
    assert precision_flags("fp32") == {"bf16": False, "fp16": False, "use_cpu": True}
    with pytest.raises(KdflowInputError, match="precision=fp16 needs a GPU"):
        precision_flags("fp16")


def save_teacher(folder, tokenizer_dir, layers=4):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    teacher = tiny_bert(len(tokenizer), layers=layers)
    teacher.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def logits_for(settings_for, teacher_dir, prepared_data_dir, folder):
    from kdflow.components.teacher_eval import task as teacher_eval

    teacher_eval.run(settings_for(teacher_eval, teacher=teacher_dir, cache_logits=True),
                     teacher_eval.Files(data=str(prepared_data_dir), teacher_logits=str(folder),
                                        teacher_metrics=f"{folder}-metrics.json",
                                        teacher_confusion=f"{folder}-confusion.json"))
    return str(folder)


def run_distill(settings_for, data, teacher, student, output, logits="", **settings):
    """The distill step with the pipeline's defaults but for `settings`, its student in `output`."""
    files = task.Files(data=str(data), teacher_logits=logits, student=str(output),
                       training_curves=f"{output}-curves.html")
    return task.run(settings_for(task, teacher=teacher, student_spec=student, processes=1, **settings), files)


def test_distill_step_writes_a_student_with_its_log(tmp_path, prepared_data_dir, tokenizer_dir, settings_for):
    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    logits_dir = logits_for(settings_for, teacher_dir, prepared_data_dir, tmp_path / "logits")
    figures = run_distill(settings_for, prepared_data_dir, teacher_dir, "from_teacher", tmp_path / "student",
                          logits_dir, epochs=1, batch_size=16, learning_rate=1e-3, student_attention_dropout=0.1)
    assert (tmp_path / "student" / "model.safetensors").exists()
    assert json.loads((tmp_path / "student" / "config.json").read_text())["attention_dropout"] == 0.1
    assert json.loads((tmp_path / "student" / "distillation.json").read_text())["student_attention_dropout"] == 0.1
    assert (tmp_path / "student" / "tokenizer_config.json").exists()
    log = json.loads((tmp_path / "student" / "training_log.json").read_text())
    losses = [entry for entry in log if "loss" in entry]
    assert losses and {"hard_loss", "soft_loss"} <= set(losses[0])
    assert "data:image/png;base64," in (tmp_path / "student-curves.html").read_text()
    assert figures["eval_loss"] > 0


def test_cached_mode_refuses_a_student_with_another_vocabulary(tmp_path, prepared_data_dir, tokenizer_dir,
                                                               settings_for):
    from transformers import BertTokenizer

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    logits_dir = logits_for(settings_for, teacher_dir, prepared_data_dir, tmp_path / "logits")
    other_tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "movie"])})
    student = tiny_distilbert(len(other_tokenizer))
    student.save_pretrained(str(tmp_path / "other"))
    other_tokenizer.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(KdflowInputError, match="distill_mode=online"):
        run_distill(settings_for, prepared_data_dir, teacher_dir, str(tmp_path / "other"), tmp_path / "student",
                    logits_dir, epochs=1)
    assert not (tmp_path / "student").exists()


def test_online_mode_trains_a_student_with_its_own_tokenizer(tmp_path, prepared_data_dir, tokenizer_dir, settings_for):
    from transformers import BertTokenizer

    from conftest import WORDS

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    # The same words in another order: a different vocabulary, so the student needs its own token ids.
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *reversed(WORDS)]
    student_tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    tiny_distilbert(len(student_tokenizer)).save_pretrained(str(tmp_path / "base"))
    student_tokenizer.save_pretrained(str(tmp_path / "base"))
    run_distill(settings_for, prepared_data_dir, teacher_dir, str(tmp_path / "base"), tmp_path / "student",
                distill_mode="online", epochs=1, batch_size=16)
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "student"))
    assert saved.get_vocab() == student_tokenizer.get_vocab()


def test_max_length_above_the_students_position_limit_is_refused(tmp_path, prepared_data_dir, tokenizer_dir,
                                                                  settings_for):
    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    # The prepared data was cut at 64 tokens.
    student = tiny_distilbert(len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), positions=32)
    student.save_pretrained(str(tmp_path / "short"))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(tmp_path / "short"))
    with pytest.raises(KdflowInputError, match="max_length"):
        run_distill(settings_for, prepared_data_dir, teacher_dir, str(tmp_path / "short"), tmp_path / "student",
                    distill_mode="online")


def test_non_finite_teacher_logits_stop_distillation_at_the_first_step(tmp_path, prepared_data_dir, tokenizer_dir,
                                                                       settings_for):
    import datasets

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    logits = datasets.load_from_disk(logits_for(settings_for, teacher_dir, prepared_data_dir, tmp_path / "logits"))
    # What a teacher that overflowed in fp16 would have cached: every soft target NaN, so the first loss is NaN.
    broken = logits.map(lambda row: {"teacher_logits": [float("nan")] * len(row["teacher_logits"])})
    broken.save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(KdflowInputError, match=r"loss became nan at step 1 of 12.*lower learning_rate"):
        run_distill(settings_for, prepared_data_dir, teacher_dir, "from_teacher", tmp_path / "student",
                    str(tmp_path / "broken"), epochs=2, batch_size=16, precision="fp32")
    assert not (tmp_path / "student").exists()


def test_the_same_seed_gives_the_same_student_and_another_seed_another(tmp_path, prepared_data_dir, tokenizer_dir,
                                                                       settings_for):
    from safetensors.torch import load_file

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    logits_dir = logits_for(settings_for, teacher_dir, prepared_data_dir, tmp_path / "logits")

    def distill(name, seed):
        # Dropout on, so that the seed matters beyond the data order.
        figures = run_distill(settings_for, prepared_data_dir, teacher_dir, "config:tiny-distilbert", tmp_path / name,
                              logits_dir, epochs=1, batch_size=16, learning_rate=1e-3, precision="fp32", seed=seed)
        return figures, load_file(str(tmp_path / name / "model.safetensors"))

    (first, weights), (again, weights_again), (other, other_weights) = (
        distill("first", 3), distill("again", 3), distill("other", 4))
    assert first["eval_loss"] == again["eval_loss"] and first["train_loss"] == again["train_loss"]
    assert all(torch.equal(weights[name], weights_again[name]) for name in weights)
    assert other["eval_loss"] != first["eval_loss"]
    assert not all(torch.equal(weights[name], other_weights[name]) for name in weights)
    assert json.loads((tmp_path / "first" / "distillation.json").read_text())["seed"] == 3


# Intermediate-layer terms and unlabeled transfer data in the distill step.

def prepared_with_unlabeled(prepared_data_dir, folder, rows=24):
    """A copy of the prepared data with an unlabeled split: test rows with their labels taken away."""
    import datasets

    from kdflow.components.common.data import UNLABELED, UNLABELED_SPLIT, save_prepared

    data = load_prepared(str(prepared_data_dir))
    unlabeled = data.splits["test"].select(range(rows)).map(lambda row: {"label": UNLABELED})
    unlabeled = unlabeled.cast(data.splits["train"].features)
    save_prepared(str(folder), datasets.DatasetDict({**data.splits, UNLABELED_SPLIT: unlabeled}), data.tokenizer,
                  data.info)
    return folder


def narrow_student_config(folder, tokenizer_dir):
    """config:PATH of a DistilBERT narrower than the tiny teacher (16 wide against 32), with fewer heads."""
    folder.mkdir()
    config = DistilBertConfig(vocab_size=len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), dim=16, n_layers=2,
                              n_heads=1, hidden_dim=32, max_position_embeddings=128)
    (folder / "config.json").write_text(config.to_json_string())
    return f"config:{folder / 'config.json'}"


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_unlabeled_rows_train_the_student_and_are_left_out_of_a_hard_label_training(
        tmp_path, prepared_data_dir, tokenizer_dir, settings_for, mode):
    data = prepared_with_unlabeled(prepared_data_dir, tmp_path / "data")
    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    logits_dir = logits_for(settings_for, teacher_dir, data, tmp_path / "logits")
    labeled = len(load_prepared(str(data)).splits["train"])
    common = dict(distill_mode=mode, epochs=1, batch_size=16)
    distilled = run_distill(settings_for, data, teacher_dir, "from_teacher", tmp_path / "student", logits_dir, **common)
    baseline = run_distill(settings_for, data, teacher_dir, "from_teacher", tmp_path / "baseline", logits_dir,
                           alpha=1.0, tracked_as="baseline", **common)
    assert (distilled["labeled_rows"], distilled["unlabeled_rows"]) == (labeled, 24)
    assert (baseline["labeled_rows"], baseline["unlabeled_rows"]) == (labeled, 0)
    assert json.loads((tmp_path / "student" / "distillation.json").read_text())["rows"] == {
        "labeled": labeled, "unlabeled": 24}
    # One epoch over labeled and unlabeled rows takes more steps than one over the labeled rows.
    steps = [json.loads((tmp_path / name / "training_log.json").read_text())[-1]["step"]
             for name in ("student", "baseline")]
    assert steps[0] > steps[1]


def test_intermediate_terms_train_a_narrower_student_through_projections_that_are_not_exported(
        tmp_path, prepared_data_dir, tokenizer_dir, settings_for):
    from safetensors.torch import load_file

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    student = narrow_student_config(tmp_path / "narrow", tokenizer_dir)
    run_distill(settings_for, prepared_data_dir, teacher_dir, student, tmp_path / "student", distill_mode="online",
                epochs=1, batch_size=16, hidden_cosine_weight=1.0, hidden_mse_weight=1.0, embedding_mse_weight=1.0,
                attention_kl_weight=1.0, layer_map="1:2,2:4")
    log = json.loads((tmp_path / "student" / "training_log.json").read_text())
    logged = next(entry for entry in log if "loss" in entry)
    assert {"hard_loss", "soft_loss", "hidden_cosine_loss", "hidden_mse_loss", "embedding_mse_loss",
            "attention_kl_loss"} <= set(logged)
    curves = (tmp_path / "student-curves.html").read_text()
    assert "attention_kl_loss" in curves
    weights = load_file(str(tmp_path / "student" / "model.safetensors"))
    assert not [name for name in weights if "matcher" in name or "projection" in name]
    # The saved student loads as a plain DistilBERT with nothing missing or left over.
    _, info = DistilBertForSequenceClassification.from_pretrained(str(tmp_path / "student"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.parametrize("settings, needle", [
    (dict(layer_map="1:2,3:4"), "names student layer 3, but the student has 2 layers: use layers 1 to 2"),
    (dict(layer_map="1:9"), "names teacher layer 9, but the teacher has 4 layers"),
    (dict(hidden_projection=False), "only a projection can match: set hidden_projection=true"),
])
def test_intermediate_terms_the_models_cannot_meet_are_refused_before_training(
        tmp_path, prepared_data_dir, tokenizer_dir, settings_for, settings, needle):
    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    student = narrow_student_config(tmp_path / "narrow", tokenizer_dir)
    with pytest.raises(KdflowInputError, match=needle):
        run_distill(settings_for, prepared_data_dir, teacher_dir, student, tmp_path / "student", distill_mode="online",
                    hidden_mse_weight=1.0, **settings)
    assert not (tmp_path / "student").exists()


@pytest.mark.parametrize("settings, needle", [
    (dict(hidden_mse_weight=1.0), "hidden_mse_weight=1.0 needs the teacher's hidden states, which distill_mode=cached "
                                  "does not keep: set distill_mode=online"),
    (dict(attention_kl_weight=-0.5, distill_mode="online"), "attention_kl_weight=-0.5 is negative"),
    (dict(layers_from="config:tiny-bert", student_spec="config:tiny-distilbert"),
     "layers_from='config:tiny-bert' applies to student=from_teacher only"),
])
def test_intermediate_settings_that_cannot_work_are_refused_on_construction(settings_for, settings, needle):
    with pytest.raises(KdflowInputError, match=needle):
        settings_for(task, teacher="t", processes=1, **{"student_spec": "from_teacher", **settings})


def test_a_from_teacher_student_made_from_other_layers_takes_them_and_a_new_head(
        tmp_path, prepared_data_dir, tokenizer_dir, settings_for):
    """The pretrained baseline: a from_teacher student made from `layers_from`'s layers, not the teacher's."""
    from safetensors.torch import load_file

    teacher_dir = save_teacher(tmp_path / "teacher", tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    pretrained = tiny_bert(len(tokenizer), seed=7)
    pretrained.save_pretrained(str(tmp_path / "pretrained"))
    tokenizer.save_pretrained(str(tmp_path / "pretrained"))
    logits_dir = logits_for(settings_for, teacher_dir, prepared_data_dir, tmp_path / "logits")
    run_distill(settings_for, prepared_data_dir, teacher_dir, "from_teacher", tmp_path / "student", logits_dir,
                alpha=1.0, epochs=1, learning_rate=1e-12, layers_from=str(tmp_path / "pretrained"), student_layers=2)
    weights = load_file(str(tmp_path / "student" / "model.safetensors"))
    word_embeddings = weights["distilbert.embeddings.word_embeddings.weight"]
    assert torch.allclose(word_embeddings, pretrained.bert.embeddings.word_embeddings.weight, atol=1e-6)
    teacher = BertForSequenceClassification.from_pretrained(teacher_dir)
    assert not torch.allclose(word_embeddings, teacher.bert.embeddings.word_embeddings.weight, atol=1e-3)
