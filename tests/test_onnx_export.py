"""onnx_export on tiny models: parity with PyTorch, dynamic shapes, both int8 files, the report, a failed check."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import openvino
import pytest
import torch
from transformers import (
    AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
)

from kdflow.components.common.component import scalars
from kdflow.components.common.data import MODEL_INPUTS, load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import EXPORT_KINDS, OnnxReport
from kdflow.components.common import text_model
from kdflow.components.common.text_model import TextClassifier
from kdflow.components.onnx_export import task
from kdflow.components.onnx_export.settings import Files, Settings

# The report's JSON keeps the keys it had before it was a type (summary.json carries it under "onnx").
REPORT_KEYS = {"max_abs_diff", "parity_tolerance", "fp32_accuracy", "int8_accuracy", "int8_qdq_accuracy",
               "pytorch_accuracy", "int8_max_abs_diff", "int8_qdq_max_abs_diff", "latency_ms", "size_mb", "rows",
               "calibration_rows"}
MODEL_FILES = ("model.onnx", "model.int8.onnx", "model.int8.qdq.onnx")
TEXT_MODEL_FILES = ("model.text.int8.xml", "model.text.int8.bin")


def save_classifier(model, folder: Path, tokenizer_dir) -> str:
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tokenizer_dir):
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), dim=32, n_layers=2,
                              n_heads=2, hidden_dim=64, max_position_embeddings=128)
    model = DistilBertForSequenceClassification(config)
    return save_classifier(model, tmp_path_factory.mktemp("student"), tokenizer_dir)


def run_export(student_dir, data_dir, folder: Path, parity_tolerance=1e-4, max_eval_samples=0,
               max_int8_drop=0.01) -> None:
    """onnx_export into folder/onnx, its UI figures to folder/onnx_metrics.json."""
    task.run(Settings(parity_tolerance=parity_tolerance, max_eval_samples=max_eval_samples,
                      max_int8_drop=max_int8_drop),
             Files(data=str(data_dir), student=str(student_dir), onnx_model=str(folder / "onnx"),
                   onnx_metrics=str(folder / "onnx_metrics.json")))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, student_dir, prepared_data_dir):
    """The output folder and report of one export of the DistilBERT student, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("export")
    # A bound the random student cannot miss, so the int8 file holds every layer the quantizer takes (the bound's own
    # test makes it bind).
    run_export(student_dir, prepared_data_dir, folder, max_int8_drop=0.99)
    return folder / "onnx", OnnxReport.read_folder(folder / "onnx")


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # as the task does, so its figures can be recomputed
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def pytorch_logits(student_dir, batch) -> np.ndarray:
    model = task.load_for_export(student_dir)  # the model the task measures the export against
    with torch.no_grad():
        return model(**{name: torch.from_numpy(values) for name, values in batch.items()}).logits.numpy()


def encode(tokenizer, texts) -> dict:
    batch = tokenizer(texts, padding=True, return_tensors="np", return_token_type_ids=False)
    return {name: batch[name].astype(np.int64) for name in MODEL_INPUTS}


def test_export_writes_the_models_tokenizer_config_and_report(exported, prepared_data_dir):
    output_dir, report = exported
    assert {*MODEL_FILES, *TEXT_MODEL_FILES, "config.json", "tokenizer_config.json", "onnx_report.json"} == {
        path.name for path in output_dir.iterdir()} - {"tokenizer.json", "vocab.txt", "special_tokens_map.json"}
    saved = json.loads((output_dir / "onnx_report.json").read_text())
    assert REPORT_KEYS <= set(saved)
    assert report.to_dict() == saved
    data = load_prepared(str(prepared_data_dir))
    assert report.rows == len(data.splits["test"])
    assert report.calibration_rows == min(task.CALIBRATION_ROWS, len(data.splits["train"]))
    assert list(report.exports) == [kind.name for kind in EXPORT_KINDS]
    exports = report.exports
    assert report.max_abs_diff == exports["fp32"].max_abs_diff <= 1e-4
    assert exports["fp32"].accuracy == report.pytorch_accuracy
    assert 0.0 <= exports["int8"].accuracy <= 1.0 and 0.0 <= exports["int8_qdq"].accuracy <= 1.0
    bound = report.int8_bound
    assert (bound.max_drop, bound.rows, bound.float_layers) == (0.99, len(data.splits["validation"]), [])
    assert bound.precisions[0] == "f32" and list(bound.test_accuracy) == bound.precisions
    assert bound.int8_layers == 12 + 4  # the linear layers (below), the classifier's two and two embedding tables
    for runtime, by_batch_size in report.latency_ms().items():
        assert set(by_batch_size) == {"1", "32"}, runtime
        assert all(milliseconds > 0 for milliseconds in by_batch_size.values())
    assert set(report.latency_ms()) == {"pytorch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_qdq"}
    # (the QDQ file's scales outweigh what int8 saves on a model this small)
    assert set(saved["size_mb"]) == {"onnx_fp32", "onnx_int8", "onnx_int8_qdq"}
    assert exports["int8"].size_mb < exports["fp32"].size_mb
    assert (output_dir / "model.int8.onnx").stat().st_size < (output_dir / "model.onnx").stat().st_size
    # What the KFP UI shows: the report's numbers, named by their path.
    figures = dict(scalars(json.loads((output_dir.parent / "onnx_metrics.json").read_text())))
    assert figures["max_abs_diff"] == report.max_abs_diff and figures["rows"] == report.rows
    assert figures["int8_qdq_accuracy"] == exports["int8_qdq"].accuracy
    assert figures["latency_ms_onnx_int8_32"] == exports["int8"].latency_ms["32"]
    assert figures["size_mb_onnx_fp32"] == exports["fp32"].size_mb


def test_the_text_model_knows_its_truncation_length_and_warms_up_on_every_length(exported, student_dir,
                                                                                 prepared_data_dir):
    output_dir, _ = exported
    max_length = load_prepared(str(prepared_data_dir)).max_length
    classifier = TextClassifier(output_dir)
    assert classifier.max_length == max_length
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    lengths = {len(ids) for ids in tokenizer(text_model.warm_up_texts(max_length), truncation=True,
                                             max_length=max_length)["input_ids"]}
    assert set(range(2, max_length + 1)) <= lengths
    assert classifier.warm_up() == max_length


def test_the_text_model_takes_strings_and_answers_as_the_int8_model_on_the_tokenizers_ids(exported, student_dir,
                                                                                          prepared_data_dir):
    output_dir, report = exported
    test = load_prepared(str(prepared_data_dir)).splits["test"]
    check = report.text_model
    assert report.text_model_error is None
    assert (check.file, check.rows) == ("model.text.int8.xml", len(test))
    assert check.token_ids_equal == 1.0 and check.differing_rows == []
    classifier = TextClassifier(output_dir)
    probabilities = classifier.probabilities(test["text"])
    assert probabilities.shape == (len(test), 2) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Against the static int8 file on OpenVINO, fed the Hugging Face tokenizer's ids of the same texts.
    int8 = task.openvino_runner(output_dir / "model.int8.qdq.onnx")
    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    texts = test["text"][:16]
    expected = torch.softmax(torch.from_numpy(int8(encode(tokenizer, texts))), dim=-1).numpy()
    assert np.abs(probabilities[:16] - expected).max() < 1e-4
    # A call runs its texts in chunks sorted by length; each row still answers its own text.
    assert len({len(text) for text in texts}) > text_model.CHUNK_TEXTS
    one_by_one = np.concatenate([classifier.probabilities([text]) for text in texts])
    assert np.abs(probabilities[:16] - one_by_one).max() < 1e-6  # the random student's rows differ by up to 1e-4
    decided = classifier.decisions(probabilities)
    labels = np.asarray(test["label"])
    assert check.accuracy == pytest.approx(float((decided == labels).mean()))
    assert check.decisions_equal == 1.0 and check.accuracy == report.exports["int8_qdq"].accuracy
    answers = classifier.answers(probabilities[:2])
    assert [answer.labels for answer in answers] == [[classifier.label_names[index]] for index in decided[:2]]
    assert set(answers[0].probabilities) == set(classifier.label_names)


def test_a_tokenizer_openvino_cannot_convert_leaves_the_onnx_files_and_says_why(tmp_path, monkeypatch, student_dir,
                                                                                prepared_data_dir):
    def refuse(tokenizer, max_length):  # what openvino-tokenizers raises for a tokenizer it has no converter for
        raise OVTypeError("Tokenizer type is not supported: <class 'SomeTokenizer'>")

    class OVTypeError(TypeError):
        pass

    monkeypatch.setattr(text_model, "convert_tokenizer", refuse)
    with pytest.warns(UserWarning, match="No text model was written"):
        run_export(student_dir, prepared_data_dir, tmp_path, max_eval_samples=16)
    report = OnnxReport.read_folder(tmp_path / "onnx")
    assert report.text_model is None and "Tokenizer type is not supported" in report.text_model_error
    written = {path.name for path in (tmp_path / "onnx").iterdir()}
    assert set(MODEL_FILES) <= written and not set(TEXT_MODEL_FILES) & written


def test_both_models_run_onnx_runtime_fused_attention(exported):
    output_dir, _ = exported
    operators = {name: {node.op_type for node in onnx.load(str(output_dir / name)).graph.node}
                 for name in ("model.onnx", "model.int8.onnx")}
    assert {"Attention", "SkipLayerNormalization", "EmbedLayerNormalization"} <= operators["model.onnx"]
    assert {"QAttention", "MatMulInteger"} <= operators["model.int8.onnx"]


def test_the_qdq_model_has_standard_operators_int8_embeddings_and_linear_layers(exported):
    output_dir, _ = exported
    graph = onnx.load(str(output_dir / "model.int8.qdq.onnx")).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}  # nothing of ONNX Runtime's own
    made_by = {output: node for node in graph.node for output in node.output}
    weights = {initializer.name for initializer in graph.initializer}
    linear, attention = [], []
    for node in (node for node in graph.node if node.op_type == "MatMul"):
        producers = [made_by.get(name) for name in node.input]
        has_weight = any(producer and producer.input[0] in weights for producer in producers)
        dequantized = [producer is not None and producer.op_type == "DequantizeLinear" for producer in producers]
        (linear if has_weight else attention).append(dequantized[1] if has_weight else any(dequantized))
    # the tiny student: 2 layers of q, k, v, output, and two feed-forward products; QK^T and attention x V
    assert linear == [True] * 12
    assert attention == [False] * 4
    # The word embeddings (the table of vocabulary rows) are read through a DequantizeLinear of an 8-bit table.
    shapes = {initializer.name: list(initializer.dims) for initializer in graph.initializer}
    tables = [made_by[node.input[0]] for node in graph.node
              if node.op_type == "Gather" and node.input[0] in made_by]
    assert [shapes.get(table.input[0], [0])[0] for table in tables if table.op_type == "DequantizeLinear"].count(
        len(AutoTokenizer.from_pretrained(str(output_dir)))) == 1
    eight_bit = {initializer.name for initializer in graph.initializer
                 if initializer.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    assert all(node.input[0] in eight_bit for node in graph.node
               if node.op_type == "DequantizeLinear" and node.input[0] in weights)


def test_reported_difference_is_the_one_measured(exported, student_dir, prepared_data_dir):
    output_dir, report = exported
    data = load_prepared(str(prepared_data_dir))
    parity_rows = data.splits["test"].select(range(report.parity_rows))
    fp32 = session(output_dir / "model.onnx")
    differences = []
    # The task's parity batches: test rows in their own order, padded per batch.
    for start in range(0, len(parity_rows), task.PARITY_BATCH_SIZE):
        batch = encode(data.tokenizer, parity_rows[start:start + task.PARITY_BATCH_SIZE]["text"])
        onnx_logits = fp32.run(["logits"], batch)[0]
        differences.append(np.abs(onnx_logits - pytorch_logits(student_dir, batch)).max())
    assert report.max_abs_diff == pytest.approx(float(max(differences)), rel=1e-3, abs=1e-12)


@pytest.mark.parametrize("model_file", MODEL_FILES)
def test_onnx_models_take_any_batch_size_and_length(exported, student_dir, tokenizer_dir, model_file):
    output_dir, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = ["good", "the plot was really dull and the actors were bad", "a wonderful film"]
    # each file on the runtime it is made for
    runner = (task.openvino_runner if model_file == task.QDQ_INT8_FILE else task.ort_runner)(output_dir / model_file)
    tolerance = 1e-4 if model_file == "model.onnx" else 0.05
    for batch in [encode(tokenizer, [text]) for text in texts] + [encode(tokenizer, texts)]:
        logits = runner(batch)
        assert logits.shape == (len(batch["input_ids"]), 2)
        np.testing.assert_allclose(logits, pytorch_logits(student_dir, batch), atol=tolerance)


def test_failed_parity_check_leaves_no_result(tmp_path, monkeypatch, student_dir, prepared_data_dir):
    export = task.export_onnx

    def export_with_a_wrong_weight(model, path):
        export(model, path)
        graph = onnx.load(str(path))
        bias = next(tensor for tensor in graph.graph.initializer if tensor.name.endswith("classifier.bias"))
        bias.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(bias) + 0.01, bias.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(task, "export_onnx", export_with_a_wrong_weight)
    with pytest.raises(task.ParityError, match=r"parity_tolerance=0\.0001"):
        run_export(student_dir, prepared_data_dir, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the output folder nor the scratch folder beside it


@pytest.mark.parametrize("tolerance", [0.0, -1.0])
def test_non_positive_tolerance_is_refused_before_export(tmp_path, student_dir, prepared_data_dir, tolerance):
    with pytest.raises(KdflowInputError, match="parity_tolerance"):
        run_export(student_dir, prepared_data_dir, tmp_path, parity_tolerance=tolerance)
    assert list(tmp_path.iterdir()) == []


def test_non_empty_output_folder_is_refused(tmp_path, student_dir, prepared_data_dir):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_text("an earlier result")
    with pytest.raises(KdflowInputError, match="not empty"):
        run_export(student_dir, prepared_data_dir, tmp_path)


def test_bert_classifier_exports_from_the_command_line(tmp_path, monkeypatch, tokenizer_dir, prepared_data_dir):
    monkeypatch.setattr(task, "LATENCY_BATCH_SIZES", (2,))  # a size of its own, and quicker
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    bert_dir = save_classifier(BertForSequenceClassification(config), tmp_path / "bert", tokenizer_dir)
    task.main(["--data", str(prepared_data_dir), "--student", bert_dir, "--onnx-model", str(tmp_path / "onnx"),
               "--onnx-metrics", str(tmp_path / "onnx_metrics.json"), "--parity-tolerance", "1e-4",
               "--max-eval-samples", "10", "--max-int8-drop", "0.01"])
    report = json.loads((tmp_path / "onnx" / "onnx_report.json").read_text())
    assert report["rows"] == 10
    assert report["max_abs_diff"] <= 1e-4
    assert set(report["latency_ms"]["onnx_int8"]) == {"2"}


def test_component_runs_under_kfp_local(tmp_path, student_dir, prepared_data_dir):
    import kfp.local
    from kfp import dsl
    from kfp.dsl import Dataset, Model

    from kdflow.components.onnx_export.component import onnx_export

    @dsl.pipeline
    def export_only(data_uri: str, student_uri: str):
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset)
        student = dsl.importer(artifact_uri=student_uri, artifact_class=Model)
        onnx_export(data=data.output, student=student.output, parity_tolerance=1e-4, max_eval_samples=16,
                    max_int8_drop=0.01)

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    export_only(data_uri=str(prepared_data_dir), student_uri=student_dir)
    [onnx_model] = tmp_path.glob("export-only-*/onnx-export/onnx_model")
    [onnx_metrics] = tmp_path.glob("export-only-*/onnx-export/onnx_metrics")
    assert (onnx_model / "model.int8.onnx").exists()
    metrics = json.loads(Path(onnx_metrics).read_text())
    assert metrics["rows"] == 16
    assert metrics["max_abs_diff"] <= 1e-4
    assert metrics["latency_ms"]["onnx_int8"]["1"] > 0
    assert metrics["latency_ms"]["onnx_int8_qdq"]["1"] > 0



def test_a_student_with_its_own_vocabulary_is_measured_on_its_own_token_ids(prepared_data_dir):
    from transformers import BertTokenizer

    data = load_prepared(str(prepared_data_dir))
    vocabulary = data.tokenizer.get_vocab()
    reversed_tokens = sorted(vocabulary, key=vocabulary.get, reverse=True)
    own = BertTokenizer(vocab={token: i for i, token in enumerate(reversed_tokens)})
    test = task.student_test_split(data, own, max_eval_samples=5)
    assert len(test) == 5
    for row in test:
        assert row["input_ids"] == own(row["text"])["input_ids"] != data.tokenizer(row["text"])["input_ids"]
        assert row["length"] == len(row["input_ids"])


def test_the_int8_bound_returns_layers_to_float_until_the_drop_is_within_it(tmp_path, student_dir, prepared_data_dir):
    """Labels that are the fp32 model's own decisions at f32 make its accuracy 1 there, and a bias that puts the
    decision boundary amid the rows' logits lets int8 flip some: unbounded (a drop of up to 1 allowed) the int8 file is
    below 1; with no drop allowed NNCF must keep layers in float until it scores 1 again, and the written file does.

    Held at f32: the tiny student's logits differ by about 1e-4, and bf16, on a CPU that has it, flips a third of
    these rows on its own. That the bound takes the worst of the precisions is tested below."""
    from kdflow.components.onnx_export import int8

    data = load_prepared(str(prepared_data_dir))
    calibration = task.batches_in_order(data.splits["train"].select(range(32)), data.tokenizer, 8)
    plain, validation = student_on_its_boundary(tmp_path, student_dir, data)
    assert int8.accuracy(plain, validation, "f32") == 1.0

    unbounded = int8.quantize_bounded(plain, tmp_path / "unbounded.onnx", calibration, validation, max_drop=0.99,
                                      precisions=["f32"])
    assert unbounded.fp32_accuracy == 1.0 and unbounded.int8_accuracy < 1.0 and unbounded.float_layers == []
    bounded = int8.quantize_bounded(plain, tmp_path / "bounded.onnx", calibration, validation, max_drop=0.0,
                                    precisions=["f32"])
    assert bounded.int8_accuracy == 1.0 and bounded.float_layers
    assert bounded.int8_layers + len(bounded.float_layers) == unbounded.int8_layers
    assert int8.accuracy(tmp_path / "bounded.onnx", validation, "f32") == 1.0
    graph = onnx.load(str(tmp_path / "bounded.onnx")).graph
    made_by = {output: node for node in graph.node for output in node.output}
    for node in (node for node in graph.node if node.name in bounded.float_layers):
        assert not any(made_by.get(name) and made_by[name].op_type == "DequantizeLinear" for name in node.input)


def test_the_int8_bound_counts_the_worst_precision_of_this_cpu(tmp_path, student_dir, prepared_data_dir):
    """What NNCF is given to validate a candidate scores it at every precision and keeps the lowest. On the student of
    the test above, labelled by its f32 decisions, bf16 (on a CPU that has it) scores below 1, and that is the score
    kept; on a CPU without bf16 or f16 kernels there is only f32."""
    from kdflow.components.onnx_export import int8

    plain, validation = student_on_its_boundary(tmp_path, student_dir, load_prepared(str(prepared_data_dir)))
    items = list(zip(validation.batches, validation.labels))
    precisions = int8.inference_precisions()
    assert precisions[0] == "f32" and set(precisions) <= {"f32", "bf16", "f16"}
    each = [int8.scored(plain, items, validation, precision) for precision in precisions]
    worst = int8.worst_scored(plain, items, validation, precisions)
    assert worst == min(each, key=lambda result: result[0]) and len(worst[1]) == len(items)
    assert worst[0] < 1.0 if len(precisions) > 1 else worst[0] == 1.0


def student_on_its_boundary(tmp_path, student_dir, data):
    """The tiny student exported with a bias that puts its decision boundary amid the logits of 64 training rows,
    and those rows labelled by its own decisions on OpenVINO at f32."""
    from kdflow.components.onnx_export import int8

    batches = task.labelled_batches(data.splits["train"].select(range(32, 96)), data.tokenizer, None).batches
    model = task.load_for_export(student_dir)
    logits = np.concatenate([task.torch_runner(model)(batch) for batch in batches])
    with torch.no_grad():
        model.classifier.bias[1] -= float(np.median(logits[:, 1] - logits[:, 0]))
    plain = tmp_path / "plain.onnx"
    task.export_onnx(model, plain)
    compiled = openvino.Core().compile_model(str(plain), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return plain, int8.LabelledBatches(batches=batches, labels=[compiled(batch)[0].argmax(1) for batch in batches],
                                       thresholds=None)


@pytest.mark.slow
def test_bench_int8_scores_the_export_for_each_cpu_kind_on_the_test_rows(tmp_path, exported, prepared_data_dir):
    from kdflow.pipelines import cli
    from kdflow.pipelines.bench import int8 as bench

    output_dir, report = exported
    copy = tmp_path / "copy.int8.qdq.onnx"  # another file of the same model: it must score the same
    copy.write_bytes((output_dir / "model.int8.qdq.onnx").read_bytes())
    assert cli.main(["bench", "int8", "--export", str(output_dir), "--data", str(prepared_data_dir), "--also",
                     str(copy), "--output", str(tmp_path / "int8")]) == 0
    result = json.loads((tmp_path / "int8" / "bench_int8.json").read_text())
    files = [str(output_dir / "model.onnx"), str(output_dir / "model.int8.qdq.onnx"), str(copy)]
    assert result["files"] == files and list(result["accuracy"]) == list(bench.CPU_KINDS)
    for kind, scores in result["accuracy"].items():
        assert result["drop_points"][kind] == {
            name: pytest.approx(100 * (scores[files[0]] - scores[name]), abs=0.01) for name in files[1:]}
        assert scores[files[2]] == scores[files[1]]
    # This CPU as it is scores as the report did at OpenVINO's default precision here, on the same rows.
    default = openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert result["accuracy"]["this CPU"][files[1]] == report.int8_bound.test_accuracy[default]
    assert (tmp_path / "int8" / "bench_int8.md").read_text().startswith(
        "| file | this CPU | AVX512 with VNNI, no bf16 | AVX512, no VNNI | AVX2, no VNNI |")


def test_bench_int8_refuses_a_folder_without_the_export_in_one_sentence(tmp_path, capsys, prepared_data_dir):
    from kdflow.pipelines import cli

    assert cli.main(["bench", "int8", "--export", str(tmp_path), "--data", str(prepared_data_dir), "--output",
                     str(tmp_path / "int8")]) == 2
    error = capsys.readouterr().err
    assert "model.onnx" in error and "give an onnx_export output folder as --export" in error
    assert error.count("\n") == 1 and not (tmp_path / "int8").exists()
