#!/usr/bin/env bash
# The mechanism runs of docs/reproduce.md: benchmarks/pseudo_labels.py (pseudo-labels, memorisation, each
# head's validation accuracy and the gradient shares, epoch by epoch) for softmax thresholding and the
# two-head loss with the BCE averaged and summed (noise 0.4, K = 2, seed 0), in three recipes: SmallVGG
# without and with crop + flip augmentation, and the small ResNet (batch norm) with augmentation.
# Resumable: a run whose table exists is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for recipe in augment_false augment_true small_resnet_augment_true; do
    case $recipe in
        augment_false) recipe_args=(--set data.init_args.augment=false) ;;
        augment_true) recipe_args=(--set data.init_args.augment=true) ;;
        small_resnet_augment_true)
            recipe_args=(--set data.init_args.augment=true --set model.init_args.backbone=small_resnet) ;;
    esac
    for variant in softmax mean sum; do
        out="benchmarks/results/mechanism_${recipe}_${variant}.md"
        [ -e "$out" ] && continue
        case $variant in
            softmax) args=(--method softmax) ;;
            mean) args=(--set 'model.init_args.loss_options={"bce_reduction":"mean"}') ;;
            sum) args=(--set 'model.init_args.loss_options={"bce_reduction":"sum"}') ;;
        esac
        "$PY" benchmarks/pseudo_labels.py --noise 0.4 --k 2 --seed 0 "${recipe_args[@]}" "${args[@]}" --out "$out"
    done
done
