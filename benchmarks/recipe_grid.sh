#!/usr/bin/env bash
# The recipe grid of docs/reproduce.md: softmax thresholding against the two-head loss (bce_sum: the BCE summed
# over the C = 10 classes with mu 1; bce_mean: averaged, i.e. mu 1/C in effect; bce_sqrt_c: summed with mu
# 1/sqrt(C); each names its reduction, whatever the library's default) on
# Fashion-MNIST, noise 0.4, K = 2, 3 paired seeds, each factor of the recipe varied in its own setting. Resumable: run it again after an interruption and the runs already in
# benchmarks/results/recipe_grid.runs.jsonl are not repeated; the tables are rewritten after every run.
#   bash benchmarks/recipe_grid.sh            (needs: apt-get install dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
OPT=model.init_args.optimizer.init_args
SUM='model.init_args.loss_options={"bce_reduction":"sum"}'
exec "${PYTHON:-.venv/bin/python}" -m avgk_lightning.study --config configs/fashion_mnist_two_head.yaml \
    --methods softmax --per-k 2 --seeds 3 --max-epochs 30 --checkpoints best,last \
    --seed-args data.init_args.split_seed,data.init_args.noise_seed,data.init_args.imbalance_seed \
    --set data.init_args.noise=0.4 \
    --variant "bce_sum=two_head $SUM" \
    --variant 'bce_mean=two_head model.init_args.loss_options={"bce_reduction":"mean"}' \
    --variant "bce_sqrt_c=two_head model.init_args.mu=0.3162 $SUM" \
    --setting 'data.init_args.augment=true' \
    --setting 'data.init_args.augment=false' \
    --setting 'data.init_args.augment=true model.init_args.backbone=small_resnet' \
    --setting "data.init_args.augment=true $OPT.weight_decay=5e-4" \
    --setting 'data.init_args.augment=true data.init_args.noise=0.2' \
    --setting 'data.init_args.augment=true data.init_args.noise=0.5' \
    --setting "data.init_args.augment=true $OPT.nesterov=false" \
    --setting 'data.init_args.augment=true data.init_args.train_size=2000' \
    --setting 'data.init_args.augment=true trainer.max_epochs=10' \
    --setting 'data.init_args.augment=false model.init_args.backbone=small_resnet' \
    --setting 'data.init_args.augment=false data.init_args.train_size=2000' \
    --setting "data.init_args.augment=true model.init_args.backbone=small_resnet $OPT.weight_decay=5e-4" \
    --setting 'data.init_args.augment=true model.init_args.backbone_options={"hidden":32}' \
    --setting 'data.init_args.augment=true trainer.max_epochs=60' \
    --setting 'data.init_args.augment=true data.init_args.train_size=30000' \
    --setting 'data.init_args.augment=false data.init_args.train_size=30000' \
    --order breadth --out benchmarks/results/recipe_grid.md "$@"
