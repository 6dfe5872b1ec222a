#!/usr/bin/env bash
# Rare classes (claim (c) of docs/reproduce.md) under the library's defaults: softmax thresholding against the
# two-head loss at K = 2 on a long-tailed Fashion-MNIST: 50 and 100 times more training images in the largest
# class than in the smallest (about 800 down to 16 or 8), superclass noise 0.2, with and without crop + flip
# augmentation, 5 paired seeds (each its own split, noise draw and order of the classes in the tail), best and
# last checkpoints. "Few-sample classes" are those under 100 training images (about half of them at ratio 100).
# Resumable: run it again after an interruption (benchmarks/results/long_tail.runs.jsonl).
#   bash benchmarks/long_tail.sh            (needs: apt-get install dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
MEAN='model.init_args.loss_options={"bce_reduction":"mean"}'  # the default it measures, named so that it stays measured
exec "${PYTHON:-.venv/bin/python}" -m avgk_lightning.study --config configs/fashion_mnist_two_head.yaml \
    --methods softmax --per-k 2 --seeds 5 --max-epochs 30 --checkpoints best,last \
    --seed-args data.init_args.split_seed,data.init_args.noise_seed,data.init_args.imbalance_seed \
    --variant "two_head=two_head $MEAN" \
    --set data.init_args.noise=0.2 --set 'model.init_args.frequency_boundaries=[100,300]' \
    --setting 'data.init_args.augment=true data.init_args.imbalance=50' \
    --setting 'data.init_args.augment=true data.init_args.imbalance=100' \
    --setting 'data.init_args.augment=false data.init_args.imbalance=50' \
    --setting 'data.init_args.augment=false data.init_args.imbalance=100' \
    --order breadth --out benchmarks/results/long_tail.md "$@"
