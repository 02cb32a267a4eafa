"""The smoke pipeline with its data in GCS and its student published to GCS (fake-gcs-server)."""

import json
import uuid

import pandas as pd
import pytest

from kdflow.components.common import storage
from kdflow.components.data_prep import synthetic
from kdflow.pipelines.cli import main

SMALL = ["--set", "max_train_samples=1500", "--set", "max_eval_samples=300"]


@pytest.mark.slow
def test_data_from_gcs_and_gated_publish_to_gcs(tmp_path, gcs):
    bucket = gcs.create_bucket(f"kdflow-{uuid.uuid4().hex[:12]}")
    local = tmp_path / "data"
    local.mkdir()
    pd.DataFrame(synthetic.generate(2000, seed=1)).to_parquet(local / "train.parquet")
    pd.DataFrame(synthetic.generate(400, seed=2)).to_parquet(local / "test.parquet")
    storage.upload_folder(str(local), f"gs://{bucket.name}/datasets/reviews")
    publish_uri = f"gs://{bucket.name}/models"
    common = ["run", "--preset", "smoke", "--data", f"gs://{bucket.name}/datasets/reviews",
              "--publish-uri", publish_uri, *SMALL]

    assert main([*common, "--output", str(tmp_path / "first"), "--set", "model_version=v1"]) == 0
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["publish"]["promoted"] is True
    latest = json.loads(storage.read_text(f"{publish_uri}/kdflow-student/latest.json"))
    assert latest["version"] == "v1"
    published = storage.local_copy(latest["uri"])
    exported = summary["artifacts"]["onnx_model"]
    assert open(f"{published}/model.onnx", "rb").read() == open(f"{exported}/model.onnx", "rb").read()
    manifest = json.loads(open(f"{published}/manifest.json").read())
    assert {entry["path"] for entry in manifest["files"]} == set(storage.list_files(latest["uri"])) - {"manifest.json"}

    # A student of one layer trained for a few steps: better than guessing and past its (lowered) retention gate,
    # but worse than the champion.
    worse = ["--set", "student_layers=1", "--set", "epochs=0.05", "--set", "min_retention=0"]
    assert main([*common, *worse, "--output", str(tmp_path / "second"), "--set", "model_version=v2"]) == 0
    second = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert second["student"]["accuracy"] < summary["student"]["accuracy"]
    assert second["publish"]["promoted"] is False
    assert second["publish"]["champion"]["version"] == "v1"
    assert json.loads(storage.read_text(f"{publish_uri}/kdflow-student/latest.json")) == latest


def test_a_missing_bucket_for_the_data_stops_the_run_in_one_sentence(tmp_path, gcs, capsys):
    assert main(["run", "--preset", "smoke", "--data", "gs://no-such-bucket-kdflow/data",
                 "--output", str(tmp_path / "out")]) == 2
    assert "Bucket gs://no-such-bucket-kdflow does not exist" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_gcs_prefix_without_train_and_test_files_stops_the_run_in_one_sentence(tmp_path, gcs, capsys):
    bucket = gcs.create_bucket(f"kdflow-{uuid.uuid4().hex[:12]}")
    storage.write_text(f"gs://{bucket.name}/datasets/notes/readme.json", "{}")
    assert main(["run", "--preset", "smoke", "--data", f"gs://{bucket.name}/datasets/notes",
                 "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("kdflow: error:") and "train" in error
    assert not (tmp_path / "out" / "summary.json").exists()
