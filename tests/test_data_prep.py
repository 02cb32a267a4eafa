"""data_prep: synthetic and file sources, unpadded tokenization, validation carving, the report, early refusals."""

import json

import datasets
import pytest
from transformers import AutoTokenizer

from kdflow.components.common import step
from kdflow.components.common.data import SPLITS, UNLABELED, UNLABELED_SPLIT, load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import as_arguments
from kdflow.components.data_prep import synthetic, task
from kdflow.components.data_prep.settings import Files, Settings

COLUMNS = ["text", "label", "input_ids", "attention_mask", "length"]
# The pipeline's defaults of the step's settings (pipelines/distillation.py), which the tests change one at a time.
PIPELINE_DEFAULTS = dict(text_column="text", label_column="label", num_labels=0, problem_type="single_label",
                         decision_threshold=0.0, tokenizer="", teacher="",
                         max_length=512, truncation_side="right", max_train_samples=0, max_eval_samples=0,
                         validation_fraction=0.1, unlabeled_source="", max_unlabeled_samples=0, seed=42,
                         data_version="")


def settings(**parameters) -> Settings:
    return Settings(**{**PIPELINE_DEFAULTS, **parameters})


def prepare(tmp_path, name="data", **parameters):
    """Runs the step into tmp_path/name; returns the loaded output and the report's text."""
    parameters.setdefault("max_train_samples", 300)
    parameters.setdefault("max_eval_samples", 100)
    task.run(settings(**parameters), Files(data=str(tmp_path / name), report=str(tmp_path / f"{name}.md")))
    return load_prepared(str(tmp_path / name)), (tmp_path / f"{name}.md").read_text()


def write_source(folder, extension="parquet", train=None, test=None, test_extension=None):
    """A source folder with train and test files; rows default to reviews under the columns review/sentiment."""
    folder.mkdir(parents=True, exist_ok=True)
    test_extension = test_extension or extension
    for split, rows, seed, extension in (("train", train, 0, extension), ("test", test, 1, test_extension)):
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
                    "truncated at 512", "- Source: synthetic", "| train | 300 |", "negative", "positive",
                    "0 in train, 0 in test", "0 of 33 in validation, 0 of 100 in test (0.0%"):
        assert section in report
    assert data.info["token_lengths"]["train"]["truncated_share"] == 0.0
    assert data.info["empty_texts_dropped"] == {"train": 0, "test": 0}
    assert data.info["also_in_train"] == {"validation": 0, "test": 0}


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


def test_a_source_folder_in_a_bucket_is_downloaded(tmp_path, tokenizer_dir, bucket_uri):
    from kdflow.components.common import storage

    storage.upload_folder(write_source(tmp_path / "source"), f"{bucket_uri}/reviews")
    data, _ = prepare(tmp_path, source=f"{bucket_uri}/reviews", text_column="review", label_column="sentiment",
                      tokenizer=str(tokenizer_dir))
    assert data.info["rows"] == {"train": 108, "validation": 12, "test": 40}
    assert data.info["source"] == f"{bucket_uri}/reviews"


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
               "--text-column", "text", "--label-column", "label", "--num-labels", "2", "--problem-type", "single_label",
               "--decision-threshold", "0",
               "--tokenizer", str(tokenizer_dir), "--teacher", "", "--max-length", "32", "--truncation-side", "right",
               "--max-train-samples", "40", "--max-eval-samples", "20", "--validation-fraction", "0.1",
               "--unlabeled-source", "", "--max-unlabeled-samples", "0", "--seed", "42", "--data-version", ""])
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
    assert "num_labels=1 must be 0 (read it from the data) or at least 2" in capsys.readouterr().err
    assert "num_labels=1" in step.read_error(tmp_path / "out")
    assert not (tmp_path / "out" / "data").exists()


BALANCED = {"review": ["good film", "bad film", "great plot", "dull plot"] * 5, "sentiment": [1, 0, 1, 0] * 5}


@pytest.mark.parametrize("train_labels, test_labels, names", [
    (["pos", "neg"], ["neg", "pos"], ["neg", "pos"]),  # names, in sorted order
    ([10, 1, 3, 7], [7, 10, 1, 1], ["1", "3", "7", "10"]),  # codes, as IMDb's ratings: sorted as numbers
    ([0, 1, 2, 3], [3, 2, 1, 1], ["label_0", "label_1", "label_2", "label_3"]),  # already class ids
])
def test_labels_as_written_become_class_ids_with_names_read_from_the_data(tmp_path, tokenizer_dir, train_labels,
                                                                          test_labels, names):
    train, test = reviews(120, 0), reviews(40, 1)
    train["sentiment"] = [train_labels[row % len(train_labels)] for row in range(120)]
    test["sentiment"] = [test_labels[row % len(test_labels)] for row in range(40)]
    data, report = prepare_reviews(tmp_path, write_source(tmp_path / "source", train=train, test=test), tokenizer_dir)
    assert data.info["label_names"] == names and data.num_labels == len(names)
    ids = {value: index for index, value in enumerate(sorted(set(train_labels)))}
    texts = dict(zip(train["review"] + test["review"], train["sentiment"] + test["sentiment"]))
    for split in data.splits.values():
        assert [ids[texts[text]] for text in split["text"]] == split["label"]
    assert data.info["label_counts"]["test"] == [test["sentiment"].count(value) for value in sorted(ids, key=ids.get)]
    assert all(task.markdown_text(name) in report for name in names)


@pytest.mark.parametrize("train, test, overrides, named", [
    (None, None, {"text_column": "body"}, "text_column='body'"),
    (None, None, {"label_column": "stars_given"}, "label_column='stars_given'"),
    ({**BALANCED, "sentiment": ["pos", "neg", "pos", "neg"] * 5}, None, {"num_labels": 3}, "label_column='sentiment' "
     "holds 2 classes in the train split (neg, pos) but num_labels=3: set num_labels=2, or 0 to read it from the "
     "data."),
    ({**BALANCED, "sentiment": [1, 0, 2, 0] * 5}, None, {"num_labels": 2}, "label_column='sentiment' holds 3 classes "
     "in the train split (0, 1, 2) but num_labels=2: set num_labels=3, or 0 to read it from the data."),
    (None, {**BALANCED, "sentiment": [0.5] * 20}, {}, "label_column='sentiment' holds 0.5 in the test split, neither "
     "a whole number nor a name: give each label as an integer code or a name."),
    (None, {**BALANCED, "sentiment": [None, 0, 1, 0] * 5}, {}, "label_column='sentiment' holds None in the test "
     "split: drop the rows without a label."),
    (None, {**BALANCED, "sentiment": [1, 0, 1, 2] * 5}, {}, "label_column='sentiment' holds 2 in the test split, a "
     "label the train split never has (label_0, label_1): drop those rows, or add training rows with that label."),
    ({**BALANCED, "sentiment": [1] * 20}, {"review": [f"a fine story {i}" for i in range(20)], "sentiment": [1] * 20},
     {}, "The train split holds only label '1': a classifier needs two classes or more"),
    (None, {"review": [], "sentiment": []}, {}, "test split"),
    (None, {"review": ["", " \n"] * 10, "sentiment": [0, 1] * 10}, {},
     "Every text of the test split of source='{source}' is empty or whitespace (20 rows): set text_column='review' to "
     "the column that holds the texts, or fill them in."),
    (BALANCED, None, {}, "Every validation text of source='{source}' also appears in train"),
    (None, None, {"num_labels": 1}, "num_labels=1"),
    (None, None, {"validation_fraction": 1.0}, "validation_fraction=1.0"),
    (None, None, {"problem_type": "multi_label", "label_column": "sentiment,stars"}, "label_column='sentiment,stars': "
     "column 'stars' holds 5 in the train split; each of the 0/1 columns holds 1 where its label applies and 0 "
     "elsewhere."),
    (None, None, {"problem_type": "multi_label", "label_column": "sentiment,rating"}, "label_column='sentiment,"
     "rating': 'rating' is not a column of the train split (it has review, sentiment, stars)"),
    (None, None, {"problem_type": "multi_label", "decision_threshold": 1.0}, "decision_threshold=1.0 must lie in "
     "(0, 1)"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, tokenizer_dir, train, test, overrides, named):
    source = write_source(tmp_path / "source", train=train, test=test)
    parameters = {"source": source, "text_column": "review", "label_column": "sentiment",
                  "tokenizer": str(tokenizer_dir), **overrides}
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, **parameters)
    assert named.format(source=source) in str(refused.value)
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


def reviews(count, seed, exclude=frozenset()):
    rows = synthetic.generate(count, seed, exclude=exclude)
    return {"review": rows["text"], "sentiment": rows["label"]}


def prepare_reviews(tmp_path, source, tokenizer_dir, **parameters):
    """Runs the step on a source written by write_source, with the test tokenizer."""
    return prepare(tmp_path, source=source, text_column="review", label_column="sentiment",
                   tokenizer=str(tokenizer_dir), **parameters)


def test_a_test_split_that_repeats_train_is_refused_with_its_count_and_share(tmp_path, tokenizer_dir):
    train = reviews(120, 0)
    source = write_source(tmp_path / "source", train=train, test=train)
    with pytest.raises(KdflowInputError) as refused:
        prepare_reviews(tmp_path, source, tokenizer_dir, max_eval_samples=0)
    # 12 of the 120 rows are carved out for validation: the other 108 are trained on and repeat in test.
    assert str(refused.value) == (
        f"108 of the 120 test texts of source={source!r} (90.0%) also appear in train, more than 1%: remove them from "
        "the test split, so that it scores texts the models have not seen."
    )
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.md").exists()


def test_test_texts_that_repeat_train_up_to_one_percent_are_counted(tmp_path, tokenizer_dir):
    train = reviews(120, 0)
    test = reviews(198, 1, exclude=set(train["review"]))
    # Two training texts (rows 2 and 3, which seed 42 keeps out of validation) again, with other whitespace: repeats
    # are found with whitespace runs made one space.
    test["review"] += [f"  {text.replace(' ', '   ')}\n" for text in train["review"][2:4]]
    test["sentiment"] += train["sentiment"][2:4]
    source = write_source(tmp_path / "source", train=train, test=test)
    data, report = prepare_reviews(tmp_path, source, tokenizer_dir, max_eval_samples=0)
    assert data.info["also_in_train"] == {"validation": 0, "test": 2}
    assert "0 of 12 in validation, 2 of 200 in test (1.0%; above 1% is refused)" in report


def test_empty_texts_are_dropped_before_validation_is_carved_and_counted(tmp_path, tokenizer_dir):
    train, test = reviews(120, 0), reviews(40, 1)
    train["review"][:3] = ["", "   ", "\n\t"]
    test["review"][5] = " "
    source = write_source(tmp_path / "source", train=train, test=test)
    data, report = prepare_reviews(tmp_path, source, tokenizer_dir, max_eval_samples=0,
                                   validation_fraction=0.25)
    assert data.info["empty_texts_dropped"] == {"train": 3, "test": 1}
    assert data.info["rows"] == {"train": 88, "validation": 29, "test": 39}  # 117 train rows left, a quarter held out
    assert all(text.strip() for split in data.splits.values() for text in split["text"])
    assert "dropped before validation was carved out: 3 in train, 1 in test" in report


def json_lines(count, seed) -> list[bytes]:
    rows = synthetic.generate(count, seed)
    return [json.dumps({"text": text, "label": label}).encode() for text, label in zip(rows["text"], rows["label"])]


def source_with_line(folder, name, third_line: bytes) -> str:
    """A jsonl source whose file `name` (train.jsonl, test.jsonl or test.csv) has `third_line` as its line 3."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, seed in (("train", 0), ("test", 1)):
        if not name.startswith(split):
            (folder / f"{split}.jsonl").write_bytes(b"\n".join(json_lines(40, seed)) + b"\n")
    if name.endswith(".csv"):
        lines = [b"text,label", b"good film,1", third_line, b"bad film,0"]
    else:
        lines = [*json_lines(2, 2), third_line, *json_lines(2, 3)]
    (folder / name).write_bytes(b"\n".join(lines) + b"\n")
    return str(folder)


@pytest.mark.parametrize("name, third_line, problem", [
    ("train.jsonl", b'{"text": "caf\xff", "label": 1}', "is not valid UTF-8 (byte 0xff at position 14): save the file "
                                                         "as UTF-8."),
    ("test.jsonl", b'{"text": "good film", "label": 1', "is not a JSON object (Expecting ',' delimiter at position "
                                                        "33): write one JSON object per line."),
    ("train.jsonl", b'["good film", 1]', "is not a JSON object (it starts with '['): write one JSON object per line."),
    ("test.csv", b"caf\xe9 film,1", "is not valid UTF-8 (byte 0xe9 at position 4): save the file as UTF-8."),
])
def test_files_that_are_not_utf8_or_json_lines_are_refused_naming_file_and_line(tmp_path, tokenizer_dir, name,
                                                                                  third_line, problem):
    source = source_with_line(tmp_path / "source", name, third_line)
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, source=source, tokenizer=str(tokenizer_dir))
    assert str(refused.value) == f"{name} line 3 of source={source!r} {problem}"
    assert not (tmp_path / "data").exists()


def test_a_utf8_file_that_starts_with_a_byte_order_mark_is_read(tmp_path, tokenizer_dir):
    source = source_with_line(tmp_path / "source", "train.jsonl", json_lines(1, 4)[0])  # five good lines
    train_file = tmp_path / "source" / "train.jsonl"
    train_file.write_bytes(b"\xef\xbb\xbf" + train_file.read_bytes())
    data, _ = prepare(tmp_path, source=source, tokenizer=str(tokenizer_dir), validation_fraction=0.2)
    assert data.info["rows"] == {"train": 4, "validation": 1, "test": 40}


def test_gcs_files_are_checked_once_downloaded(tmp_path, tokenizer_dir, gcs):
    from kdflow.components.common import storage

    gcs.create_bucket("kdflow-bad-data")
    storage.upload_folder(source_with_line(tmp_path / "source", "train.jsonl", b'{"text": "\xff"}'),
                          "gs://kdflow-bad-data/reviews")
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, source="gs://kdflow-bad-data/reviews", tokenizer=str(tokenizer_dir))
    assert str(refused.value).startswith("train.jsonl line 3 of source='gs://kdflow-bad-data/reviews' is not valid "
                                         "UTF-8 (byte 0xff at position 11)")


def test_a_csv_that_does_not_parse_is_refused_with_the_readers_reason(tmp_path, tokenizer_dir):
    source = source_with_line(tmp_path / "source", "test.csv", b"bad film,0,3")
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, source=source, tokenizer=str(tokenizer_dir))
    assert str(refused.value) == (f"The test files of source={source!r} could not be read (Error tokenizing data. C "
                                  "error: Expected 2 fields in line 3, saw 3): fix or replace them.")


def test_each_split_is_read_in_its_own_format(tmp_path, tokenizer_dir):
    source = write_source(tmp_path / "source", "parquet", test_extension="csv")
    data, _ = prepare_reviews(tmp_path, source, tokenizer_dir, validation_fraction=0.25)
    assert sorted(path.name for path in (tmp_path / "source").iterdir()) == ["test.csv", "train.parquet"]
    assert data.info["rows"] == {"train": 90, "validation": 30, "test": 40}


def test_a_folder_without_one_split_is_refused_naming_it(tmp_path, tokenizer_dir):
    source = write_source(tmp_path / "source")
    (tmp_path / "source" / "test.parquet").unlink()
    with pytest.raises(KdflowInputError) as refused:
        prepare(tmp_path, source=source, tokenizer=str(tokenizer_dir))
    assert str(refused.value) == f"source={source!r} holds no test files: put test.parquet (or .jsonl, .csv) in it."


def test_markdown_text_is_literal_and_on_one_line():
    assert task.markdown_text("a|b\n# c *d* [e](f) <g> `h` x_y") == (
        "a\\|b # c \\*d\\* \\[e\\](f) \\<g\\> \\`h\\` x\\_y")


def test_report_escapes_what_the_user_and_the_data_named(tmp_path, tokenizer_dir):
    train, test = reviews(120, 0), reviews(40, 1)
    features = datasets.Features({"re|view": datasets.Value("string"),
                                  "sentiment": datasets.ClassLabel(names=["neg|ative", "pos\n# itive"])})
    (tmp_path / "source").mkdir()
    for split, rows in (("train", train), ("test", test)):
        rows = {"re|view": rows["review"], "sentiment": rows["sentiment"]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp_path / "source" / f"{split}.parquet"))
    data, report = prepare(tmp_path, source=str(tmp_path / "source"), text_column="re|view", label_column="sentiment",
                           tokenizer=str(tokenizer_dir), data_version="v1 ## Injected | <b>x</b>")
    assert data.info["label_names"] == ["neg|ative", "pos\n# itive"]
    assert [line for line in report.splitlines() if line.startswith("#")] == [
        "# Prepared data", "## Rows and label balance", "## Token lengths before truncation"]
    assert "(text from re\\|view, label from sentiment)" in report
    assert "- Data version: v1 ## Injected \\| \\<b\\>x\\</b\\>" in report
    assert "| split | rows | neg\\|ative | pos # itive |" in report


def write_unlabeled(path, rows: dict) -> str:
    """`rows` in the file `path`, its format from its extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict(rows)
    {".parquet": dataset.to_parquet, ".csv": dataset.to_csv, ".jsonl": dataset.to_json}[path.suffix](str(path))
    return str(path)


def unlabeled_rows(count: int, train: dict, test: dict) -> dict:
    """`count` new reviews, then 2 empty texts, 2 test texts and 1 training text (in other whitespace), under the
    labeled source's text column, with a label column data_prep ignores."""
    texts = synthetic.generate(count, 9, exclude=set(train["review"]) | set(test["review"]))["text"]
    texts += ["", "  \n", test["review"][0], f" {test['review'][1]}  ", train["review"][5].replace(" ", "\t")]
    return {"review": texts, "sentiment": [-1] * len(texts)}


@pytest.fixture()
def labeled_source(tmp_path):
    """A labeled source (reviews in `review`, labels in `sentiment`) and its rows."""
    train, test = reviews(120, 0), reviews(40, 1)
    return write_source(tmp_path / "source", train=train, test=test), train, test


@pytest.mark.parametrize("extension", ["parquet", "jsonl", "csv"])
def test_unlabeled_texts_become_a_split_that_concatenates_with_train(tmp_path, tokenizer_dir, labeled_source,
                                                                      extension):
    source, train, test = labeled_source
    write_unlabeled(tmp_path / "extra" / f"unsup.{extension}", unlabeled_rows(50, train, test))
    (tmp_path / "extra" / "notes.parquet").write_text("not read: not named unsup.* or unlabeled.*")
    data, report = prepare_reviews(tmp_path, source, tokenizer_dir, unlabeled_source=str(tmp_path / "extra"))
    unlabeled = data.splits[UNLABELED_SPLIT]
    assert data.has_unlabeled and list(data.splits) == ["train", "validation", "test", UNLABELED_SPLIT]
    assert unlabeled.column_names == COLUMNS and set(unlabeled["label"]) == {UNLABELED}
    assert unlabeled.features == data.splits["train"].features
    for row in unlabeled.select(range(5)):
        assert row["input_ids"] == data.tokenizer(row["text"], truncation=True, max_length=512)["input_ids"]
        assert len(row["input_ids"]) == row["length"] == sum(row["attention_mask"])
    labeled = {text for name in SPLITS for text in data.splits[name]["text"]}
    assert len(unlabeled) == 50 and not set(unlabeled["text"]) & labeled
    assert data.info["unlabeled_source_rows"] == 55
    assert data.info["unlabeled_dropped"] == {"empty": 2, "in_test": 2, "in_train_or_validation": 1}
    assert data.info["rows"][UNLABELED_SPLIT] == 50 and UNLABELED_SPLIT not in data.info["label_counts"]
    assert data.info["token_lengths"][UNLABELED_SPLIT]["max"] > 0
    assert (f"- Unlabeled texts, labeled by the teacher only (label -100): 50 kept of the 55 rows of "
            f"{task.markdown_text(tmp_path / 'extra')}; dropped 2 empty, 2 repeating a test text and 1 repeating a "
            "train or validation text") in report
    assert "| unlabeled | 50 | – | – |" in report
    # What distill does with them: one training set, labeled rows first.
    mixed = datasets.concatenate_datasets([data.splits["train"], unlabeled])
    assert mixed["label"][:len(data.splits["train"])] == data.splits["train"]["label"]
    assert mixed["label"][len(data.splits["train"]):] == [UNLABELED] * 50


def test_a_single_unlabeled_file_is_sampled_with_the_seed(tmp_path, tokenizer_dir, labeled_source):
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, train, test = labeled_source
    rows = unlabeled_rows(60, train, test)
    # Large strings, as pandas 3 writes them: cast to train's features on the way.
    path = tmp_path / "reviews-without-labels.parquet"
    pq.write_table(pa.table({"review": pa.array(rows["review"], pa.large_string())}), path)
    data, _ = prepare_reviews(tmp_path, source, tokenizer_dir, unlabeled_source=str(path), max_unlabeled_samples=20)
    again, _ = prepare_reviews(tmp_path, source, tokenizer_dir, name="again", unlabeled_source=str(path),
                               max_unlabeled_samples=20)
    other, _ = prepare_reviews(tmp_path, source, tokenizer_dir, name="other", unlabeled_source=str(path),
                               max_unlabeled_samples=20, seed=7)
    texts = data.splits[UNLABELED_SPLIT]["text"]
    assert len(texts) == 20 and set(texts) < set(rows["review"][:60])
    assert texts == again.splits[UNLABELED_SPLIT]["text"] != other.splits[UNLABELED_SPLIT]["text"]
    assert texts != rows["review"][:20]  # sampled, not the first rows
    assert data.info["unlabeled_source_rows"] == 65 and data.info["max_unlabeled_samples"] == 20
    assert data.splits[UNLABELED_SPLIT].features == data.splits["train"].features


def test_unlabeled_texts_leave_the_wordpiece_vocabulary_alone(tmp_path, labeled_source):
    source, train, test = labeled_source
    texts = synthetic.generate(20, 9, exclude=set(train["review"]) | set(test["review"]))["text"]
    # A word only the unlabeled texts hold.
    unlabeled = write_unlabeled(tmp_path / "unlabeled.jsonl", {"review": [f"{text} zyzzyva" for text in texts]})
    data, _ = prepare(tmp_path, source=source, text_column="review", label_column="sentiment", tokenizer="wordpiece",
                      teacher="config:tiny-bert", max_length=128, unlabeled_source=unlabeled)
    without, _ = prepare(tmp_path, "without", source=source, text_column="review", label_column="sentiment",
                         tokenizer="wordpiece", teacher="config:tiny-bert", max_length=128)
    assert data.tokenizer.get_vocab() == without.tokenizer.get_vocab()
    assert "zyzzyva" not in data.tokenizer.get_vocab() and len(data.splits[UNLABELED_SPLIT]) == 20


def test_an_unlabeled_file_in_a_bucket_is_read(tmp_path, tokenizer_dir, labeled_source, bucket_uri):
    from kdflow.components.common import storage

    source, train, test = labeled_source
    write_unlabeled(tmp_path / "extra" / "unsup.parquet", unlabeled_rows(30, train, test))
    storage.upload_folder(str(tmp_path / "extra"), f"{bucket_uri}/extra")
    for name, unlabeled_source in (("file", f"{bucket_uri}/extra/unsup.parquet"), ("folder", f"{bucket_uri}/extra")):
        data, _ = prepare_reviews(tmp_path, source, tokenizer_dir, name=name, unlabeled_source=unlabeled_source)
        assert len(data.splits[UNLABELED_SPLIT]) == 30 and data.info["unlabeled_source"] == unlabeled_source


@pytest.mark.parametrize("name, content, given, named", [
    (None, None, "missing", "unlabeled_source='{unlabeled}' does not exist: give a folder holding unsup.parquet (or "
     ".jsonl, .csv), such a file, or a gs:// or s3:// URI of either."),
    ("train.parquet", lambda rows: rows, "folder", "unlabeled_source='{unlabeled}' holds no unsup.* or unlabeled.* "
     "files: put unsup.parquet (or .jsonl, .csv) in it, or give the file itself."),
    ("unsup.parquet", lambda rows: {"body": rows["review"]}, "folder", "unlabeled_source='{unlabeled}' has no "
     "text_column='review' (it has body): name its text column as the labeled data's."),
    ("unsup.csv", lambda rows: {"sentiment": [0, 1] * 5}, "folder", "unlabeled_source='{unlabeled}' holds labels "
     "('sentiment') but no texts (it has sentiment): give its texts in a column named text_column='review'."),
    ("unsup.jsonl", lambda rows: {"review": rows["review"][-5:]}, "folder", "Every text of "
     "unlabeled_source='{unlabeled}' (5 rows) is empty or repeats a text of train, validation or test: give other "
     "texts, or leave unlabeled_source empty."),
    ("unsup.parquet", lambda rows: {"review": [1, 2, 3]}, "file", "text_column='review' of "
     "unlabeled_source='{unlabeled}' holds int64 values, not text: set text_column to the column that "
     "holds the texts."),
    ("unsup.jsonl", lambda rows: b"", "file", "unlabeled_source='{unlabeled}' holds no rows: give files with texts, or "
     "leave unlabeled_source empty."),
    ("unsup.jsonl", lambda rows: b'{"review": "caf\xff"}\n', "folder", "unsup.jsonl line 1 of "
     "unlabeled_source='{unlabeled}' is not valid UTF-8 (byte 0xff at position 16): save the file as UTF-8."),
    ("unsup.txt", lambda rows: b"a text\n", "file", "unlabeled_source='{unlabeled}' is not a parquet, jsonl or csv "
     "file: give one, or a folder holding unsup.parquet (or .jsonl, .csv)."),
])
def test_bad_unlabeled_sources_are_refused_before_anything_is_written(tmp_path, tokenizer_dir, labeled_source, name,
                                                                      content, given, named):
    source, train, test = labeled_source
    folder = tmp_path / "extra"
    folder.mkdir()
    if name:
        written = content(unlabeled_rows(10, train, test))
        if isinstance(written, bytes):
            (folder / name).write_bytes(written)
        else:
            write_unlabeled(folder / name, written)
    unlabeled = str({"missing": folder / "missing", "folder": folder, "file": folder / str(name)}[given])
    with pytest.raises(KdflowInputError) as refused:
        prepare_reviews(tmp_path, source, tokenizer_dir, unlabeled_source=unlabeled)
    assert str(refused.value) == named.format(unlabeled=unlabeled)
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.md").exists()


def test_max_unlabeled_samples_must_be_a_row_count():
    with pytest.raises(KdflowInputError, match="max_unlabeled_samples=-1 must be a row count, or 0 for all rows."):
        settings(source="synthetic", tokenizer="wordpiece", max_unlabeled_samples=-1)


def test_multi_label_lists_and_zero_one_columns_become_the_same_label_vectors(tmp_path, tokenizer_dir):
    """A column of lists of names (parquet) and one 0/1 column per label (csv) describe the same rows: both become a
    0/1 float per class, the classes in sorted order; train and unlabeled rows concatenate as they are."""
    topics = ["story", "music", "acting"]  # of the generator's five; a row without any of them gets story
    train = synthetic.generate_topics(150, 0)
    rows = {"train": train, "test": synthetic.generate_topics(40, 1, exclude=set(train["text"]))}
    lists, columns = write_dir(tmp_path / "lists"), write_dir(tmp_path / "columns")
    for split, generated in rows.items():
        kept = [[name for name in names if name in topics] or ["story"] for names in generated["labels"]]
        datasets.Dataset.from_dict({"review": generated["text"], "topics": kept}).to_parquet(
            str(lists / f"{split}.parquet"))
        zero_one = {name: [int(name in names) for names in kept] for name in topics}
        datasets.Dataset.from_dict({"review": generated["text"], **zero_one}).to_csv(str(columns / f"{split}.csv"))
    unlabeled = write_unlabeled(tmp_path / "unsup.parquet", {"review": synthetic.generate_topics(30, 9)["text"]})
    common = dict(text_column="review", problem_type="multi_label", tokenizer=str(tokenizer_dir),
                  max_train_samples=0)
    from_lists, report = prepare(tmp_path, "from-lists", source=str(lists), label_column="topics",
                                 unlabeled_source=unlabeled, **common)
    from_columns, _ = prepare(tmp_path, "from-columns", source=str(columns), label_column="story, music,acting",
                              **common)
    for data in (from_lists, from_columns):
        assert data.multi_label and data.label_names == sorted(topics) and data.num_labels == 3
        assert data.splits["train"].features["label"] == datasets.List(datasets.Value("float32"), length=3)
    for split in SPLITS:
        assert from_lists.splits[split]["label"] == from_columns.splits[split]["label"]
        assert from_lists.info["label_counts"][split] == from_columns.info["label_counts"][split]
    first = from_lists.splits["test"][0]
    said = [name for name in topics if set(synthetic.TOPIC_SUBJECTS[name]) & set(first["text"].split())]
    assert first["label"] == [float(name in (said or ["story"])) for name in sorted(topics)]
    assert set(map(tuple, from_lists.splits[UNLABELED_SPLIT]["label"])) == {(float(UNLABELED),) * 3}
    datasets.concatenate_datasets([from_lists.splits["train"], from_lists.splits[UNLABELED_SPLIT]])
    assert "Multi-label: a row counts under each of its labels" in report
    assert "each label's decision threshold is chosen on the validation split" in report


def write_dir(folder):
    folder.mkdir(exist_ok=True)
    return folder


def test_the_synthetic_source_gives_topics_for_a_multi_label_task(tmp_path, tokenizer_dir):
    data, _ = prepare(tmp_path, source="synthetic", problem_type="multi_label", decision_threshold=0.4,
                      tokenizer=str(tokenizer_dir))
    assert data.label_names == sorted(synthetic.TOPIC_NAMES) and data.decision_threshold == 0.4
    train = data.splits["train"]
    for row in train.select(range(20)):
        said = {name for name, words in synthetic.TOPIC_SUBJECTS.items() if set(words) & set(row["text"].split())}
        assert {data.label_names[index] for index, value in enumerate(row["label"]) if value} == said
