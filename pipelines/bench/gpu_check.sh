#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and kdflow installed (pip install -e ".[minilm]" after the CUDA
# build of PyTorch), the recipe for a fixed number of steps against kdflow's distill step over the whole IMDb train
# split for one epoch, both in half precision (the recipe fp16 as written, kdflow precision=auto: bf16 where the
# GPU has it). Prints samples/s, the end-to-end ratio (the recipe's time extrapolated from its steps), GPU memory
# and the distill step's model FLOPs utilisation; everything lands in OUTPUT/train/bench_train.json.
#
#   pipelines/bench/gpu_check.sh IMDB_FOLDER [OUTPUT] [TEACHER_DIR]
#
# IMDB_FOLDER holds train.parquet and test.parquet. Without TEACHER_DIR, all-MiniLM-L6-v2 is fine-tuned first
# (one epoch on the whole train split, with kdflow's own teacher_train step).
set -euo pipefail
data=${1:?usage: gpu_check.sh IMDB_FOLDER [OUTPUT] [TEACHER_DIR]}
output=${2:-bench/gpu}
teacher=${3:-}
recipe_steps=${RECIPE_STEPS:-300}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
mkdir -p "$output"
if [ -z "$teacher" ]; then
    teacher=$output/teacher
    # Every setting is given: a step's command line has no defaults (they are the pipeline's parameters).
    python -m kdflow.components.data_prep.task --source "$data" --text-column text --label-column label \
        --num-labels 2 --problem-type single_label --decision-threshold 0 --tokenizer "" \
        --teacher sentence-transformers/all-MiniLM-L6-v2 --max-length 512 \
        --truncation-side right --max-train-samples 0 --max-eval-samples 0 --validation-fraction 0.02 \
        --unlabeled-source "" --max-unlabeled-samples 0 --seed 42 \
        --data-version "" --data "$output/teacher-data" --report "$output/teacher-data.md"
    python -m kdflow.components.teacher_train.task --data "$output/teacher-data" \
        --teacher sentence-transformers/all-MiniLM-L6-v2 --epochs 1 --batch-size 32 --learning-rate 1e-4 \
        --precision auto --seed 42 --checkpoint-steps 0 --checkpoint-uri "" --report-to none --tracking-uri "" \
        --experiment kdflow-bench --teacher-model "$teacher" --training-curves "$output/teacher-curves.html"
fi

# The whole train split but the 32 rows kdflow keeps for validation, 2,000 held-out test rows.
kdflow bench train --teacher "$teacher" --data "$data" --rows 24968 --eval-rows 2000 --max-length 512 --epochs 1 \
    --recipe-max-steps "$recipe_steps" --repeats 1 --output "$output/train"
