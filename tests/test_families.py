"""Every encoder family as teacher and student: the from_teacher student takes exactly the teacher layers it names, and
the steps from data_prep to onnx_export run on a tiny teacher of each family (config:tiny-*), built from its config."""

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest
import torch
from transformers import AutoTokenizer

from kdflow.components.common import models
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import EXPORT_KINDS, OnnxReport
from kdflow.components.data_prep import task as data_prep
from kdflow.components.distill import task as distill
from kdflow.components.onnx_export import task as onnx_export
from kdflow.components.teacher_eval import task as teacher_eval
from kdflow.components.teacher_train import task as teacher_train

FAMILIES = ["tiny-bert", "tiny-distilbert", "tiny-roberta", "tiny-deberta-v2", "tiny-electra", "tiny-modernbert"]
# Where each family keeps its numbered layers (the base model's attribute path), and its attention-dropout field.
LAYERS = {"distilbert": "transformer.layer", "modernbert": "layers"}
ATTENTION_DROPOUT = {"distilbert": "attention_dropout", "modernbert": "attention_dropout"}
# The fused operators ONNX Runtime's optimizer must put in model.onnx of each family's student (onnx_export's
# FUSED_FAMILIES says what each fuses); a BERT teacher's student is a DistilBERT.
FUSED = {
    "tiny-bert": {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"},
    "tiny-distilbert": {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"},
    "tiny-roberta": {"Attention", "SkipLayerNormalization", "BiasGelu"},
    "tiny-deberta-v2": {"SkipLayerNormalization", "BiasGelu"},
    "tiny-electra": {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu"},
    "tiny-modernbert": {"SkipLayerNormalization", "Gelu"},
}
FUSED_OPERATORS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu",
                   "FastGelu", "Gelu")
# A BERT teacher's DistilBERT student: each student weight and the teacher weight it is made from (the DistilBERT
# paper's recipe, see models.student_from_teacher); {s} is a student layer, {t} the teacher layer it is made from.
DISTILBERT_FROM_BERT = {
    "distilbert.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
    "distilbert.embeddings.LayerNorm.{w}": "bert.embeddings.LayerNorm.{w}",
    "distilbert.transformer.layer.{s}.attention.q_lin.{w}": "bert.encoder.layer.{t}.attention.self.query.{w}",
    "distilbert.transformer.layer.{s}.attention.k_lin.{w}": "bert.encoder.layer.{t}.attention.self.key.{w}",
    "distilbert.transformer.layer.{s}.attention.v_lin.{w}": "bert.encoder.layer.{t}.attention.self.value.{w}",
    "distilbert.transformer.layer.{s}.attention.out_lin.{w}": "bert.encoder.layer.{t}.attention.output.dense.{w}",
    "distilbert.transformer.layer.{s}.sa_layer_norm.{w}": "bert.encoder.layer.{t}.attention.output.LayerNorm.{w}",
    "distilbert.transformer.layer.{s}.ffn.lin1.{w}": "bert.encoder.layer.{t}.intermediate.dense.{w}",
    "distilbert.transformer.layer.{s}.ffn.lin2.{w}": "bert.encoder.layer.{t}.output.dense.{w}",
    "distilbert.transformer.layer.{s}.output_layer_norm.{w}": "bert.encoder.layer.{t}.output.LayerNorm.{w}",
    "pre_classifier.{w}": "bert.pooler.dense.{w}",
    "classifier.{w}": "classifier.{w}",
}


def layer_list(model):
    base = model.base_model
    return base.get_submodule(LAYERS.get(model.config.model_type, "encoder.layer"))


def assert_made_from(student, teacher, num_layers: int) -> None:
    """Every weight of the from_teacher `student` equals the teacher weight it was made from, tensor for tensor:
    student layer j is teacher layer teacher_layer_indices(...)[j], everything else is the teacher's own."""
    chosen = models.teacher_layer_indices(teacher.config, num_layers)
    student_weights, teacher_weights = student.state_dict(), teacher.state_dict()
    if teacher.config.model_type == "bert":
        expected = {"distilbert.embeddings.position_embeddings.weight": (
            teacher_weights["bert.embeddings.position_embeddings.weight"]
            + teacher_weights["bert.embeddings.token_type_embeddings.weight"][0])}
        for target, origin in DISTILBERT_FROM_BERT.items():
            for s, t in enumerate(chosen):
                for w in ("weight", "bias"):
                    key = target.format(s=s, w=w)
                    if key in student_weights:
                        expected[key] = teacher_weights[origin.format(t=t, w=w)]
        assert set(expected) == set(student_weights)
    else:
        assert type(student) is type(teacher) and len(layer_list(student)) == num_layers
        prefix = next(name for name, module in student.named_modules() if module is layer_list(student))
        expected = {}
        for name in student_weights:
            if name.startswith(f"{prefix}."):
                layer, rest = name[len(prefix) + 1:].split(".", 1)
                expected[name] = teacher_weights[f"{prefix}.{chosen[int(layer)]}.{rest}"]
            else:  # outside the layers, under the same name: embeddings, DeBERTa's relative embeddings, the head
                expected[name] = teacher_weights[name]
    for name, value in student_weights.items():
        assert torch.equal(value, expected[name]), name


def tiny_teacher(family: str, vocab_size: int):
    torch.manual_seed(0)
    return models.load_classifier(f"config:{family}", 2, vocab_size=vocab_size).eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_from_teacher_student_takes_the_chosen_layers_and_every_other_weight(family, tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    teacher = tiny_teacher(family, len(tokenizer))
    num_layers = teacher.config.num_hidden_layers - 1  # 3 of 4 are layers 0, 1 and 3; 1 of 2 is layer 0
    student = models.student_from_teacher(teacher, num_layers, attention_dropout=0.1).eval()
    assert_made_from(student, teacher, num_layers)
    field = ATTENTION_DROPOUT.get(student.config.model_type, "attention_probs_dropout_prob")
    assert getattr(student.config, field) == 0.1 and student.config.num_hidden_layers == num_layers
    # The first layer is the teacher's first on the same embeddings: same hidden state, padding and all.
    batch = tokenizer(["the movie was good", "a dull and boring film , really"], padding=True, return_tensors="pt",
                      return_token_type_ids=False)
    with torch.no_grad():
        hidden = [model(**batch, output_hidden_states=True).hidden_states[1] for model in (student, teacher)]
    torch.testing.assert_close(*hidden, rtol=0, atol=1e-5)


def test_modernbert_student_layers_keep_the_attention_kind_of_the_teacher_layer_they_come_from(tokenizer_dir):
    teacher = tiny_teacher("tiny-modernbert", 40)  # global attention in layers 0 and 3: every third
    assert teacher.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    student = models.student_from_teacher(teacher, 3)  # from layers 0, 1, 3
    assert student.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert [layer.attn.sliding_window is None for layer in student.model.layers] == [True, False, True]


def test_roberta_position_limit_leaves_room_for_the_pad_offset():
    config = models.load_config("config:tiny-roberta", num_labels=2, vocab_size=40)
    assert models.position_limit(config) == 256  # 257 positions, numbered from pad_token_id + 1 = 1
    model = models.load_classifier("config:tiny-roberta", 2, vocab_size=40).eval()
    with torch.no_grad():
        model(input_ids=torch.full((1, 256), 7))
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, 257), 7))  # one token past the limit indexes past the table
    with pytest.raises(KdflowInputError, match="max_length=257 is above the teacher's position limit of 256 tokens"):
        models.check_max_length(config, 257, "teacher")
    roberta_base = models.load_config("config:tiny-roberta", num_labels=2)
    roberta_base.max_position_embeddings, roberta_base.pad_token_id = 514, 1
    assert models.position_limit(roberta_base) == 512


def test_from_teacher_refuses_a_teacher_without_numbered_layers_in_one_sentence(tmp_path, prepared_data_dir,
                                                                              tokenizer_dir, settings_for):
    """ALBERT shares one set of layer weights across its depth: there are no layers to choose from."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    AlbertForSequenceClassification(AlbertConfig(
        vocab_size=len(tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)).save_pretrained(str(tmp_path / "albert"))
    tokenizer.save_pretrained(str(tmp_path / "albert"))
    files = distill.Files(data=str(prepared_data_dir), teacher_logits="", student=str(tmp_path / "student"),
                          training_curves=str(tmp_path / "curves.html"))
    with pytest.raises(KdflowInputError) as refused:
        distill.run(settings_for(distill, teacher=str(tmp_path / "albert"), student_spec="from_teacher",
                                 distill_mode="online", processes=1), files)
    assert str(refused.value) == (
        "student=from_teacher takes the teacher's layers, but a 'albert' model holds no numbered layers "
        "(encoder.layer.N, transformer.layer.N or layers.N) to take: give the student as a checkpoint or config: "
        "specification.")
    assert not (tmp_path / "student").exists()


# The steps, in process, as kdflow bench quality runs them: data prepared once (the WordPiece tokenizer does not
# depend on the teacher), a teacher per family trained and evaluated once.
STEP_SETTINGS = {
    "data_prep": dict(source="synthetic", tokenizer="wordpiece", max_length=128, max_train_samples=192,
                      max_eval_samples=64, unlabeled_source=""),
    "teacher_train": dict(epochs=1.0, batch_size=32, learning_rate=1e-3, checkpoint_steps=0),
    "distill": dict(student_spec="from_teacher", student_layers=2, epochs=1.0, batch_size=32, learning_rate=1e-3,
                    checkpoint_steps=0, processes=1),
}
# What distill's online mode adds: the teacher in the loop, and the intermediate terms that need its hidden states
# and attention maps.
ONLINE = dict(distill_mode="online", hidden_mse_weight=1.0, attention_kl_weight=1.0)


@pytest.fixture(scope="module")
def family_data(tmp_path_factory, settings_for):
    folder = tmp_path_factory.mktemp("family-data")
    data_prep.run(settings_for(data_prep, **STEP_SETTINGS["data_prep"]),
                  data_prep.Files(data=str(folder / "data"), report=str(folder / "report.md")))
    return folder / "data"


@pytest.fixture(scope="module")
def trained_teachers(tmp_path_factory, settings_for, family_data):
    """The family's teacher trained from its tiny config and its cached logits, each made once for the module."""
    made = {}

    def teacher(family: str) -> tuple[Path, Path]:
        if family not in made:
            folder = tmp_path_factory.mktemp(family)
            teacher_train.run(settings_for(teacher_train, teacher=f"config:{family}", **STEP_SETTINGS["teacher_train"]),
                              teacher_train.Files(data=str(family_data), teacher_model=str(folder / "teacher"),
                                                  training_curves=str(folder / "teacher-curves.html")))
            teacher_eval.run(settings_for(teacher_eval, teacher=str(folder / "teacher"), cache_logits=True),
                             teacher_eval.Files(data=str(family_data), teacher_logits=str(folder / "logits"),
                                                teacher_metrics=str(folder / "teacher-metrics.json"),
                                                teacher_confusion=str(folder / "teacher-confusion.json")))
            made[family] = folder / "teacher", folder / "logits"
        return made[family]

    return teacher


def slow_unless(family: str, mode: str, fast: tuple[tuple[str, str], ...]):
    return pytest.param(family, mode, marks=[] if (family, mode) in fast else pytest.mark.slow, id=f"{family}-{mode}")


@pytest.mark.parametrize("family, mode", [
    slow_unless(family, mode, fast=(("tiny-bert", "cached"), ("tiny-modernbert", "online")))
    for family in FAMILIES for mode in ("cached", "online")
])
def test_family_distills_and_exports_with_parity(family, mode, tmp_path, settings_for, family_data,
                                                  trained_teachers):
    teacher_dir, logits_dir = trained_teachers(family)
    teacher = models.load_classifier(str(teacher_dir), 2, fine_tuned=True)
    assert teacher.config.model_type == family.removeprefix("tiny-")
    # The student distill starts from: the trained teacher's layers 0 and 2, and all its other weights.
    assert_made_from(models.student_from_teacher(teacher, 2), teacher, 2)

    online = ONLINE if mode == "online" else {}
    distill.run(settings_for(distill, teacher=str(teacher_dir), **{**STEP_SETTINGS["distill"], **online}),
                distill.Files(data=str(family_data), teacher_logits=str(logits_dir), student=str(tmp_path / "student"),
                              training_curves=str(tmp_path / "student-curves.html")))
    student = json.loads((tmp_path / "student" / "config.json").read_text())
    assert student["model_type"] == ("distilbert" if family == "tiny-bert" else teacher.config.model_type)
    assert student.get("num_hidden_layers", student.get("n_layers")) == 2
    # The data's class names, as data_prep read them, in both models: what a pipeline() on them answers with.
    assert student["id2label"] == {"0": "negative", "1": "positive"}
    assert teacher.config.id2label == {0: "negative", 1: "positive"}
    assert student["label2id"] == {"negative": 0, "positive": 1}
    if online:
        logged = next(entry for entry in json.loads((tmp_path / "student" / "training_log.json").read_text())
                      if "loss" in entry)
        assert {"hidden_mse_loss", "attention_kl_loss"} <= set(logged)
        assert "tie_last_hidden_states" not in student  # set for the matcher while training, not saved

    onnx_export.run(settings_for(onnx_export, max_eval_samples=64),
                    onnx_export.Files(data=str(family_data), student=str(tmp_path / "student"),
                                      onnx_model=str(tmp_path / "onnx"), onnx_metrics=str(tmp_path / "onnx.json")))
    report = OnnxReport.read_folder(tmp_path / "onnx")
    assert report.exports["fp32"].max_abs_diff <= 1e-4 and report.parity_rows == 64
    for kind in EXPORT_KINDS:
        assert (tmp_path / "onnx" / kind.file).stat().st_size > 0
        assert 0.0 <= report.exports[kind.name].accuracy <= 1.0
    operators = Counter(node.op_type for node in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.node)
    assert FUSED[family] <= {name for name in FUSED_OPERATORS if operators[name]}
