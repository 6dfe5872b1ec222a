#!/usr/bin/env bash
# The weakly supervised baselines of the paper (AN, AN-LS, WAN, EPR, ROLE, EM: one sigmoid head, the
# observed label as the single positive, their official code's reduction: the loss averaged over batch
# and classes) against softmax thresholding and the two-head loss, on the base Fashion-MNIST recipe
# (configs/fashion_mnist_two_head.yaml, noise 0.4, K = 2, 3 paired seeds, best and last checkpoints); every
# method is paired against softmax and against the two-head defaults (their head chosen on validation).
# Resumable: run it again after an interruption (benchmarks/results/fashion_mnist_baselines.runs.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
MEAN='model.init_args.loss_options={"bce_reduction":"mean"}'  # the two-head default it measures, named so that it stays measured
exec "${PYTHON:-.venv/bin/python}" -m avgk_lightning.study --config configs/fashion_mnist_two_head.yaml \
    --methods softmax,an,an_ls,wan,epr,role,em --per-k 2 --seeds 3 --max-epochs 30 \
    --checkpoints best,last \
    --seed-args data.init_args.split_seed,data.init_args.noise_seed,data.init_args.imbalance_seed \
    --variant "two_head=two_head $MEAN" \
    --set data.init_args.noise=0.4 --against two_head:chosen \
    --out benchmarks/results/fashion_mnist_baselines.md "$@"
