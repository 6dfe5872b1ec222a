"""What the two-head pseudo-labels hold, epoch by epoch, on noisy Fashion-MNIST: a table of the mechanism.

Usage:
    python benchmarks/pseudo_labels.py [--noise 0.4] [--k 2] [--max-epochs 30] [--seed 0] [--out FILE.md]

Trains one two-head model with ``configs/fashion_mnist_two_head.yaml`` (``--set KEY=VALUE`` for any other
override) and, after every epoch, scores the whole training split in evaluation mode. Since the data
module knows which training labels the noise changed, it can say, for the images whose label is wrong:

* how often the softmax head's top-1 is the wrong (noisy) label: the network has memorised it;
* how often the pseudo-labels (the softmax scores thresholded at the λ_pl the epoch trained with) hold
  the image's true class: what the multi-label head is taught beyond the given label;
* how often the sets of each head, at the λ_K calibrated on validation that epoch, hold the true class.

It prints one row per epoch with the validation average-K accuracy of both heads beside them (how fast
each head learns), and the training top-1 accuracy on the noisy labels.

The gradient columns say which term of the loss drives the shared backbone: on a probe of the first
`--probe` training images (unaugmented, in evaluation mode so that no batch-norm statistic moves), the
cross-entropy term and the weighted multi-label term of the module's own loss (its reduction and `mu`)
are each differentiated with respect to every backbone weight: the norms of the two gradients, the
share of the multi-label term (its norm over the sum of both) and the cosine between them. With
``--method softmax`` the loss has no multi-label term and those columns are empty: its rows say how the
baseline fits the same data.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

from avgk_lightning.functional import batch_pseudo_label_threshold, pseudo_labels
from avgk_lightning.naming import format_k, monitor_name
from avgk_lightning.study.training import build_run


class PseudoLabelAudit(Callback):
    """After every training epoch: what the pseudo-labels and the sets hold for the images with a wrong label."""

    def __init__(self, probe: int = 2048) -> None:
        self.rows: list[dict[str, float]] = []
        self.probe = probe
        self._threshold: float | None = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        rule = pl_module.pseudo_label_rule
        self._threshold = None if rule is None else rule.threshold  # None: the batch rule (first epoch)

    @staticmethod
    def gradient_shares(pl_module: Any, images: torch.Tensor, target: torch.Tensor, labels: torch.Tensor | None):
        """Norms of the backbone gradients of the cross-entropy and of the weighted multi-label term, their cosine."""
        parameters = [p for p in pl_module.network.backbone.parameters() if p.requires_grad]
        with torch.enable_grad():
            softmax_logits, multilabel_logits = pl_module.network(images)
            terms = pl_module.loss(softmax_logits, multilabel_logits, target, labels)
            gradients = {}
            for name in ("cross_entropy", "binary_cross_entropy"):
                if name not in terms:
                    continue
                weight = terms["loss"].new_tensor(1.0 if name == "cross_entropy" else pl_module.loss.mu)
                grads = torch.autograd.grad(weight * terms[name], parameters, retain_graph=True, allow_unused=True)
                gradients[name] = torch.cat([g.flatten() for g in grads if g is not None])
        ce = gradients["cross_entropy"]
        bce = gradients.get("binary_cross_entropy")
        if bce is None:
            return {"grad_ce": float(ce.norm()), "grad_bce": float("nan"), "bce_share": 0.0, "cosine": float("nan")}
        return {
            "grad_ce": float(ce.norm()),
            "grad_bce": float(bce.norm()),
            "bce_share": float(bce.norm() / (ce.norm() + bce.norm())),
            "cosine": float(torch.nn.functional.cosine_similarity(ce, bce, dim=0)),
        }

    @torch.no_grad()
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        data = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        scores = {"softmax": [], "multilabel": []}
        for start in range(0, len(data.train_dataset), 1024):
            images = data.prepare_images(data.train_dataset.images[start : start + 1024].to(pl_module.device))
            for head, head_scores in pl_module.network.scores(images).items():
                scores[head].append(head_scores)
        pl_module.train(was_training)
        probs, sigmoid = torch.cat(scores["softmax"]), torch.cat(scores["multilabel"])
        noisy, clean = data.train_dataset.labels.to(probs.device), data.clean_train_labels.to(probs.device)
        wrong = noisy != clean
        rows = torch.arange(len(clean), device=probs.device)
        calibrated = {head: values.get(pl_module.k) for head, values in pl_module.calibration.average_k.items()}
        metrics = trainer.callback_metrics
        name = monitor_name(pl_module.k).removeprefix("val/")
        nan = float("nan")
        row = {
            "epoch": trainer.current_epoch,
            "train_top1_noisy": float((probs.argmax(1) == noisy).float().mean()),
            "wrong_memorised": float((probs.argmax(1) == noisy)[wrong].float().mean()),
            "wrong_softmax_set_has_true": float((probs[rows, clean] >= calibrated["softmax"])[wrong].float().mean()),
            "wrong_pseudo_has_true": nan,
            "pseudo_set_size": nan,
            "wrong_multilabel_set_has_true": nan,
        }
        labels = None
        if pl_module.pseudo_label_rule is not None:
            threshold = (
                batch_pseudo_label_threshold(probs, noisy, pl_module.k)
                if self._threshold is None
                else torch.tensor(self._threshold)
            )
            labels = pseudo_labels(probs, noisy, threshold)
            row["wrong_pseudo_has_true"] = float(labels[rows, clean][wrong].float().mean())
            row["pseudo_set_size"] = float(labels.sum(1).float().mean())
            row["wrong_multilabel_set_has_true"] = float(
                (sigmoid[rows, clean] >= calibrated["multilabel"])[wrong].float().mean()
            )
        if "multilabel" in calibrated:
            row["val_multilabel"] = float(metrics.get(f"val/{name}", nan))
            row["val_softmax"] = float(metrics.get(f"val/softmax/{name}", nan))
        else:  # the softmax method: its set head is the softmax head
            row["val_multilabel"], row["val_softmax"] = nan, float(metrics.get(f"val/{name}", nan))
        probe = slice(0, self.probe)
        pl_module.eval()
        images = data.prepare_images(data.train_dataset.images[probe].to(pl_module.device))
        row.update(self.gradient_shares(pl_module, images, noisy[probe], None if labels is None else labels[probe]))
        pl_module.train(was_training)
        self.rows.append(row)


COLUMNS = (
    ("epoch", "epoch"),
    ("train_top1_noisy", "train top-1 on noisy labels"),
    ("wrong_memorised", "wrong labels memorised (softmax top-1 = wrong label)"),
    ("wrong_pseudo_has_true", "pseudo-labels hold the true class"),
    ("pseudo_set_size", "pseudo-label set size"),
    ("wrong_softmax_set_has_true", "softmax-head set holds the true class"),
    ("wrong_multilabel_set_has_true", "multi-label-head set holds the true class"),
    ("val_multilabel", "val avg-K acc, multi-label head"),
    ("val_softmax", "val avg-K acc, softmax head"),
    ("grad_ce", "backbone gradient norm, CE"),
    ("grad_bce", "backbone gradient norm, mu·BCE"),
    ("bce_share", "BCE share of the backbone gradient"),
    ("cosine", "cosine(CE, BCE gradients)"),
)


def table(rows: Sequence[dict[str, float]]) -> str:
    """The Markdown table of the audit rows."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for row in rows:
        cells = [str(int(row["epoch"]))] + ["" if math.isnan(row[key]) else f"{row[key]:.4f}" for key, _ in COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--k", type=float, default=2.0)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="two_head", help="two_head, or softmax for the baseline's rows")
    parser.add_argument("--probe", type=int, default=2048, help="training images of the gradient probe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a CLI override")
    parser.add_argument("--out", default=None, help="Markdown file to write (never overwritten)")
    args = parser.parse_args(argv)
    if args.out is not None and Path(args.out).exists():
        parser.error(f"--out {args.out} exists: pass a new file name (results are never overwritten)")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="avgk-pseudo-labels-") as root:
        overrides = [
            f"data.init_args.noise={args.noise}",
            f"model.init_args.k={args.k}",
            f"model.init_args.method={args.method}",
            *(f"data.init_args.{key}={args.seed}" for key in ("split_seed", "noise_seed", "imbalance_seed")),
            *args.set,
        ]
        cli = build_run("configs/fashion_mnist_two_head.yaml", args.seed, args.max_epochs, root, overrides)
        audit = PseudoLabelAudit(args.probe)
        cli.trainer.callbacks.append(audit)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    command = "python benchmarks/pseudo_labels.py " + " ".join(
        shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:])
    )
    text = (
        f"Command: `{command.strip()}`\n\nMethod {args.method}, K={format_k(args.k)}, noise {args.noise} "
        f"({len(cli.datamodule.noisy_indices)} of {len(cli.datamodule.train_dataset)} training labels wrong), "
        f"seed {args.seed} (also the split and noise seed), overrides {args.set or 'none'}. Columns 3-4 and 6-7 are "
        "fractions of the images whose training label is wrong.\n\n" + table(audit.rows) + "\n"
    )
    print(text)
    if args.out is not None:
        with open(args.out, "x") as handle:
            handle.write(text)
    return text


if __name__ == "__main__":
    main()
