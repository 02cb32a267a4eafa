"""data_prep: synthetic and file sources, unpadded tokenization, validation carving, the report, early refusals."""

import datasets
import pytest
from transformers import AutoTokenizer

from kdflow.components.common import step
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import as_arguments
from kdflow.components.data_prep import synthetic, task
from kdflow.components.data_prep.settings import Files, Settings

COLUMNS = ["text", "label", "input_ids", "attention_mask", "length"]
# The pipeline's defaults of the step's settings (pipelines/distillation.py), which the tests change one at a time.
PIPELINE_DEFAULTS = dict(text_column="text", label_column="label", num_labels=2, tokenizer="", teacher="",
                         max_length=512, truncation_side="right", max_train_samples=0, max_eval_samples=0,
                         validation_fraction=0.1, seed=42, data_version="")


def settings(**parameters) -> Settings:
    return Settings(**{**PIPELINE_DEFAULTS, **parameters})


def prepare(tmp_path, name="data", **parameters):
    """Runs the step into tmp_path/name; returns the loaded output and the report's text."""
    parameters.setdefault("max_train_samples", 300)
    parameters.setdefault("max_eval_samples", 100)
    task.run(settings(**parameters), Files(data=str(tmp_path / name), report=str(tmp_path / f"{name}.md")))
    return load_prepared(str(tmp_path / name)), (tmp_path / f"{name}.md").read_text()


def write_source(folder, extension="parquet", train=None, test=None):
    """A source folder with train and test files; rows default to reviews under the columns review/sentiment."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows, seed in (("train", train, 0), ("test", test, 1)):
        if rows is None:
            generated = synthetic.generate(120 if split == "train" else 40, seed)
            rows = {"review": generated["text"], "sentiment": generated["label"], "stars": [5] * len(generated["text"])}
        dataset = datasets.Dataset.from_dict(rows)
        path = str(folder / f"{split}.{extension}")
        {"parquet": dataset.to_parquet, "csv": dataset.to_csv, "jsonl": dataset.to_json}[extension](path)
    return str(folder)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, tokenizer_dir):
    folder = tmp_path_factory.mktemp("synthetic")
    return prepare(folder, source="synthetic", tokenizer=str(tokenizer_dir))


def test_synthetic_generator_is_seeded_balanced_and_varied():
    rows = synthetic.generate(400, seed=3)
    assert rows == synthetic.generate(400, seed=3)
    assert rows["text"] != synthetic.generate(400, seed=4)["text"]
    assert sum(rows["label"]) == 200
    assert len(set(rows["text"])) == 400
    words = [len(text.split()) for text in rows["text"]]
    assert min(words) <= 15 and max(words) >= 90 and max(words) <= 125
    assert not set(synthetic.generate(50, seed=5, exclude=set(rows["text"]))["text"]) & set(rows["text"])


def test_synthetic_reviews_are_learnable_from_words_and_bigrams():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    train = synthetic.generate(2000, seed=0)
    test = synthetic.generate(1000, seed=1, exclude=set(train["text"]))
    vectorizer = CountVectorizer(ngram_range=(1, 2))
    model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform(train["text"]), train["label"])
    assert model.score(vectorizer.transform(test["text"]), test["label"]) >= 0.93


def test_synthetic_source_is_stored_unpadded_in_three_splits(synthetic_run, tokenizer_dir):
    data, _ = synthetic_run
    pad_id = AutoTokenizer.from_pretrained(str(tokenizer_dir)).pad_token_id
    assert data.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(str(tokenizer_dir)).get_vocab()
    for name in ("train", "validation", "test"):
        split = data.splits[name]
        assert split.column_names == COLUMNS
        for row in split:
            assert len(row["input_ids"]) == row["length"] == sum(row["attention_mask"])
            assert pad_id not in row["input_ids"]
    assert len({len(ids) for ids in data.splits["train"]["input_ids"]}) > 20  # lengths vary: nothing padded


def test_synthetic_rows_keep_their_labels_and_validation_is_apart_from_train(synthetic_run):
    data, _ = synthetic_run
    # The source the step generated: train rows enough for 300 after carving, test rows = max_eval_samples.
    train_rows = synthetic.generate(334, seed=42)
    test_rows = synthetic.generate(100, seed=43, exclude=set(train_rows["text"]))
    source_labels = dict(zip(train_rows["text"] + test_rows["text"], train_rows["label"] + test_rows["label"]))
    for split in data.splits.values():
        assert all(source_labels[text] == label for text, label in zip(split["text"], split["label"]))
    assert not set(data.splits["validation"]["text"]) & set(data.splits["train"]["text"])
    assert not set(data.splits["test"]["text"]) & set(data.splits["train"]["text"])
    assert data.info["rows"] == {"train": 300, "validation": 33, "test": 100}
    assert data.info["label_names"] == ["negative", "positive"]
    assert data.info["num_labels"] == 2 and data.info["seed"] == 42 and data.info["source"] == "synthetic"


def test_report_gives_rows_balance_lengths_and_truncation(synthetic_run):
    data, report = synthetic_run
    for section in ("## Rows and label balance", "## Token lengths before truncation", "p50", "p90", "p99",
                    "truncated at 512", "`synthetic`", "| train | 300 |", "negative", "positive"):
        assert section in report
    assert data.info["token_lengths"]["train"]["truncated_share"] == 0.0


def test_same_seed_gives_the_same_data_and_another_seed_other_data(tmp_path, synthetic_run, tokenizer_dir):
    data, _ = synthetic_run
    again, _ = prepare(tmp_path, "again", source="synthetic", tokenizer=str(tokenizer_dir))
    other, _ = prepare(tmp_path, "other", source="synthetic", tokenizer=str(tokenizer_dir), seed=7)
    for name in ("train", "validation", "test"):
        assert again.splits[name].to_dict() == data.splits[name].to_dict()
    assert other.splits["train"]["text"] != data.splits["train"]["text"]


def test_rows_beyond_max_length_are_truncated_and_counted(tmp_path, tokenizer_dir):
    data, report = prepare(tmp_path, source="synthetic", tokenizer=str(tokenizer_dir), max_length=16)
    tokenizer = data.tokenizer
    train = data.splits["train"]
    assert max(train["length"]) == 16
    full_lengths = [len(ids) for ids in tokenizer(list(train["text"]))["input_ids"]]
    figures = data.info["token_lengths"]["train"]
    assert figures["max"] == max(full_lengths) > 16
    assert figures["truncated_share"] == pytest.approx(sum(n > 16 for n in full_lengths) / len(full_lengths))
    assert "truncated at 16" in report


@pytest.mark.parametrize("extension", ["parquet", "csv", "jsonl"])
def test_folder_source_with_own_column_names(tmp_path, tokenizer_dir, extension):
    source = write_source(tmp_path / "source", extension)
    data, _ = prepare(tmp_path, source=source, text_column="review", label_column="sentiment",
                      tokenizer=str(tokenizer_dir), validation_fraction=0.25)
    assert data.info["rows"] == {"train": 90, "validation": 30, "test": 40}
    assert data.info["label_names"] == ["label_0", "label_1"]
    assert data.info["text_column"] == "review" and data.info["label_column"] == "sentiment"
    for split in data.splits.values():
        assert split.column_names == COLUMNS
    # Stratified: the balanced source gives a balanced validation split.
    assert sorted(data.info["label_counts"]["validation"]) == [15, 15]


def test_gcs_folder_source_is_downloaded(tmp_path, tokenizer_dir, gcs):
    from kdflow.components.common import storage

    bucket = gcs.create_bucket("kdflow-data-prep")
    storage.upload_folder(write_source(tmp_path / "source"), "gs://kdflow-data-prep/reviews")
    data, _ = prepare(tmp_path, source="gs://kdflow-data-prep/reviews", text_column="review",
                      label_column="sentiment", tokenizer=str(tokenizer_dir))
    assert data.info["rows"] == {"train": 108, "validation": 12, "test": 40}
    assert data.info["source"] == f"gs://{bucket.name}/reviews"


def test_row_limits_apply_after_validation_is_carved(tmp_path, tokenizer_dir):
    source = write_source(tmp_path / "source")
    data, _ = prepare(tmp_path, source=source, text_column="review", label_column="sentiment",
                      tokenizer=str(tokenizer_dir), validation_fraction=0.5, max_train_samples=50, max_eval_samples=10)
    assert data.info["rows"] == {"train": 50, "validation": 10, "test": 10}
    assert len(set(data.splits["test"]["label"])) == 2


def test_wordpiece_tokenizer_is_trained_on_train_and_reloads(tmp_path):
    data, report = prepare(tmp_path, source="synthetic", tokenizer="wordpiece", teacher="config:tiny-bert",
                           max_length=128)
    reloaded = AutoTokenizer.from_pretrained(str(tmp_path / "data" / "tokenizer"))
    assert {"boring", "wonderful", "never", "[PAD]", "[CLS]"} <= set(reloaded.get_vocab())
    row = data.splits["test"][0]
    assert reloaded(row["text"], truncation=True, max_length=128)["input_ids"] == row["input_ids"]
    assert data.info["vocab_size"] == len(reloaded) and data.info["tokenizer"] == "wordpiece"
    assert "WordPiece" in report


def test_command_line_writes_data_and_report(tmp_path, tokenizer_dir):
    task.main(["--data", str(tmp_path / "out"), "--report", str(tmp_path / "report.md"), "--source", "synthetic",
               "--text-column", "text", "--label-column", "label", "--num-labels", "2",
               "--tokenizer", str(tokenizer_dir), "--teacher", "", "--max-length", "32", "--truncation-side", "right",
               "--max-train-samples", "40", "--max-eval-samples", "20", "--validation-fraction", "0.1",
               "--seed", "42", "--data-version", ""])
    data = load_prepared(str(tmp_path / "out"))
    assert data.info["rows"] == {"train": 40, "validation": 4, "test": 20}
    assert data.max_length == 32
    assert "## Rows and label balance" in (tmp_path / "report.md").read_text()


def test_command_line_refuses_a_bad_setting_with_its_sentence_beside_the_outputs(tmp_path, capsys):
    files = Files(data=str(tmp_path / "out" / "data"), report=str(tmp_path / "out" / "report.md"))
    arguments = as_arguments(files) + as_arguments(settings(source="synthetic", tokenizer="wordpiece"))
    with pytest.raises(SystemExit) as stopped:
        task.main([*arguments, "--num-labels", "1"])  # the last of a repeated flag wins
    assert stopped.value.code == 2
    assert "num_labels=1 must be at least 2" in capsys.readouterr().err
    assert "num_labels=1" in step.read_error(tmp_path / "out")
    assert not (tmp_path / "out" / "data").exists()


BALANCED = {"review": ["good film", "bad film", "great plot", "dull plot"] * 5, "sentiment": [1, 0, 1, 0] * 5}


@pytest.mark.parametrize("train, test, overrides, named", [
    (None, None, {"text_column": "body"}, "text_column='body'"),
    (None, None, {"label_column": "stars_given"}, "label_column='stars_given'"),
    ({**BALANCED, "sentiment": ["pos", "neg", "pos", "neg"] * 5}, None, {}, "'pos'"),
    ({**BALANCED, "sentiment": [1, 0, 2, 0] * 5}, None, {}, "holds 2"),
    (None, {**BALANCED, "sentiment": [0.5] * 20}, {}, "0.5"),
    (None, {**BALANCED, "sentiment": [None, 0, 1, 0] * 5}, {}, "holds None"),
    ({**BALANCED, "sentiment": [1] * 20}, None, {}, "only label 1"),
    (None, {"review": [], "sentiment": []}, {}, "test split"),
    (None, None, {"num_labels": 1}, "num_labels=1"),
    (None, None, {"validation_fraction": 1.0}, "validation_fraction=1.0"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, tokenizer_dir, train, test, overrides, named):
    source = write_source(tmp_path / "source", train=train, test=test)
    parameters = {"source": source, "text_column": "review", "label_column": "sentiment",
                  "tokenizer": str(tokenizer_dir), **overrides}
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, **parameters)
    assert named in str(refused.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.md").exists()


@pytest.mark.parametrize("source, named", [
    ("folder-without-files", "source="),
    ("no-such-user/no-such-dataset", "source="),
])
def test_sources_that_give_no_splits_are_refused(tmp_path, tokenizer_dir, source, named):
    if source == "folder-without-files":
        (tmp_path / source).mkdir()
        (tmp_path / source / "notes.txt").write_text("no data here")
        source = str(tmp_path / source)
    with pytest.raises(KdflowInputError, match=named):
        prepare(tmp_path, source=source, tokenizer=str(tokenizer_dir))
    assert not (tmp_path / "data").exists()


def test_a_configured_teacher_needs_a_tokenizer(tmp_path):
    with pytest.raises(KdflowInputError, match="set tokenizer"):
        prepare(tmp_path, source="synthetic", teacher="config:tiny-bert")


def test_component_runs_under_kfp_local(tmp_path, tokenizer_dir):
    import kfp.local

    from kdflow.components.data_prep.component import data_prep

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    prepared = data_prep(**{**PIPELINE_DEFAULTS, "source": "synthetic", "tokenizer": str(tokenizer_dir),
                            "max_train_samples": 200, "max_eval_samples": 50})
    data = load_prepared(prepared.outputs["data"].path)
    assert data.info["rows"] == {"train": 200, "validation": 22, "test": 50}
    assert "## Token lengths before truncation" in open(prepared.outputs["report"].path).read()


def test_data_version_is_recorded_in_the_info_and_the_report(tmp_path, synthetic_run, tokenizer_dir):
    data, report = synthetic_run
    assert data.info["data_version"] == "" and "Data version" not in report
    versioned, versioned_report = prepare(tmp_path, source="synthetic", tokenizer=str(tokenizer_dir),
                                          data_version="20261129030000")
    assert versioned.info["data_version"] == "20261129030000"
    assert "- Data version: 20261129030000" in versioned_report
