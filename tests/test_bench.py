"""kdflow bench train and infer on a tiny teacher and synthetic reviews: what they measure, and what they refuse."""

import json

import datasets
import pytest
import torch
from conftest import build_tokenizer, make_rows
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from kdflow.components.common import models, text_model
from kdflow.components.distill.losses import distillation_loss
from kdflow.pipelines import cli
from kdflow.pipelines.bench import recipe
from kdflow.pipelines.bench import tokenizer as tokenizer_bench


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reviews")
    for split, count, seed in (("train", 120, 0), ("test", 60, 1)):
        datasets.Dataset.from_dict(make_rows(count, seed)).to_parquet(str(folder / f"{split}.parquet"))
    return folder


@pytest.fixture(scope="module")
def bench_train_result(tmp_path_factory, teacher_dir, data_dir):
    output = tmp_path_factory.mktemp("bench") / "train"
    assert cli.main(["bench", "train", "--teacher", str(teacher_dir), "--data", str(data_dir), "--output", str(output),
                     "--rows", "48", "--eval-rows", "40", "--max-length", "64", "--epochs", "1", "--repeats", "2",
                     "--student-layers", "1", "--set", "batch_size=16"]) == 0
    return output, json.loads((output / "bench_train.json").read_text())


@pytest.mark.slow
def test_bench_train_reports_both_sides_from_their_own_processes(bench_train_result):
    output, result = bench_train_result
    recipe_figures, kdflow_figures, ratios = result["recipe"], result["kdflow"], result["ratios"]
    assert len(result["repeats"]) == 2
    # The ratios are those of the medians, the medians those of the repeats.
    assert ratios["end_to_end_speedup"] == pytest.approx(recipe_figures["end_to_end_s"] / kdflow_figures["end_to_end_s"])
    assert ratios["peak_memory_ratio"] == pytest.approx(kdflow_figures["peak_rss_mb"] / recipe_figures["peak_rss_mb"])
    for side in ("recipe", "kdflow"):
        values = sorted(run[side]["train_samples_per_s"] for run in result["repeats"])
        assert result[side]["train_samples_per_s"] == pytest.approx(sum(values) / 2)
    # kdflow's end-to-end time is its three stages, teacher logits included.
    assert set(kdflow_figures["stages_s"]) == {"prep", "logits", "distill"}
    for run in result["repeats"]:
        assert run["kdflow"]["end_to_end_s"] == pytest.approx(sum(run["kdflow"]["stages_s"].values()))
    # Each stage's peak memory is a process's own: a Python with torch loaded is over 100 MB.
    assert recipe_figures["peak_rss_mb"] > 100 and kdflow_figures["peak_rss_mb"] > 100
    assert recipe_figures["extrapolated"] is False
    assert 0 <= result["accuracy"]["recipe"] <= 1 and 0 <= result["accuracy"]["kdflow"] <= 1
    assert result["settings"]["distill"] == {"batch_size": 16}


@pytest.mark.slow
def test_bench_train_trains_both_sides_on_the_same_number_of_rows(bench_train_result):
    output, _ = bench_train_result
    from kdflow.components.common.data import load_prepared

    data = load_prepared(str(output / "kdflow" / "data"))
    assert len(data.splits["train"]) == 48 and len(data.splits["test"]) == 40
    for side in ("recipe", "kdflow"):
        assert (output / side / "student" / "config.json").is_file()
    # The distill step ran with the batch size given by --set: 48 rows, 1 epoch, batch 16 is 3 steps.
    log = json.loads((output / "kdflow" / "student" / "training_log.json").read_text())
    assert log[-1]["step"] == 3


def test_recipe_loss_is_the_objective_kdflow_distills_with(teacher_dir):
    """The yardstick trains on the same objective: 0.5 CE + 0.5 T^2 KL, as distill's loss."""
    teacher = models.load_classifier(str(teacher_dir), 2, fine_tuned=True)
    student = models.student_from_teacher(teacher, 1, recipe.ATTENTION_DROPOUT).eval()
    batch = {"input_ids": torch.randint(5, 30, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 1, 0])}
    trainer = recipe.RecipeDistillationTrainer.__new__(recipe.RecipeDistillationTrainer)
    trainer.teacher, trainer.temperature, trainer.alpha = teacher.eval(), 2.0, 0.5
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        expected = distillation_loss(student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                     teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                     batch["labels"], 2.0, 0.5).total
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bench_tokenizer_compares_every_test_text_and_says_where_they_part(tmp_path, capsys, teacher_dir, data_dir):
    assert cli.main(["bench", "tokenizer", "--tokenizer", str(teacher_dir), "--data", str(data_dir), "--max-length",
                     "16", "--output", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench_tokenizer.json").read_text())
    assert (result["texts"], result["identical"], result["differences"]) == (60, 60, [])
    assert "60 of 60 test texts have identical token ids (100.0000%) at max_length 16." in capsys.readouterr().out
    # A difference is shown as tokens, from where the ids part: here a conversion that truncates at 8, not 16.
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    shorter = text_model.compile_model(text_model.convert_tokenizer(tokenizer, 8))
    text = " ".join(["good"] * 20)
    shown = tokenizer_bench.difference(tokenizer, shorter, text, 3, 16)
    assert (shown["row"], shown["position"], shown["lengths"]) == (3, 7, [16, 8])
    assert (shown["hugging_face"][0], shown["converted"]) == ("good", ["[SEP]"])


def test_bench_infer_serves_teacher_student_and_onnx_on_the_same_rows(tmp_path, teacher_dir, data_dir):
    student_dir = tmp_path / "student"
    teacher = models.load_classifier(str(teacher_dir), 2, fine_tuned=True)
    models.student_from_teacher(teacher, 1).save_pretrained(str(student_dir))
    build_tokenizer(student_dir)
    output = tmp_path / "infer"
    assert cli.main(["bench", "infer", "--teacher", str(teacher_dir), "--student", str(student_dir), "--data",
                     str(data_dir), "--output", str(output), "--rows", "40", "--batch-1-rows", "4", "--max-length",
                     "64", "--repeats", "1"]) == 0
    result = json.loads((output / "bench_infer.json").read_text())
    servings = result["servings"]
    assert set(servings) == {"teacher_pytorch", "student_pytorch", "student_onnx_fp32", "student_onnx_int8",
                             "student_onnx_int8_qdq"}
    assert {name: figures["runtime"] for name, figures in servings.items()} == {
        "teacher_pytorch": "PyTorch", "student_pytorch": "PyTorch", "student_onnx_fp32": "ONNX Runtime",
        "student_onnx_int8": "ONNX Runtime", "student_onnx_int8_qdq": "OpenVINO"}
    # The fp32 export predicts what PyTorch does on every row.
    assert servings["student_onnx_fp32"]["accuracy"] == servings["student_pytorch"]["accuracy"]
    for name in ("student_onnx_int8", "student_onnx_int8_qdq"):
        assert result["ratios"][f"{name}_vs_teacher_batch_32"] == pytest.approx(
            servings[name]["batch_32_rows_per_s"] / servings["teacher_pytorch"]["batch_32_rows_per_s"])
        assert result["int8_minus_fp32_accuracy_points"][name] == pytest.approx(
            100 * (servings[name]["accuracy"] - servings["student_pytorch"]["accuracy"]))
    assert all(figures["batch_1_rows_per_s"] > 0 and figures["size_mb"] > 0 for figures in servings.values())
    assert {"model.onnx", "model.int8.onnx", "model.int8.qdq.onnx"} <= {path.name for path in output.iterdir()}


@pytest.mark.parametrize("sizes, sentence", [
    (["--rows", "60", "--batch-1-rows", "4"], "--rows 60 leaves none of the 60 rows"),
    (["--rows", "8"], "--batch-1-rows 64 is more than --rows 8: lower it."),
])
def test_bench_infer_refuses_bad_sizes_in_one_sentence(tmp_path, capsys, teacher_dir, data_dir, sizes, sentence):
    assert cli.main(["bench", "infer", "--teacher", str(teacher_dir), "--student", str(teacher_dir), "--data",
                     str(data_dir), "--output", str(tmp_path / "infer"), *sizes]) == 2
    error = capsys.readouterr().err
    assert sentence in error and error.count("\n") == 1
    assert not (tmp_path / "infer").exists()


@pytest.mark.parametrize("arguments, sentence", [
    (["--teacher", "{tmp}"], "--teacher {tmp} is not a model folder with config.json"),
    (["--data", "{tmp}"], "has no train.parquet"),
    (["--rows", "1000"], "fewer than the 1032 asked for: lower --rows or --eval-rows"),
    (["--set", "warmup=3"], "--set 'warmup=3' must be NAME=VALUE with NAME a distill setting: teacher, "),
    (["--set", "batch_size=eight"], "'eight' is not a valid batch_size"),
])
def test_bench_train_refuses_bad_input_in_one_sentence(tmp_path, capsys, teacher_dir, data_dir, arguments, sentence):
    given = {"--teacher": str(teacher_dir), "--data": str(data_dir), "--output": str(tmp_path / "out")}
    extra = [part.format(tmp=tmp_path) for part in arguments]
    for flag, value in zip(extra[::2], extra[1::2]):
        given[flag] = value
    assert cli.main(["bench", "train", *[part for pair in given.items() for part in pair]]) == 2
    error = capsys.readouterr().err
    assert sentence.format(tmp=tmp_path) in error and error.count("\n") == 1
    assert not (tmp_path / "out" / "bench_train.json").exists()


def test_gpu_check_script_calls_commands_that_exist(monkeypatch, tmp_path):
    """The GPU check cannot run here (no GPU): its command lines must at least be ones kdflow accepts.

    Each step's main() parses its line; its run() is replaced by a recorder, so nothing is trained.
    """
    import importlib
    import re
    import shlex
    from pathlib import Path

    script = (Path(cli.__file__).parent / "bench" / "gpu_check.sh").read_text().replace("\\\n", " ")
    # The script's shell variables that must expand to numbers or to folders that exist.
    numbers = {"recipe_steps": "300", "teacher": str(tmp_path), "data": str(tmp_path)}
    commands = [shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda match: numbers.get(match[1], match[1]), line))
                for line in script.splitlines() if line.strip().startswith(("kdflow ", "python -m "))]
    assert [command[0] for command in commands] == ["python", "python", "kdflow"]
    for command in commands:
        if command[0] == "kdflow":
            args = cli.build_parser().parse_args(command[1:])
            assert args.command is cli.bench_train_command and args.epochs == 1 and args.recipe_max_steps
        else:
            module = importlib.import_module(command[2])
            calls = []
            monkeypatch.setattr(module, "run", lambda settings, files: calls.append(settings) or (module.Result and module.Result()))
            module.main(command[3:])
            assert calls[0].max_length == 512 if "data_prep" in command[2] else calls[0].epochs == 1.0


@pytest.fixture(scope="module")
def quality_data(tmp_path_factory):
    """Synthetic reviews as a dataset folder with train, test and unsup files."""
    import pandas as pd

    from kdflow.components.data_prep import synthetic

    folder = tmp_path_factory.mktemp("quality-data")
    for split, rows, seed in (("train", 400, 1), ("test", 120, 2)):
        pd.DataFrame(synthetic.generate(rows, seed)).to_parquet(folder / f"{split}.parquet")
    pd.DataFrame({"text": synthetic.generate(300, 3)["text"]}).to_parquet(folder / "unsup.parquet")
    return folder


@pytest.mark.slow
def test_bench_quality_trains_every_configuration_per_seed_and_resumes(tmp_path, quality_data, capsys):
    from kdflow.pipelines.bench.quality import CONFIGURATIONS

    command = ["bench", "quality", "--data", str(quality_data), "--output", str(tmp_path / "bench"), "--preset",
               "smoke", "--rows", "200", "--eval-rows", "100", "--seeds", "2", "--unlabeled-rows", "150",
               "--set", "epochs=1", "--set", "teacher_epochs=2"]
    assert cli.main(command) == 0
    result = json.loads((tmp_path / "bench" / "bench_quality.json").read_text())
    trainings = result["trainings"]
    assert sorted((t["configuration"], t["seed"]) for t in trainings) == sorted(
        (configuration.name, seed) for configuration in CONFIGURATIONS for seed in (42, 43))
    for training in trainings:
        unlabeled = next(c for c in CONFIGURATIONS if c.name == training["configuration"]).unlabeled
        assert training["labeled_rows"] == 200 and training["unlabeled_rows"] == (150 if unlabeled else 0)
        assert 0 <= training["accuracy"] <= 1
    for row in result["table"]:
        accuracies = [t["accuracy"] for t in trainings if t["configuration"] == row["configuration"]]
        assert row["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
        assert row["retention"] == pytest.approx(row["accuracy_mean"] / result["teacher"]["accuracy"])
    table = (tmp_path / "bench" / "bench_quality.md").read_text()
    assert all(configuration.name in table for configuration in CONFIGURATIONS)
    printed = capsys.readouterr().out
    assert printed.count("kdflow bench quality: [") == 12
    # Started again with fewer seeds and one configuration, it trains nothing (every training it needs is on record)
    # and tables every configuration on record for the first seed.
    command[command.index("--seeds") + 1] = "1"
    assert cli.main([*command, "--configurations", "logits"]) == 0
    printed = capsys.readouterr().out
    assert "training" not in printed and printed.count("kdflow bench quality: [1/1] logits (the recipe), seed 42") == 1
    again = json.loads((tmp_path / "bench" / "bench_quality.json").read_text())
    assert again["trainings"] == trainings and {row["seeds"] for row in again["table"]} == {1}
    assert len(again["table"]) == len(CONFIGURATIONS)


@pytest.mark.parametrize("arguments, sentence", [
    (["--seeds", "0"], "argument --seeds: 0 must be at least 1"),
    (["--set", "max_lenght=64"], "--set max_lenght=... names no pipeline parameter: did you mean max_length?"),
    (["--configurations", "a,unlabelled"], "--configurations names 'unlabelled', which is none of the bench's: use "
                                           "a comma-separated list of a, b, logits, intermediate, unlabeled, "
                                           "intermediate+unlabeled."),
])
def test_bench_quality_refuses_bad_input_in_one_sentence(tmp_path, capsys, quality_data, arguments, sentence):
    try:
        status = cli.main(["bench", "quality", "--data", str(quality_data), "--output", str(tmp_path / "b"),
                           *arguments])
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2 and sentence in capsys.readouterr().err
    assert not (tmp_path / "b" / "bench_quality.json").exists()


def test_bench_quality_needs_unlabeled_texts_beside_the_data(tmp_path, capsys):
    import shutil

    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "test"):
        shutil.copy(__file__, folder / f"{split}.parquet")  # only their names are looked at before any work
    assert cli.main(["bench", "quality", "--data", str(folder), "--output", str(tmp_path / "b")]) == 2
    assert "has no unsup.* or unlabeled.* file" in capsys.readouterr().err


def test_bench_shapes_recipe_configs_are_bert_base_and_distilbert_base():
    from transformers import AutoConfig

    from kdflow.pipelines.bench.shapes import RECIPE_CONFIGS

    teacher, student = (AutoConfig.for_model(**RECIPE_CONFIGS[role]) for role in ("teacher", "student"))
    assert (teacher.num_hidden_layers, teacher.hidden_size, teacher.intermediate_size) == (12, 768, 3072)
    assert (student.n_layers, student.dim, student.hidden_dim) == (6, 768, 3072)


@pytest.mark.slow
def test_bench_shapes_publishes_a_servable_student_beside_its_teacher(tmp_path, quality_data, capsys):
    from transformers import AutoConfig

    from kdflow.components.common.text_model import TextClassifier
    from kdflow.pipelines.bench.shapes import MODEL_NAME, MODEL_VERSION, bench_shapes

    output = tmp_path / "shapes"
    # Tiny models of the two families stand for BERT-base and DistilBERT-base: the steps are the same.
    configs = {"teacher": models.TINY_CONFIGS["tiny-bert"], "student": models.TINY_CONFIGS["tiny-distilbert"]}
    model = bench_shapes(data=str(quality_data), output=str(output), rows=200, eval_rows=60, configs=configs)
    assert model == output / "published" / MODEL_NAME
    assert json.loads((model / "latest.json").read_text())["version"] == MODEL_VERSION
    texts = ["A gripping, beautifully acted film.", "Two hours I will never get back."]
    classifier = TextClassifier(model / MODEL_VERSION)
    assert classifier.probabilities(texts).sum(axis=1) == pytest.approx([1, 1], abs=1e-5)
    teacher = AutoConfig.from_pretrained(str(output / "teacher"))
    assert (teacher.model_type, teacher.num_hidden_layers, teacher.num_labels) == ("bert", 4, 2)
    assert AutoTokenizer.from_pretrained(str(output / "teacher")).vocab_size == teacher.vocab_size == 30522
    printed = capsys.readouterr().out
    assert f"Next: kdflow bench serve --model {model} --teacher {output / 'teacher'} --data {quality_data}" in printed
    # A second bench into the same folder is refused before any work.
    assert cli.main(["bench", "shapes", "--data", str(quality_data), "--output", str(output)]) == 2
    assert f"--output {output} is not empty: give a new or empty folder." in capsys.readouterr().err
