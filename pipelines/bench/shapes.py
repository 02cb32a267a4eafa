"""`kdflow bench shapes`: a teacher and a published student of the recipe's shapes, for `kdflow bench serve`.

    kdflow bench shapes --data IMDB_FOLDER --output bench/shapes
    kdflow bench serve --model bench/shapes/published/recipe-shapes --teacher bench/shapes/teacher --data IMDB_FOLDER

The recipe's fine-tuned BERT teacher and DistilBERT student cannot be loaded offline, but their shapes can, and
serving speed does not depend on the weights: a BERT-base-shaped teacher (transformers' `BertConfig()` defaults, 12
layers of width 768) and a DistilBERT-base-shaped student (`DistilBertConfig()`, 6 layers of width 768), random
weights, two labels, the minilm preset's tokenizer (BERT-base uncased vocabulary). The pipeline's own steps, with the
minilm preset's parameters, prepare the data, score both models, and export and publish the student as a run would
(onnx_export's int8 file and text model). Their accuracies are at chance: only the serve bench's speed figures mean
anything.
"""

from pathlib import Path

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.results import OnnxReport
from kdflow.pipelines.bench.quality import settings_of, step_values

MODEL_NAME = "recipe-shapes"
MODEL_VERSION = "1"
# transformers' defaults of these families are BERT-base and DistilBERT-base.
RECIPE_CONFIGS = {"teacher": {"model_type": "bert"}, "student": {"model_type": "distilbert"}}


def bench_shapes(*, data: str, output: str, rows: int = 2000, eval_rows: int = 500,
                 configs: dict[str, dict] = RECIPE_CONFIGS) -> Path:
    """Writes OUTPUT/teacher and OUTPUT/published/recipe-shapes (version 1); returns the published model's folder.

    `rows` training rows of `data` calibrate the student's int8 file (and 2% of them bound its accuracy drop), and
    onnx_export measures it on `eval_rows` test rows. `configs`: the teacher's and the student's configuration
    values (model_type and what differs from its defaults).
    """
    from kdflow.pipelines.presets import resolve

    if not Path(data, "train.parquet").exists():
        raise KdflowInputError(f"--data {data} holds no train.parquet: give a folder with the train and test splits "
                               "(text, label), e.g. the IMDb splits.")
    work = Path(output)
    if work.exists() and any(work.iterdir()):
        raise KdflowInputError(f"--output {output} is not empty: give a new or empty folder.")
    teacher, student, published = work / "teacher", work / "student", work / "published"
    parameters = resolve("minilm", {
        "teacher": str(teacher), "train_teacher": "false", "pretrained_teacher": "", "student": str(student),
        "student_layers": "0", "max_train_samples": str(rows), "max_eval_samples": str(eval_rows),
        "publish_uri": str(published), "model_name": MODEL_NAME, "model_version": MODEL_VERSION,
    }, data=data)
    save_random_models(configs, teacher, student)
    steps = step_values(parameters)
    prepared, teacher_metrics, student_metrics, onnx_model = (
        str(work / name) for name in ("data", "teacher_metrics.json", "student_metrics.json", "onnx_model"))
    run_step("data_prep", steps["data_prep"], data=prepared, report=str(work / "data_report.md"))
    # publish reads the teacher's test scores; its logits, which distill would read, are not needed.
    run_step("teacher_eval", steps["teacher_eval"], {"cache_logits": False}, data=prepared,
             teacher_logits=str(work / "teacher_logits"), teacher_metrics=teacher_metrics,
             teacher_confusion=str(work / "teacher_confusion.json"))
    run_step("student_eval", steps["student_eval"], data=prepared, student=str(student),
             teacher_metrics=teacher_metrics, student_metrics=student_metrics,
             student_confusion=str(work / "student_confusion.json"))
    run_step("onnx_export", steps["onnx_export"], data=prepared, student=str(student), onnx_model=onnx_model,
             onnx_metrics=str(work / "onnx_metrics.json"))
    run_step("publish", steps["publish"], data=prepared, student=str(student), onnx_model=onnx_model,
             teacher_metrics=teacher_metrics, student_metrics=student_metrics,
             publish_report=str(work / "publish_report.md"))
    model = published / MODEL_NAME
    bound = OnnxReport.read_folder(onnx_model).int8_bound
    print(f"kdflow bench shapes: published {model} ({bound.int8_layers} layers in int8, {len(bound.float_layers)} "
          f"in float); its teacher is {teacher}. Next: kdflow bench serve --model {model} --teacher {teacher} "
          f"--data {data}", flush=True)
    return model


def save_random_models(configs: dict[str, dict], teacher: Path, student: Path) -> None:
    """The teacher and the student of `configs`, random weights and two labels, each with the minilm preset's
    tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from kdflow.components.common.models import checkpoint_path, load_tokenizer
    from kdflow.pipelines.presets import PRESETS

    tokenizer = load_tokenizer(str(checkpoint_path(PRESETS["minilm"]["teacher"])))
    torch.manual_seed(0)
    for folder, values in ((teacher, configs["teacher"]), (student, configs["student"])):
        values = dict(values)
        config = AutoConfig.for_model(values.pop("model_type"), **values, num_labels=2,
                                      vocab_size=tokenizer.vocab_size)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)


def run_step(step: str, values: dict, changes: dict | None = None, **files: str) -> None:
    """One pipeline step run here: its settings the pipeline's `values` with `changes`, its files `files`."""
    module, settings = settings_of(step, values, **(changes or {}))
    print(f"kdflow bench shapes: {step}", flush=True)
    module.run(settings, module.Files(**files))
