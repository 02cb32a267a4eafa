"""`kdflow bench quality`: what each addition to the recipe's loss brings, against the baselines a user would train
instead, measured side by side in one run.

    kdflow bench quality --data IMDB_FOLDER --output bench/quality [--rows 2000 --eval-rows 5000 --seeds 3] \
        [--unlabeled-rows 4000] [--configurations a,b,unlabeled] [--set NAME=VALUE ...]

The data and the teacher are prepared once, by the pipeline's own steps with the parameters of `--preset` (minilm by
default; `--set` overrides pipeline parameters): data_prep (with the unlabeled reviews of `--data`'s unsup.* file),
teacher_train, teacher_eval (the teacher's test scores and its logits on the labeled and unlabeled rows). Then every
configuration trains once per seed, each from the same initialisation as the pipeline's distill task it stands for,
and is scored on the same test rows:

- the two hard-label baselines of `compare_baseline` (from the pretrained checkpoint's layers, from the fine-tuned
  teacher's layers);
- the recipe's logit loss; plus the intermediate-layer terms; plus the unlabeled rows; both.

`--configurations` trains a subset of them by key (CONFIGURATIONS), for a question that needs fewer than all six.

A line per training shows where it stands. Every finished training is kept in OUTPUT/bench_quality.json at once,
so a bench cut off and started again with the same arguments goes on where it stopped; the table of means and
standard deviations goes to stdout and OUTPUT/bench_quality.md.
"""

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdflow.components.common.errors import KdflowInputError
from kdflow.pipelines.bench.train import machine

# The intermediate terms the bench tries: TinyBERT's hidden-state MSE and the attention maps' KL, per matched layer.
INTERMEDIATE = {"distill_mode": "online", "hidden_mse_weight": 1.0, "attention_kl_weight": 1.0}


@dataclass(frozen=True)
class Configuration:
    key: str  # what --configurations calls it
    name: str
    training: str  # the pipeline's distill task it stands for, by its tracking name (distill.settings.TRAININGS)
    settings: dict = field(default_factory=dict)  # distill settings changed from that task's
    unlabeled: bool = False  # trains on the unlabeled rows too


CONFIGURATIONS = (
    Configuration("a", "baseline: pretrained layers, labels only", "pretrained_baseline"),
    Configuration("b", "baseline: fine-tuned teacher's layers, labels only", "baseline"),
    Configuration("logits", "logits (the recipe)", "student"),
    Configuration("intermediate", "logits + intermediate", "student", INTERMEDIATE),
    Configuration("unlabeled", "logits + unlabeled", "student", unlabeled=True),
    Configuration("intermediate+unlabeled", "logits + intermediate + unlabeled", "student", INTERMEDIATE,
                  unlabeled=True),
)


def bench_quality(*, data: str, output: str, rows: int = 2000, eval_rows: int = 5000, seeds: int = 3,
                  unlabeled_rows: int = 4000, configurations: tuple[str, ...] = (), preset: str = "minilm",
                  overrides: dict[str, str] | None = None) -> dict:
    """Prepares data and teacher once, trains each of `configurations` (keys; all when empty) `seeds` times, writes
    OUTPUT/bench_quality.json and .md; returns the result."""
    from kdflow.pipelines.presets import resolve

    check_quality_inputs(data, rows, eval_rows, seeds, unlabeled_rows)
    chosen = chosen_configurations(configurations)
    parameters = resolve(preset, {
        "max_train_samples": str(rows), "max_eval_samples": str(eval_rows), "unlabeled_source": data,
        "max_unlabeled_samples": str(unlabeled_rows), "compare_baseline": "true", **(overrides or {}),
    }, data=data)
    work = Path(output)
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "bench_quality.json"
    # What the trainings depend on; the seeds are not in it: a bench started again with more (or fewer) seeds keeps
    # the trainings on record and adds the missing ones.
    settings = {"data": data, "preset": preset, "rows": rows, "eval_rows": eval_rows,
                "unlabeled_rows": unlabeled_rows, "parameters": parameters}
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if result.get("settings") != settings:  # another bench in this folder: start afresh
        result = {"settings": settings, "trainings": []}
    result["seeds"] = seeds
    steps = step_values(parameters)
    prepared = prepare(steps, work, result)
    result_path.write_text(json.dumps(result, indent=2))

    total = len(chosen) * seeds
    for index, (seed, configuration) in enumerate(
            (parameters["seed"] + offset, configuration) for offset in range(seeds) for configuration in chosen):
        done = [t for t in result["trainings"] if (t["configuration"], t["seed"]) == (configuration.name, seed)]
        if not done:
            training = train_and_score(configuration, seed, steps, prepared, work)
            result["trainings"].append(training)
            result_path.write_text(json.dumps(result, indent=2))
        training = done[0] if done else result["trainings"][-1]
        print(f"kdflow bench quality: [{index + 1}/{total}] {configuration.name}, seed {seed}: accuracy "
              f"{training['accuracy']:.4f} ({training['train_s']:.0f} s)", flush=True)
    result["table"] = summarize(result)
    result["machine"] = machine()
    result_path.write_text(json.dumps(result, indent=2))
    (work / "bench_quality.md").write_text(quality_table(result))
    print(quality_table(result))
    return result


def check_quality_inputs(data: str, rows: int, eval_rows: int, seeds: int, unlabeled_rows: int) -> None:
    """The checks that need no model, so a mistake costs no training."""
    for split in ("train", "test"):
        if not Path(data, f"{split}.parquet").is_file():
            raise KdflowInputError(f"--data {data} has no {split}.parquet: give a folder with train.parquet, "
                                   "test.parquet and unsup.parquet, such as the IMDb splits.")
    if not any(Path(data).glob("unsup.*")) and not any(Path(data).glob("unlabeled.*")):
        raise KdflowInputError(f"--data {data} has no unsup.* or unlabeled.* file of unlabeled texts: add one (parquet, "
                               "jsonl or csv with a text column).")
    for name, value in (("--rows", rows), ("--eval-rows", eval_rows), ("--seeds", seeds),
                        ("--unlabeled-rows", unlabeled_rows)):
        if value <= 0:
            raise KdflowInputError(f"{name} {value} must be above 0.")


def chosen_configurations(keys: tuple[str, ...]) -> tuple[Configuration, ...]:
    known = {configuration.key: configuration for configuration in CONFIGURATIONS}
    for key in keys:
        if key not in known:
            raise KdflowInputError(f"--configurations names {key!r}, which is none of the bench's: use a "
                                   f"comma-separated list of {', '.join(known)}.")
    return tuple(known[key] for key in keys) if keys else CONFIGURATIONS


def step_values(parameters: dict) -> dict[str, dict]:
    """The settings the pipeline gives each step for `parameters`, by step name, and each distill task's by its
    tracking name."""
    from kdflow.pipelines.distillation import build_pipeline
    from kdflow.pipelines.presets import step_settings

    steps = {}
    for step, values, _ in step_settings(build_pipeline(), parameters):
        steps[values["tracked_as"] if step == "distill" else step] = values
    return steps


def settings_of(step: str, values: dict, **changes):
    from importlib import import_module

    from kdflow.components.common.settings import from_arguments

    module = import_module(f"kdflow.components.{step}.task")
    declared = module.Settings.__dataclass_fields__
    return module, from_arguments(module.Settings, {name: value for name, value in {**values, **changes}.items()
                                                    if name in declared})


@dataclass(frozen=True)
class Prepared:
    data: str  # with the unlabeled split
    labeled_data: str  # the same without it
    teacher: str
    logits: str


def prepare(steps: dict, work: Path, result: dict) -> Prepared:
    """data_prep, teacher_train and teacher_eval, each once (kept from an earlier start of the same bench)."""
    from kdflow.components.common.data import UNLABELED_SPLIT, load_prepared, save_prepared

    prepared = Prepared(str(work / "data"), str(work / "data-labeled"), str(work / "teacher"), str(work / "logits"))
    if "teacher" in result:
        return prepared
    for folder in (prepared.data, prepared.labeled_data, prepared.teacher, prepared.logits):
        shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    module, settings = settings_of("data_prep", steps["data_prep"])
    info = module.run(settings, module.Files(data=prepared.data, report=str(work / "data_report.md")))
    data = load_prepared(prepared.data)
    labeled = {name: split for name, split in data.splits.items() if name != UNLABELED_SPLIT}
    save_prepared(prepared.labeled_data, type(data.splits)(labeled), data.tokenizer, data.info)
    print(f"kdflow bench quality: data prepared: {info['rows']}", flush=True)

    module, settings = settings_of("teacher_train", steps["teacher_train"])
    module.run(settings, module.Files(data=prepared.data, teacher_model=prepared.teacher,
                                      training_curves=str(work / "teacher_curves.html")))
    module, settings = settings_of("teacher_eval", steps["teacher_eval"], teacher=prepared.teacher)
    module.run(settings, module.Files(data=prepared.data, teacher_logits=prepared.logits,
                                      teacher_metrics=str(work / "teacher_metrics.json"),
                                      teacher_confusion=str(work / "teacher_confusion.json")))
    teacher = json.loads((work / "teacher_metrics.json").read_text())
    result["teacher"] = {"accuracy": teacher["accuracy"], "macro_f1": teacher["macro_f1"],
                         "prepare_s": round(time.monotonic() - started, 1)}
    print(f"kdflow bench quality: teacher accuracy {teacher['accuracy']:.4f}", flush=True)
    return prepared


def train_and_score(configuration: Configuration, seed: int, steps: dict, prepared: Prepared, work: Path) -> dict:
    """One training of `configuration` with `seed`, scored on the test rows; its student is not kept."""
    from kdflow.components.common import models
    from kdflow.components.common.data import load_prepared
    from kdflow.components.common.inference import INFERENCE_BATCH_SIZE, evaluate_on_test

    data = prepared.data if configuration.unlabeled else prepared.labeled_data
    module, settings = settings_of("distill", steps[configuration.training], teacher=prepared.teacher, seed=seed,
                                   checkpoint_steps=0, **configuration.settings)
    student = work / "student"
    shutil.rmtree(student, ignore_errors=True)
    figures = module.run(settings, module.Files(data=data, teacher_logits=prepared.logits, student=str(student),
                                                training_curves=str(work / "student_curves.html")))
    test_data = load_prepared(data)
    model = models.load_classifier(str(student), test_data.num_labels, role="student")
    scores = evaluate_on_test(model, models.load_tokenizer(str(student)), test_data, INFERENCE_BATCH_SIZE)
    shutil.rmtree(student)
    return {"configuration": configuration.name, "seed": seed, "accuracy": scores["accuracy"],
            "macro_f1": scores["macro_f1"], "train_s": round(figures["train_runtime"], 1),
            "labeled_rows": figures["labeled_rows"], "unlabeled_rows": figures["unlabeled_rows"]}


def summarize(result: dict) -> list[dict]:
    """Per configuration: accuracy mean and standard deviation over the seeds, mean training time, rows used; and
    its margin over each baseline with twice their pooled standard deviation, the bar a margin must clear."""
    rows = []
    seeds = range(result["settings"]["parameters"]["seed"], result["settings"]["parameters"]["seed"] + result["seeds"])
    for configuration in CONFIGURATIONS:
        runs = [t for t in result["trainings"] if t["configuration"] == configuration.name and t["seed"] in seeds]
        if not runs:
            continue
        accuracies = [t["accuracy"] for t in runs]
        rows.append({"configuration": configuration.name, "seeds": len(runs),
                     "accuracy_mean": statistics.mean(accuracies),
                     "accuracy_std": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
                     "retention": statistics.mean(accuracies) / result["teacher"]["accuracy"],
                     "train_s_mean": statistics.mean(t["train_s"] for t in runs),
                     "labeled_rows": runs[0]["labeled_rows"], "unlabeled_rows": runs[0]["unlabeled_rows"]})
    baselines = {row["configuration"]: row for row in rows if row["configuration"].startswith("baseline")}
    for row in rows:
        # With one seed on either side there is no spread to measure a margin against: None.
        row["over_baselines"] = {
            name: {"margin": row["accuracy_mean"] - baseline["accuracy_mean"],
                   "twice_pooled_std": 2 * ((row["accuracy_std"] ** 2 + baseline["accuracy_std"] ** 2) / 2) ** 0.5
                   if min(row["seeds"], baseline["seeds"]) > 1 else None}
            for name, baseline in baselines.items() if name != row["configuration"]}
    return rows


def quality_table(result: dict) -> str:
    baselines = [row["configuration"] for row in result["table"] if row["configuration"].startswith("baseline")]
    short = {name: f"vs baseline {letter}" for letter, name in zip("ab", baselines)}
    header = ["configuration", "accuracy", "retention", *short.values(), "train (s)", "rows (labeled + unlabeled)"]
    named = "; ".join(f"{letter}: {name}" for letter, name in zip("ab", baselines))
    lines = [f"Teacher: accuracy {result['teacher']['accuracy']:.4f}. Baselines {named}. Accuracy is the mean ± "
             "standard deviation over the seeds; a margin over a baseline counts when it clears twice their pooled "
             "standard deviation (in brackets).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in result["table"]:
        seeds = f"{row['seeds']} seed{'s' if row['seeds'] > 1 else ''}"
        accuracy = (f"{row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} ({seeds})" if row["seeds"] > 1
                    else f"{row['accuracy_mean']:.4f} ({seeds})")
        margins = []
        for name in short:
            over = row["over_baselines"].get(name)
            bar = "" if not over or over["twice_pooled_std"] is None else f" ({over['twice_pooled_std']:.4f})"
            margins.append(f"{over['margin']:+.4f}{bar}" if over else "")
        lines.append("| " + " | ".join([
            row["configuration"], accuracy, f"{row['retention']:.3f}", *margins, f"{row['train_s_mean']:.0f}",
            f"{row['labeled_rows']} + {row['unlabeled_rows']}"]) + " |")
    return "\n".join(lines) + "\n"
