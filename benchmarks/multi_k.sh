#!/usr/bin/env bash
# One training for several K against one model per K (docs/reproduce.md, "One training for several K"): on the
# Fashion-MNIST recipe of configs/fashion_mnist_two_head.yaml, noise 0.2 and 0.4, 3 paired seeds: softmax
# thresholding (one model, every K), the two-head loss trained once per K = 1.5, 2, 3, and one model with a
# multi-label head per K (k: [1.5, 2, 3]), tested at the best validation epoch and at the last one. Resumable: run
# it again after an interruption and the runs in benchmarks/results/multi_k.runs.jsonl are not repeated.
#   bash benchmarks/multi_k.sh            (needs: apt-get install dataset-fashion-mnist)
set -euo pipefail
cd "$(dirname "$0")/.."
SUM='model.init_args.loss_options={"bce_reduction":"sum"}'  # the BCE reduction it was measured with
exec "${PYTHON:-.venv/bin/python}" -m avgk_lightning.study --config configs/fashion_mnist_two_head.yaml \
    --methods softmax --per-k 1.5,2,3 --seeds 3 --max-epochs 30 --checkpoints best,last \
    --seed-args data.init_args.split_seed,data.init_args.noise_seed,data.init_args.imbalance_seed \
    --variant "two_head=two_head $SUM" \
    --variant "multi_k=two_head model.init_args.k=[1.5,2,3] $SUM" \
    --sweep data.init_args.noise=0.2,0.4 \
    --order breadth --out benchmarks/results/multi_k.md "$@"
