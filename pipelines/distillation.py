"""The kdflow pipeline, read top to bottom as its DAG:

    data_prep -> teacher_train (or teacher_check) -> teacher_eval -> distill -> student_eval ─┬─> report
                                                                                 -> onnx_export ──┴─> publish
                                                                                                          └─> deploy
      (baselines: compare_baseline set, the pretrained one also pretrained_teacher; publish: gate passed,
       publish_uri set; deploy: deploy set and the student promoted: KServe serves PUBLISH_URI/MODEL_NAME)

Compiled with `--teacher-shards N` (N > 1), the teacher's logits on the training data come from N teacher_shard
tasks side by side (dsl.ParallelFor) merged in row order by merge_logits, and teacher_eval only evaluates; with
`--nproc N`, distill runs in N processes under torchrun and requests N GPUs.

Parameter defaults are the `imdb` preset: the notebook recipe (BERT teacher -> DistilBERT student on IMDb,
T = 2, alpha = 0.5, 2 epochs, batch 8), so the compiled YAML runs the recipe unless told otherwise.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Metrics, Model
from kfp.dsl.graph_component import GraphComponent

from kdflow.components.common.images import image_name
from kdflow.components.data_prep.component import data_prep
from kdflow.components.deploy.component import deploy as deploy_step  # `deploy` is the pipeline's switch
from kdflow.components.distill.component import distill
from kdflow.components.merge_logits.component import merge_logits
from kdflow.components.onnx_export.component import onnx_export
from kdflow.components.publish.component import publish
from kdflow.components.report.component import report
from kdflow.components.student_eval.component import student_eval
from kdflow.components.teacher_check.component import teacher_check
from kdflow.components.teacher_eval.component import teacher_eval
from kdflow.components.teacher_shard.component import teacher_shard
from kdflow.components.teacher_train.component import teacher_train

from .platform import Platform

PIPELINE_NAME = "kdflow-distillation"
# The parameter every step depends on: a new value reads the source again and takes no step from the cache.
DATA_VERSION = "data_version"
# The baselines learn from the labels alone: no intermediate-layer term.
NO_INTERMEDIATE_TERMS = dict(hidden_cosine_weight=0.0, hidden_mse_weight=0.0, embedding_mse_weight=0.0,
                             attention_kl_weight=0.0)
DESCRIPTION = "Distills a fine-tuned text classifier into a smaller student, evaluates both and exports the student to ONNX."

Outputs = NamedTuple(
    "Outputs",
    data_report=Markdown,
    teacher_metrics=Metrics,
    student=Model,
    training_curves=HTML,
    student_metrics=Metrics,
    onnx_model=Model,
    onnx_metrics=Metrics,
    summary=str,
    quality_report_uri=str,
)


def sharded_teacher_logits(platform: Platform) -> GraphComponent:
    """A sub-pipeline: the teacher's logits in `platform.teacher_shards` teacher_shard tasks side by side, merged in
    row order.

    A sub-pipeline so that its loop reads the teacher's URI as an input of its own: kfp.local 2.17 gives the tasks of
    a loop the loop item in place of any value that comes from another task's output, as the URI does.
    """
    shards = platform.teacher_shards

    @dsl.pipeline(name="sharded-teacher-logits")
    def sharded(data: Dataset, teacher: str, precision: str) -> Dataset:
        with dsl.ParallelFor(list(range(shards))) as shard:
            logits = platform.on_gpu(teacher_shard(data=data, teacher=teacher, shard=shard, shards=shards,
                                                   precision=precision))
        merged = platform.on_cpu(merge_logits(shards=dsl.Collected(logits.outputs["teacher_logits"])))
        return merged.outputs["teacher_logits"]

    return sharded


def build_pipeline(platform: Platform = Platform()) -> GraphComponent:
    """The pipeline, its tasks placed by `platform`: images, GPUs, credentials and scale-out."""
    sharded_logits = sharded_teacher_logits(platform) if platform.teacher_shards > 1 else None

    @dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)
    def distillation_pipeline(
        source: str = "imdb",
        text_column: str = "text",
        label_column: str = "label",
        num_labels: int = 0,
        problem_type: str = "single_label",
        decision_threshold: float = 0.0,
        tokenizer: str = "",
        max_length: int = 512,
        truncation_side: str = "right",
        max_train_samples: int = 0,
        max_eval_samples: int = 0,
        validation_fraction: float = 0.1,
        unlabeled_source: str = "",
        max_unlabeled_samples: int = 0,
        teacher: str = "",
        train_teacher: bool = False,
        teacher_epochs: float = 2.0,
        teacher_batch_size: int = 16,
        teacher_learning_rate: float = 5e-5,
        pretrained_teacher: str = "",
        student: str = "distilbert-base-uncased",
        student_layers: int = 0,
        student_attention_dropout: float = 0.0,
        distill_mode: str = "cached",
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden_cosine_weight: float = 0.0,
        hidden_mse_weight: float = 0.0,
        embedding_mse_weight: float = 0.0,
        attention_kl_weight: float = 0.0,
        layer_map: str = "",
        hidden_projection: bool = True,
        epochs: float = 2.0,
        batch_size: int = 8,
        learning_rate: float = 5e-5,
        gradient_accumulation_steps: int = 1,
        precision: str = "auto",
        compare_baseline: bool = False,
        min_retention: float = 0.97,
        # A model at chance on balanced binary data scores 0.5: the gate asks for 0.55 there.
        min_accuracy_margin: float = 0.05,
        parity_tolerance: float = 1e-4,
        max_int8_drop: float = 0.01,
        publish_uri: str = "",
        model_name: str = "kdflow-student",
        model_version: str = "",
        promotion_tolerance: float = 0.0,
        deploy: bool = False,
        deploy_namespace: str = "",
        # The CPU steps' image, of the registry compiled for: the server is the kdflow that published the model.
        serving_image: str = image_name("cpu", platform.image_registry),
        serving_service_account: str = "kdflow-serving",
        seed: int = 42,
        checkpoint_steps: int = 500,
        checkpoint_uri: str = "",
        report_to: str = "none",
        tracking_uri: str = "",
        data_version: str = "",
    ) -> Outputs:
        prepared = platform.on_cpu(data_prep(
            source=source, text_column=text_column, label_column=label_column, num_labels=num_labels,
            problem_type=problem_type, decision_threshold=decision_threshold, tokenizer=tokenizer, teacher=teacher,
            max_length=max_length, truncation_side=truncation_side,
            max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
            validation_fraction=validation_fraction, unlabeled_source=unlabeled_source,
            max_unlabeled_samples=max_unlabeled_samples, seed=seed, data_version=data_version,
        ))
        data = prepared.outputs["data"]
        # One experiment per model; each training logs under the run's name, which the platform gives the GPU steps
        # as an environment variable (common/training.py: RUN_NAME_ENV).
        tracking = dict(report_to=report_to, tracking_uri=tracking_uri, experiment=model_name)

        with dsl.If(train_teacher == True):  # noqa: E712 (a KFP condition, not a Python comparison)
            trained = platform.on_gpu(teacher_train(
                data=data, teacher=teacher, epochs=teacher_epochs, batch_size=teacher_batch_size,
                learning_rate=teacher_learning_rate, precision=precision, seed=seed,
                checkpoint_steps=checkpoint_steps, checkpoint_uri=checkpoint_uri, **tracking,
            ))
        with dsl.Else():
            checked = platform.on_cpu(teacher_check(data=data, teacher=teacher))
        teacher_uri = dsl.OneOf(trained.outputs["teacher_uri"], checked.outputs["teacher_uri"])

        sharded = sharded_logits is not None
        evaluated_teacher = platform.on_gpu(teacher_eval(data=data, teacher=teacher_uri, cache_logits=not sharded,
                                                         precision=precision))
        teacher_logits = evaluated_teacher.outputs["teacher_logits"]
        if sharded:  # the teacher's logits on the training data, side by side, merged back in row order
            teacher_logits = sharded_logits(data=data, teacher=teacher_uri, precision=precision).output

        training = dict(
            data=data, teacher_logits=teacher_logits, teacher=teacher_uri, processes=platform.processes,
            student_spec=student, student_layers=student_layers, student_attention_dropout=student_attention_dropout,
            distill_mode=distill_mode, temperature=temperature, layer_map=layer_map,
            hidden_projection=hidden_projection, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
            gradient_accumulation_steps=gradient_accumulation_steps, precision=precision, seed=seed,
            checkpoint_steps=checkpoint_steps, checkpoint_uri=checkpoint_uri, **tracking,
        )
        distilled = platform.on_gpu(distill(
            alpha=alpha, hidden_cosine_weight=hidden_cosine_weight, hidden_mse_weight=hidden_mse_weight,
            embedding_mse_weight=embedding_mse_weight, attention_kl_weight=attention_kl_weight, layers_from="",
            tracked_as="student", **training,
        ), platform.processes)

        evaluated_student = platform.on_cpu(student_eval(
            data=data, student=distilled.outputs["student"],
            teacher_metrics=evaluated_teacher.outputs["teacher_metrics"], min_retention=min_retention,
            min_accuracy_margin=min_accuracy_margin,
        ))

        exported = platform.on_cpu(onnx_export(data=data, student=distilled.outputs["student"],
                                               parity_tolerance=parity_tolerance, max_eval_samples=max_eval_samples,
                                               max_int8_drop=max_int8_drop))

        scores = dict(
            teacher_metrics=evaluated_teacher.outputs["teacher_metrics"],
            student_metrics=evaluated_student.outputs["student_metrics"], student=distilled.outputs["student"],
            onnx_model=exported.outputs["onnx_model"],
        )
        def hard_label_baseline(name: str, layers_from):
            """The student's architecture, data and budget on the labels alone (alpha 1, no intermediate term), made
            from the layers of `layers_from` (empty: the fine-tuned teacher's): what the teacher adds. Its test
            metrics."""
            trained = platform.on_gpu(distill(alpha=1.0, **NO_INTERMEDIATE_TERMS, layers_from=layers_from,
                                              tracked_as=name.replace("-", "_"), **training),
                                      platform.processes).set_display_name(name)
            return platform.on_cpu(student_eval(
                data=data, student=trained.outputs["student"],
                teacher_metrics=evaluated_teacher.outputs["teacher_metrics"], min_retention=min_retention,
                min_accuracy_margin=min_accuracy_margin,
            )).set_display_name(f"{name}-eval").outputs["student_metrics"]

        with dsl.If(compare_baseline == False):  # noqa: E712 (a KFP condition, not a Python comparison)
            reported = platform.on_cpu(report(**scores))
        with dsl.Elif(pretrained_teacher == ""):
            reported_with_baseline = platform.on_cpu(report(
                baseline_metrics=hard_label_baseline("baseline", ""), **scores))
        with dsl.Else():  # both baselines: from the fine-tuned teacher's layers and from the pretrained checkpoint's
            reported_with_baselines = platform.on_cpu(report(
                baseline_metrics=hard_label_baseline("baseline", ""),
                pretrained_baseline_metrics=hard_label_baseline("pretrained-baseline", pretrained_teacher),
                **scores))

        # The parameter's condition outside, the task output's inside: kfp.local resolves only this nesting.
        with dsl.If(publish_uri != ""):
            with dsl.If(evaluated_student.outputs["passed"] == True):  # noqa: E712
                published = platform.on_cpu(publish(
                    data=prepared.outputs["data"], student=distilled.outputs["student"],
                    onnx_model=exported.outputs["onnx_model"],
                    teacher_metrics=evaluated_teacher.outputs["teacher_metrics"],
                    student_metrics=evaluated_student.outputs["student_metrics"], publish_uri=publish_uri,
                    model_name=model_name, model_version=model_version, promotion_tolerance=promotion_tolerance,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ))
                with dsl.If(deploy == True):  # noqa: E712
                    with dsl.If(published.outputs["promoted"] == True):  # noqa: E712
                        platform.on_cpu(deploy_step(
                            publish_uri=publish_uri, model_name=model_name, deploy_namespace=deploy_namespace,
                            serving_image=serving_image, serving_service_account=serving_service_account,
                        ))

        return Outputs(
            data_report=prepared.outputs["report"],
            teacher_metrics=evaluated_teacher.outputs["teacher_metrics"],
            student=distilled.outputs["student"],
            training_curves=distilled.outputs["training_curves"],
            student_metrics=evaluated_student.outputs["student_metrics"],
            onnx_model=exported.outputs["onnx_model"],
            onnx_metrics=exported.outputs["onnx_metrics"],
            summary=dsl.OneOf(reported.outputs["summary"], reported_with_baseline.outputs["summary"],
                              reported_with_baselines.outputs["summary"]),
            quality_report_uri=dsl.OneOf(reported.outputs["quality_report_uri"],
                                         reported_with_baseline.outputs["quality_report_uri"],
                                         reported_with_baselines.outputs["quality_report_uri"]),
        )

    return distillation_pipeline


# The pipeline as compiled into distillation.yaml: every task on this platform's defaults.
distillation_pipeline = build_pipeline()
