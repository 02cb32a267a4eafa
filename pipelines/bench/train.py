"""`kdflow bench train`: the recipe as written against kdflow's distill step, side by side on one machine.

    kdflow bench train --teacher TEACHER_DIR --data IMDB_FOLDER --rows 1000 --max-length 512 --output bench/train

Both sides start from the same fine-tuned teacher and the same student initialisation (teacher layers, seed), and
train on the same number of rows of one pool drawn from the data's train split, one side after the other in each
repeat:

- recipe: recipe.py in one process: the text tokenized with padding, the teacher run at every training step;
- kdflow: the pipeline's own step functions, each in its own process as on a cluster: data_prep, the teacher's
  logits as teacher_eval computes them, and distill with the pipeline's defaults (`--set NAME=VALUE` changes one of
  its settings; a precision set so applies to the teacher's logits too, as the pipeline's `precision` parameter
  does).

Every stage is a child process, so its peak memory (ru_maxrss, from os.wait4) is its own; times are taken inside
the children around the work, so interpreter start and imports count for neither side. Both students are then
scored on the same held-out rows of the test split. Figures are medians over the repeats; the table goes to
stdout and everything to OUTPUT/bench_train.json.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kdflow.components.common.errors import KdflowFailure, KdflowInputError
from kdflow.components.common.settings import PARSERS, from_arguments
from kdflow.components.distill.settings import Settings as DistillSettings

STAGE_MODULE = "kdflow.pipelines.bench.train"
VALIDATION_ROWS = 32  # kdflow's distill evaluates a validation split each epoch; the recipe has none
# Dense bf16/fp16 tensor-core peak of common GPUs, in TFLOP/s, for model FLOPs utilisation; --peak-tflops for others.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "T4": 65.0}


def bench_train(*, teacher: str, data: str, output: str, rows: int = 1000, eval_rows: int = 1000,
                max_length: int = 512, epochs: float = 2.0, recipe_max_steps: int = 0, repeats: int = 3,
                student_layers: int = 3, seed: int = 42, distill_settings: dict | None = None,
                peak_tflops: float = 0.0) -> dict:
    """Runs both sides `repeats` times, scores both students, and writes OUTPUT/bench_train.json.

    With `recipe_max_steps` the recipe trains only that many steps and its training time is extrapolated to the
    full run (for a GPU, where the full recipe would take hours).
    """
    distill_settings = distill_settings or {}
    check_train_inputs(teacher, data, rows, eval_rows, epochs, repeats)
    common = {"teacher": teacher, "rows": rows, "max_length": max_length, "epochs": epochs,
              "student_layers": student_layers, "seed": seed}
    precision = kdflow_distill_settings(common, distill_settings).precision  # its checks run before any work
    work = Path(output)
    common["pool"] = str(write_pool(data, work / "data", rows + VALIDATION_ROWS, eval_rows, seed))
    runs = []
    for repeat in range(repeats):
        print(f"kdflow bench train: repeat {repeat + 1} of {repeats}", flush=True)
        for folder in ("recipe", "kdflow"):
            shutil.rmtree(work / folder, ignore_errors=True)
        recipe = run_stage("recipe", {**common, "student_dir": str(work / "recipe" / "student"),
                                      "max_steps": recipe_max_steps}, work)
        kdflow = {
            "prep": run_stage("prep", {**common, "data_dir": str(work / "kdflow" / "data")}, work),
            "logits": run_stage("logits", {**common, "data_dir": str(work / "kdflow" / "data"),
                                           "logits_dir": str(work / "kdflow" / "logits"),
                                           "precision": precision}, work),
            "distill": run_stage("distill", {**common, "data_dir": str(work / "kdflow" / "data"),
                                             "logits_dir": str(work / "kdflow" / "logits"),
                                             "student_dir": str(work / "kdflow" / "student"),
                                             "settings": distill_settings}, work),
        }
        runs.append({"recipe": side_figures(recipe, rows * epochs), "kdflow": kdflow_figures(kdflow, peak_tflops)})
    accuracy = run_stage("evaluate", {"data_dir": str(work / "kdflow" / "data"),
                                      "students": {"recipe": str(work / "recipe" / "student"),
                                                   "kdflow": str(work / "kdflow" / "student")}}, work)["accuracy"]
    result = summarize(runs, accuracy)
    result["settings"] = {**common, "data": data, "eval_rows": eval_rows,
                          "repeats": repeats, "recipe_max_steps": recipe_max_steps, "distill": distill_settings,
                          "validation_rows": VALIDATION_ROWS}
    result["machine"] = machine()
    (work / "bench_train.json").write_text(json.dumps(result, indent=2))
    print(train_table(result))
    return result


def check_train_inputs(teacher: str, data: str, rows: int, eval_rows: int, epochs: float, repeats: int) -> None:
    """The checks that need no model, so a mistake costs no training."""
    if not Path(teacher, "config.json").is_file():
        raise KdflowInputError(f"--teacher {teacher} is not a model folder with config.json: give a fine-tuned "
                               "teacher's folder (e.g. the teacher_train output of a run).")
    for split in ("train", "test"):
        if not Path(data, f"{split}.parquet").is_file():
            raise KdflowInputError(f"--data {data} has no {split}.parquet: give a folder with train.parquet and "
                                   "test.parquet of text and label, such as the IMDb splits.")
    for name, value in (("--rows", rows), ("--eval-rows", eval_rows), ("--repeats", repeats), ("--epochs", epochs)):
        if value <= 0:
            raise KdflowInputError(f"{name} {value} must be above 0.")


def parse_settings(pairs: list[str]) -> dict:
    """`--set NAME=VALUE` pairs as settings of the distill step, each of its declared type."""
    declared = DistillSettings.__dataclass_fields__
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in declared or not value:
            raise KdflowInputError(f"--set {pair!r} must be NAME=VALUE with NAME a distill setting: "
                                   f"{', '.join(declared)}.")
        try:
            settings[name] = PARSERS[declared[name].type](value)
        except ValueError:
            raise KdflowInputError(f"--set {pair!r}: {value!r} is not a valid {name}.") from None
    return settings


def kdflow_distill_settings(common: dict, overrides: dict) -> DistillSettings:
    """The distill step's settings on kdflow's side: the pipeline's defaults, the bench's sizes, then `overrides`."""
    from kdflow.pipelines.presets import pipeline_parameters

    return from_arguments(DistillSettings, {
        **pipeline_parameters(), "student_spec": "from_teacher", "processes": 1,
        "experiment": "kdflow-bench", "tracked_as": "student", "layers_from": "",  # not logged: report_to is none
        **{name: common[name] for name in ("teacher", "student_layers", "epochs", "seed")}, **overrides,
    })


def write_pool(data: str, folder: Path, train_rows: int, eval_rows: int, seed: int) -> Path:
    """train.parquet and test.parquet of rows drawn (seeded) from the data, the same for every repeat and side."""
    import datasets
    import pyarrow.parquet

    counts = {"train": train_rows, "test": eval_rows}
    for split, count in counts.items():  # from the files' metadata, before anything is read or written
        rows = pyarrow.parquet.ParquetFile(Path(data, f"{split}.parquet")).metadata.num_rows
        if count > rows:
            raise KdflowInputError(f"{data}/{split}.parquet has {rows} rows, fewer than the {count} asked "
                                   "for: lower --rows or --eval-rows.")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for split, count in counts.items():
        source = datasets.Dataset.from_parquet(str(Path(data, f"{split}.parquet")))
        # Shuffled first: dataset files are often sorted by label.
        source.shuffle(seed=seed).select(range(count)).select_columns(["text", "label"]).to_parquet(
            str(folder / f"{split}.parquet"))
    return folder


def run_stage(stage: str, arguments: dict, work: Path) -> dict:
    """Runs one stage in a child process; returns what it reported, with its peak resident memory in MB."""
    result_path = work / f"{stage}-result.json"
    result_path.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-m", STAGE_MODULE, stage, json.dumps(arguments), str(result_path)])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise KdflowFailure(f"the bench's {stage} stage failed (exit status {process.returncode}); its log is above.")
    return {**json.loads(result_path.read_text()), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def side_figures(recipe: dict, full_samples: float) -> dict:
    """The recipe's figures; with a step limit, its training time is extrapolated to all `full_samples`."""
    samples_per_s = recipe["samples"] / recipe["train_s"]
    return {"end_to_end_s": recipe["tokenize_s"] + full_samples / samples_per_s,
            "extrapolated": recipe["samples"] < full_samples, "train_samples_per_s": samples_per_s,
            "peak_rss_mb": recipe["peak_rss_mb"], "gpu_peak_mb": recipe.get("gpu_peak_mb")}


def kdflow_figures(stages: dict, peak_tflops: float) -> dict:
    distill = stages["distill"]
    figures = {"end_to_end_s": sum(stage["seconds"] for stage in stages.values()),
               "stages_s": {name: stage["seconds"] for name, stage in stages.items()},
               "train_samples_per_s": distill["samples"] / distill["train_s"],
               "peak_rss_mb": distill["peak_rss_mb"], "gpu_peak_mb": distill.get("gpu_peak_mb")}
    if distill.get("gpu_name"):
        peak = peak_tflops or next((value for name, value in PEAK_TFLOPS.items() if name in distill["gpu_name"]), 0.0)
        # Model FLOPs of training: 6 per parameter and real (unpadded) token, forward and backward.
        flops = 6 * distill["parameters"] * distill["tokens"]
        figures["mfu"] = flops / distill["train_s"] / (peak * 1e12) if peak else None
        figures["gpu_name"] = distill["gpu_name"]
    return figures


def summarize(runs: list[dict], accuracy: dict) -> dict:
    """Medians over the repeats, the ratios of those medians, and the accuracy of both students."""
    def median(side: str, name: str):
        values = [run[side][name] for run in runs if run[side].get(name) is not None]
        return statistics.median(values) if values else None

    names = ("end_to_end_s", "train_samples_per_s", "peak_rss_mb", "gpu_peak_mb", "mfu")
    recipe = {name: median("recipe", name) for name in names if median("recipe", name) is not None}
    kdflow = {name: median("kdflow", name) for name in names if median("kdflow", name) is not None}
    kdflow["stages_s"] = {stage: statistics.median(run["kdflow"]["stages_s"][stage] for run in runs)
                          for stage in runs[0]["kdflow"]["stages_s"]}
    recipe["extrapolated"] = runs[0]["recipe"]["extrapolated"]
    ratios = {
        "end_to_end_speedup": recipe["end_to_end_s"] / kdflow["end_to_end_s"],
        "train_speedup": kdflow["train_samples_per_s"] / recipe["train_samples_per_s"],
        "peak_memory_ratio": kdflow["peak_rss_mb"] / recipe["peak_rss_mb"],
    }
    if kdflow.get("gpu_peak_mb") and recipe.get("gpu_peak_mb"):
        ratios["gpu_memory_ratio"] = kdflow["gpu_peak_mb"] / recipe["gpu_peak_mb"]
    return {"recipe": recipe, "kdflow": kdflow, "ratios": ratios,
            "accuracy": {**accuracy, "difference_points": 100 * (accuracy["kdflow"] - accuracy["recipe"])},
            "repeats": runs}


def train_table(result: dict) -> str:
    recipe, kdflow, ratios, accuracy = result["recipe"], result["kdflow"], result["ratios"], result["accuracy"]
    extrapolated = " (extrapolated)" if recipe["extrapolated"] else ""
    lines = [f"{'':<28}{'recipe':>12}{'kdflow':>12}{'ratio':>10}",
             f"{'end to end, s' + extrapolated:<28}{recipe['end_to_end_s']:>12.1f}{kdflow['end_to_end_s']:>12.1f}"
             f"{ratios['end_to_end_speedup']:>9.2f}x",
             f"{'training samples/s':<28}{recipe['train_samples_per_s']:>12.2f}{kdflow['train_samples_per_s']:>12.2f}"
             f"{ratios['train_speedup']:>9.2f}x",
             f"{'peak memory, MB':<28}{recipe['peak_rss_mb']:>12.0f}{kdflow['peak_rss_mb']:>12.0f}"
             f"{ratios['peak_memory_ratio']:>10.2f}",
             f"{'held-out accuracy':<28}{accuracy['recipe']:>12.4f}{accuracy['kdflow']:>12.4f}"
             f"{accuracy['difference_points']:>+9.2f}pt"]
    if "gpu_memory_ratio" in ratios:
        lines.append(f"{'GPU peak memory, MB':<28}{recipe['gpu_peak_mb']:>12.0f}{kdflow['gpu_peak_mb']:>12.0f}"
                     f"{ratios['gpu_memory_ratio']:>10.2f}")
    if kdflow.get("mfu") is not None:
        lines.append(f"kdflow distill model FLOPs utilisation: {100 * kdflow['mfu']:.1f}%")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in kdflow["stages_s"].items())
    lines.append(f"kdflow stages: {stages}; medians of {len(result['repeats'])} repeats")
    return "\n".join(lines)


def machine() -> dict:
    """What the figures depend on: the CPU (and whether it has bf16 kernels, which precision=auto uses), the GPU."""
    import torch

    return {"processor": cpu_name(), "cpus": os.cpu_count(), "cpu_bf16": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


# The stages, each run by `python -m kdflow.pipelines.bench.train STAGE ARGUMENTS_JSON RESULT_PATH`.

def stage_recipe(arguments: dict) -> dict:
    import datasets
    from transformers import set_seed

    from kdflow.components.common import models

    from . import recipe

    started = time.perf_counter()
    set_seed(arguments["seed"])
    teacher = models.load_classifier(arguments["teacher"], 2, fine_tuned=True)
    student = models.student_from_teacher(teacher, arguments["student_layers"], recipe.ATTENTION_DROPOUT)
    tokenizer = models.load_tokenizer(arguments["teacher"])
    pool = datasets.Dataset.from_parquet(str(Path(arguments["pool"], "train.parquet")))
    figures = recipe.train(pool.select(range(arguments["rows"])), teacher, student, tokenizer,
                           arguments["student_dir"], max_length=arguments["max_length"], epochs=arguments["epochs"],
                           max_steps=arguments["max_steps"], seed=arguments["seed"])
    return {**figures, "seconds": time.perf_counter() - started, **gpu_figures()}


def stage_prep(arguments: dict) -> dict:
    from kdflow.components.data_prep import task as data_prep
    from kdflow.pipelines.presets import pipeline_parameters

    started = time.perf_counter()
    pool_rows = arguments["rows"] + VALIDATION_ROWS
    settings = from_arguments(data_prep.Settings, {
        **pipeline_parameters(), "source": arguments["pool"], "teacher": arguments["teacher"],
        "max_length": arguments["max_length"], "max_train_samples": arguments["rows"],
        "validation_fraction": VALIDATION_ROWS / pool_rows, "seed": arguments["seed"],
    })
    data_prep.run(settings, data_prep.Files(data=arguments["data_dir"], report=arguments["data_dir"] + "-report.md"))
    return {"seconds": time.perf_counter() - started}


def stage_logits(arguments: dict) -> dict:
    from kdflow.components.common import models
    from kdflow.components.common.data import load_prepared
    from kdflow.components.common.inference import teacher_logits

    started = time.perf_counter()
    data = load_prepared(arguments["data_dir"])
    teacher = models.load_classifier(arguments["teacher"], data.num_labels, fine_tuned=True)
    teacher_logits(teacher, data, precision=arguments["precision"]).save_to_disk(arguments["logits_dir"])
    return {"seconds": time.perf_counter() - started}


def stage_distill(arguments: dict) -> dict:
    from kdflow.components.common.data import load_prepared
    from kdflow.components.distill import task as distill

    started = time.perf_counter()
    files = distill.Files(data=arguments["data_dir"], teacher_logits=arguments["logits_dir"],
                          student=arguments["student_dir"], training_curves=arguments["student_dir"] + "-curves.html")
    figures = distill.run(kdflow_distill_settings(arguments, arguments["settings"]), files)
    seconds = time.perf_counter() - started
    train = load_prepared(arguments["data_dir"]).splits["train"]
    return {"seconds": seconds, "train_s": figures["train_runtime"], "samples": len(train) * arguments["epochs"],
            "tokens": sum(train["length"]) * arguments["epochs"],
            "parameters": parameters_beyond_embeddings(arguments["student_dir"]), **gpu_figures()}


def parameters_beyond_embeddings(model_dir: str) -> int:
    """The parameters model FLOPs count: all but the embedding tables, which are looked up, not multiplied."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    embeddings = model.get_input_embeddings().weight.numel()
    return sum(parameter.numel() for parameter in model.parameters()) - embeddings


def gpu_figures() -> dict:
    """The GPU's name and this process's peak GPU memory in MB; nothing on a CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_name": torch.cuda.get_device_name(), "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20}


def stage_evaluate(arguments: dict) -> dict:
    from transformers import AutoModelForSequenceClassification

    from kdflow.components.common.data import load_prepared
    from kdflow.components.common.inference import evaluate_on_test

    data = load_prepared(arguments["data_dir"])
    return {"accuracy": {
        side: evaluate_on_test(AutoModelForSequenceClassification.from_pretrained(folder), data.tokenizer,
                               data)["accuracy"]
        for side, folder in arguments["students"].items()
    }}


STAGES = {"recipe": stage_recipe, "prep": stage_prep, "logits": stage_logits, "distill": stage_distill,
          "evaluate": stage_evaluate}


def main(argv: list[str] | None = None) -> None:
    stage, arguments, result_path = argv or sys.argv[1:]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = STAGES[stage](json.loads(arguments))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
