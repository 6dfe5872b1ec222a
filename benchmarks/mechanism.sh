#!/usr/bin/env bash
# The mechanism runs of docs/reproduce.md: benchmarks/pseudo_labels.py (pseudo-labels, memorisation, each
# head's validation accuracy and the gradient shares, epoch by epoch) for softmax thresholding and the
# two-head loss with the BCE averaged and summed, without and with crop + flip augmentation (noise 0.4,
# K = 2, seed 0). Resumable: a run whose table exists is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for augment in false true; do
    for variant in softmax mean sum; do
        out="benchmarks/results/mechanism_augment_${augment}_${variant}.md"
        [ -e "$out" ] && continue
        case $variant in
            softmax) args=(--method softmax) ;;
            mean) args=(--set 'model.init_args.loss_options={"bce_reduction":"mean"}') ;;
            sum) args=(--set 'model.init_args.loss_options={"bce_reduction":"sum"}') ;;
        esac
        "$PY" benchmarks/pseudo_labels.py --noise 0.4 --k 2 --seed 0 --set "data.init_args.augment=$augment" \
            "${args[@]}" --out "$out"
    done
done
