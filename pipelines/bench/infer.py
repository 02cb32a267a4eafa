"""`kdflow bench infer`: how fast and how accurately the teacher and the student serve the same real texts.

    kdflow bench infer --teacher TEACHER_DIR --student STUDENT_DIR --data IMDB_FOLDER --rows 512 --output bench/infer

Five servings, on the same rows drawn (seeded) from the test split, each read by the model's own tokenizer at
--max-length: the teacher in PyTorch fp32, the student in PyTorch fp32, and the student's three ONNX files as
onnx_export writes them: fp32 and dynamic int8 on ONNX Runtime, static QDQ int8 on OpenVINO (calibrated on up
to 64 further test rows of the draw, its drop bounded by the pipeline's max_int8_drop on up to 500 of them, none of
which are measured). Throughput is rows per second with the rows in their
drawn order, as requests arrive, so each batch pads to its longest row: at batch 32 over all rows, at batch 1 over
the first --batch-1-rows. Every pass gives each serving its turn, and a figure is the median over --repeats passes.
Accuracy is over all rows. The table goes to stdout and everything to OUTPUT/bench_infer.json.
"""

import json
import statistics
import time
from pathlib import Path

import numpy as np

from kdflow.components.common.errors import KdflowInputError

from .train import machine

BATCH_SIZES = (1, 32)


def bench_infer(*, teacher: str, student: str, data: str, output: str, rows: int = 512, batch_1_rows: int = 64,
                max_length: int = 512, repeats: int = 3, seed: int = 42) -> dict:
    import datasets
    from transformers import AutoModelForSequenceClassification

    from kdflow.components.common import models
    from kdflow.components.common.data import retokenize
    from kdflow.components.common.inference import batches_in_order, footprint, torch_runner
    from kdflow.components.common.results import EXPORT_KINDS
    from kdflow.components.onnx_export.task import (
        CALIBRATION_BATCH_SIZE, CALIBRATION_ROWS, VALIDATION_ROWS, export_runner, labelled_batches, load_for_export,
        write_onnx_models,
    )
    from kdflow.pipelines.presets import pipeline_parameters

    for role, folder in (("--teacher", teacher), ("--student", student)):
        if not Path(folder, "config.json").is_file():
            raise KdflowInputError(f"{role} {folder} is not a model folder with config.json: give a trained "
                                   "model's folder (for the student, e.g. the kdflow student of `kdflow bench train`).")
    if not Path(data, "test.parquet").is_file():
        raise KdflowInputError(f"--data {data} has no test.parquet: give a folder with test.parquet of text and label.")
    if rows <= 0 or batch_1_rows <= 0 or repeats <= 0:
        raise KdflowInputError("--rows, --batch-1-rows and --repeats must be above 0.")
    if batch_1_rows > rows:
        raise KdflowInputError(f"--batch-1-rows {batch_1_rows} is more than --rows {rows}: lower it.")
    test = datasets.Dataset.from_parquet(str(Path(data, "test.parquet")))
    if rows >= len(test):
        raise KdflowInputError(f"--rows {rows} leaves none of the {len(test)} rows of {data}/test.parquet to calibrate "
                               "and validate the static int8 model on: lower it.")
    drawn = test.shuffle(seed=seed).select_columns(["text", "label"])
    texts = drawn.select(range(rows))

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    teacher_model = AutoModelForSequenceClassification.from_pretrained(teacher)
    student_model = AutoModelForSequenceClassification.from_pretrained(student)
    tokenizers = {"teacher": models.load_tokenizer(teacher), "student": models.load_tokenizer(student)}
    further = retokenize(drawn.select(range(rows, min(rows + VALIDATION_ROWS, len(test)))), tokenizers["student"],
                         max_length)
    calibration = batches_in_order(further.select(range(min(CALIBRATION_ROWS, len(further)))), tokenizers["student"],
                                   CALIBRATION_BATCH_SIZE)
    validation = labelled_batches(further, tokenizers["student"], None)
    write_onnx_models(load_for_export(student), out, calibration, validation, pipeline_parameters()["max_int8_drop"])
    splits = {name: retokenize(texts, tokenizer, max_length) for name, tokenizer in tokenizers.items()}
    servings = {  # name -> (runner, what runs it, whose tokenizer, size on disk in MB)
        "teacher_pytorch": (torch_runner(teacher_model), "PyTorch", "teacher",
                            footprint(teacher_model, teacher)["size_mb"]),
        "student_pytorch": (torch_runner(student_model), "PyTorch", "student",
                            footprint(student_model, student)["size_mb"]),
        **{f"student_{kind.key}": (export_runner(kind, out), kind.runtime, "student",
                                   (out / kind.file).stat().st_size / 1e6) for kind in EXPORT_KINDS},
    }
    # The rows in their drawn order, as requests arrive, so each batch pads to its longest row (not timed).
    batches = {(reader, size): batches_in_order(splits[reader].select(range(rows if size > 1 else batch_1_rows)),
                                                tokenizers[reader], size)
               for reader in splits for size in BATCH_SIZES}
    timings = {(name, size): [] for name in servings for size in BATCH_SIZES}
    predictions = {}
    for repeat in range(repeats):
        print(f"kdflow bench infer: pass {repeat + 1} of {repeats}", flush=True)
        for name, (runner, _, reader, _) in servings.items():
            for size in BATCH_SIZES:
                seconds, logits = timed_pass(runner, batches[reader, size])
                timings[name, size].append(seconds)
                if size == max(BATCH_SIZES):
                    predictions[name] = logits.argmax(axis=-1)

    labels = np.asarray(texts["label"])
    result = {"servings": {
        name: {"runtime": runtime, "accuracy": float((predictions[name] == labels).mean()), "size_mb": size_mb,
               **{f"batch_{size}_rows_per_s": (rows if size > 1 else batch_1_rows) / statistics.median(timings[name, size])
                  for size in BATCH_SIZES}}
        for name, (_, runtime, _, size_mb) in servings.items()
    }}
    figures = result["servings"]
    result["ratios"] = {
        f"{name}_vs_teacher_batch_{size}": figures[name][f"batch_{size}_rows_per_s"]
        / figures["teacher_pytorch"][f"batch_{size}_rows_per_s"]
        for name in figures if name != "teacher_pytorch" for size in BATCH_SIZES
    }
    result["int8_minus_fp32_accuracy_points"] = {
        name: 100 * (figures[name]["accuracy"] - figures["student_pytorch"]["accuracy"])
        for name in (f"student_{kind.key}" for kind in EXPORT_KINDS if kind.name.startswith("int8"))}
    result["settings"] = {"teacher": teacher, "student": student, "data": data, "rows": rows,
                          "batch_1_rows": batch_1_rows, "max_length": max_length, "repeats": repeats, "seed": seed}
    result["machine"] = machine()
    (out / "bench_infer.json").write_text(json.dumps(result, indent=2))
    print(infer_table(result))
    return result


def timed_pass(runner, batches: list[dict]):
    """Seconds to run every batch (after one untimed warm-up batch), and the logits of all of them."""
    runner(batches[0])
    started = time.perf_counter()
    logits = [runner(batch) for batch in batches]
    return time.perf_counter() - started, np.concatenate(logits)


def infer_table(result: dict) -> str:
    lines = [f"{'serving':<23}{'runtime':<14}{'accuracy':>9}{'size MB':>9}{'rows/s b1':>11}{'rows/s b32':>11}"
             f"{'x teacher b32':>15}"]
    for name, figures in result["servings"].items():
        ratio = result["ratios"].get(f"{name}_vs_teacher_batch_32", 1.0)
        lines.append(f"{name:<23}{figures['runtime']:<14}{figures['accuracy']:>9.4f}{figures['size_mb']:>9.1f}"
                     f"{figures['batch_1_rows_per_s']:>11.1f}{figures['batch_32_rows_per_s']:>11.1f}{ratio:>14.2f}x")
    differences = ", ".join(f"{name} {points:+.2f}"
                            for name, points in result["int8_minus_fp32_accuracy_points"].items())
    lines.append(f"int8 - fp32 student accuracy, points: {differences}; medians of {result['settings']['repeats']} "
                 "passes")
    return "\n".join(lines)
