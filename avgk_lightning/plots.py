"""Test-time figures (PNG in the run directory, and images in W&B) and the callback that makes them.

* ``set_size_histogram.png``: the distribution of set sizes at the model's K, one bar series per head;
* ``accuracy_against_k.png``: average-K accuracy against K for each head and the Bayes oracle, with
  top-K accuracy (sets of exactly K) beside them;
* ``per_class_accuracy_against_frequency.png``: each class's average-K accuracy at the model's K against
  its number of training images (log scale), per head, with the frequency-group boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from avgk_lightning.atomic import atomic_path
from avgk_lightning.naming import HEAD_TITLES, format_k, prefix, report_heads
from avgk_lightning.paths import free_path

__all__ = ["TestPlots", "accuracy_against_k", "per_class_accuracy_against_frequency", "set_size_histogram"]

_COLOURS = {"multilabel": "tab:blue", "softmax": "tab:orange", "oracle": "tab:green"}


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    return figure, figure.add_subplot()


def set_size_histogram(histograms: Mapping[str, Tensor], k: float):
    """Bars of the fraction of samples per set size (0, 1, ...) for each head, at one K.

    Example:
        >>> figure = set_size_histogram({"multilabel": torch.tensor([1, 5, 3, 1])}, k=1.5)
        >>> figure.axes[0].get_xlabel()
        'set size'
    """
    figure, axes = _figure()
    largest = max(int(torch.nonzero(counts).max()) for counts in histograms.values())
    width = 0.8 / len(histograms)
    for position, (head, counts) in enumerate(histograms.items()):
        fractions = counts[: largest + 1].double() / counts.sum()
        sizes = torch.arange(largest + 1).double() + (position - (len(histograms) - 1) / 2) * width
        axes.bar(
            sizes.tolist(), fractions.tolist(), width=width, label=HEAD_TITLES.get(head, head), color=_COLOURS.get(head)
        )
    axes.axvline(k, color="grey", linestyle="--", linewidth=1, label=f"K = {format_k(k)} (the mean)")
    axes.set_xlabel("set size")
    axes.set_ylabel("fraction of test samples")
    axes.set_title(f"Set sizes at K = {format_k(k)} (test)")
    axes.set_xticks(range(largest + 1) if largest <= 20 else range(0, largest + 1, max(1, largest // 10)))
    axes.legend()
    return figure


def accuracy_against_k(results: Mapping[str, float], stage: str, ks: Sequence[float], set_head: str):
    """Average-K accuracy against K per head (and the oracle), with top-K accuracy dashed.

    Example:
        >>> figure = accuracy_against_k({"test/avgk_acc@1": 0.5, "test/avgk_acc@2": 0.7}, "test", [1, 2], "softmax")
        >>> figure.axes[0].get_ylabel()
        'test accuracy'
    """
    figure, axes = _figure()
    for head in report_heads(set_head):
        start = prefix(stage, head, set_head)
        for metric, style, label in (("avgk_acc", "-o", "average-K"), ("topk_acc", "--s", "top-K")):
            points = [
                (k, results[f"{start}{metric}@{format_k(k)}"])
                for k in ks
                if f"{start}{metric}@{format_k(k)}" in results
            ]
            if points:
                axes.plot(
                    *zip(*points), style, color=_COLOURS.get(head), label=f"{label}, {HEAD_TITLES.get(head, head)}"
                )
    axes.set_xscale("log")
    axes.set_xticks(list(ks), [format_k(k) for k in ks])
    axes.minorticks_off()
    axes.set_xlabel("K (mean set size)")
    axes.set_ylabel(f"{stage} accuracy")
    axes.set_title("Average-K and top-K accuracy against K")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def per_class_accuracy_against_frequency(
    accuracies: Mapping[str, Tensor], class_counts: Sequence[int], k: float, boundaries: Sequence[int] = (20, 100)
):
    """Per-class average-K accuracy at one K against the class's training images (log scale), per head.

    Example:
        >>> figure = per_class_accuracy_against_frequency({"softmax": torch.tensor([0.5, 1.0])}, [3, 300], k=2)
        >>> figure.axes[0].get_xscale()
        'log'
    """
    figure, axes = _figure()
    counts = torch.as_tensor(list(class_counts)).double().clamp_min(1)
    for head, accuracy in accuracies.items():
        present = ~torch.isnan(accuracy)
        axes.scatter(
            counts[present].tolist(),
            accuracy[present].tolist(),
            s=14,
            alpha=0.7,
            color=_COLOURS.get(head),
            label=HEAD_TITLES.get(head, head),
        )
    for boundary in boundaries:
        axes.axvline(boundary, color="grey", linestyle=":", linewidth=1)
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_ylim(-0.03, 1.03)
    axes.set_xlabel("training images of the class (log scale)")
    axes.set_ylabel(f"test average-K accuracy at K = {format_k(k)}")
    axes.set_title(f"Per-class accuracy against class frequency (groups at {', '.join(map(str, boundaries))})")
    axes.legend()
    return figure


class TestPlots(Callback):
    """After ``test``, saves the three figures of this module's doc in ``<run dir>/plots/`` and logs them to W&B.

    Args:
        enabled: make the figures (``--plots.enabled false`` to skip them).

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[TestPlots()], logger=False)
    """

    __test__ = False  # not a pytest test class

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.paths: list[Path] = []

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from avgk_lightning.module import TwoHeadModule

        if not self.enabled or not trainer.is_global_zero or not isinstance(pl_module, TwoHeadModule):
            return
        results, k = pl_module.test_results, pl_module.k
        if not results:
            return
        logged = pl_module.evaluation.logged("test", results)
        figures = {
            "set_size_histogram": set_size_histogram(
                {head: result.set_size_histograms[k] for head, result in results.items()}, k
            ),
            "accuracy_against_k": accuracy_against_k(logged, "test", pl_module.eval_ks, pl_module.loss.set_head),
        }
        if pl_module.class_counts is not None:
            figures["per_class_accuracy_against_frequency"] = per_class_accuracy_against_frequency(
                {head: result.per_class_accuracy[k] for head, result in results.items() if head != "oracle"},
                pl_module.class_counts,
                k,
                pl_module.hparams.get("frequency_boundaries", (20, 100)),
            )
        directory = Path(trainer.default_root_dir) / "plots"
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = []
        for name, figure in figures.items():
            path = free_path(directory / f"{name}.png")
            with atomic_path(path, "plot", overwrite=False) as partial:
                figure.savefig(partial)
            self.paths.append(path)
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=f"test/plots/{name}", images=[str(path)])
        rank_zero_info("Plots: " + ", ".join(str(path) for path in self.paths))
