#!/usr/bin/env bash
# The per-K noise sweep of docs/reproduce.md under the library's defaults: softmax thresholding against the
# two-head loss (one model per K = 1.5, 2, 3), Fashion-MNIST with crop + flip augmentation (the recipe users
# run), superclass noise 0 / 0.2 / 0.4 / 0.6, 5 paired seeds (each its own split and noise draw), tested at the
# best validation epoch and at the last one. The tables give the multi-label head and the head chosen on
# validation. Resumable: run it again after an interruption and the runs already in
# benchmarks/results/noise_sweep.runs.jsonl are not repeated; the tables are rewritten after every run.
#   bash benchmarks/noise_sweep.sh            (needs: apt-get install dataset-fashion-mnist)
#   python benchmarks/figures.py noise benchmarks/results/noise_sweep.json noise.png --head chosen
set -euo pipefail
cd "$(dirname "$0")/.."
MEAN='model.init_args.loss_options={"bce_reduction":"mean"}'  # the default it measures, named so that it stays measured
exec "${PYTHON:-.venv/bin/python}" -m avgk_lightning.study --config configs/fashion_mnist_two_head.yaml \
    --methods softmax --per-k 1.5,2,3 --seeds 5 --max-epochs 30 --checkpoints best,last \
    --seed-args data.init_args.split_seed,data.init_args.noise_seed,data.init_args.imbalance_seed \
    --variant "two_head=two_head $MEAN" \
    --set data.init_args.augment=true \
    --sweep data.init_args.noise=0,0.2,0.4,0.6 \
    --order breadth --out benchmarks/results/noise_sweep.md "$@"
