"""Test results as W&B tables and a histogram, for a dashboard to sort, filter and compare across runs.

* ``test/results``: one row per head and K: average-K accuracy, mean set size and top-K accuracy (the
  Bayes oracle is a head where the data know the posteriors), the numbers of the printed results table;
* ``test/per_class``: one row per class: its name, training images and, per head, its average-K accuracy
  at the model's K (empty for a class without test samples);
* ``test/set_size_histogram``: the set sizes of the set head at the model's K, as a W&B histogram.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor

from avgk_lightning.metrics import EvaluationResult
from avgk_lightning.naming import HEAD_TITLES, format_k

__all__ = ["RESULT_COLUMNS", "TestTables", "per_class_rows", "result_rows", "set_size_bins"]

RESULT_COLUMNS = ["head", "K", "average-K accuracy", "mean set size", "top-K accuracy"]


def result_rows(results: Mapping[str, EvaluationResult], ks: Sequence[float]) -> list[list[Any]]:
    """The rows of ``test/results`` (:data:`RESULT_COLUMNS`): each head with a result, each K it has.

    Example:
        >>> import torch
        >>> result = EvaluationResult({"avgk_acc@2": torch.tensor(0.75), "set_size@2": torch.tensor(2.0)}, {2.0: 0.3})
        >>> result_rows({"softmax": result}, [1.0, 2.0])
        [['softmax', 2.0, 0.75, 2.0, None]]
    """
    rows = []
    for head, result in results.items():
        for k in ks:
            values = [result.values.get(f"{name}@{format_k(k)}") for name in ("avgk_acc", "set_size", "topk_acc")]
            if values[0] is not None:
                rows.append([head, float(k), *(None if value is None else float(value) for value in values)])
    return rows


def per_class_rows(
    results: Mapping[str, EvaluationResult], k: float, class_names: Sequence[str], class_counts: Sequence[int] | None
) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of ``test/per_class``: class index, name, training images, accuracy per head at `k`.

    Example:
        >>> import torch
        >>> result = EvaluationResult({}, {}, per_class_accuracy={2.0: torch.tensor([0.5, float("nan")])})
        >>> per_class_rows({"softmax": result}, 2.0, ["cat", "dog"], [10, 3])
        (['class', 'name', 'training images', 'average-K accuracy at K=2, softmax head'], [[0, 'cat', 10, 0.5], [1, 'dog', 3, None]])
    """
    heads = [head for head, result in results.items() if k in result.per_class_accuracy]
    columns = ["class", "name", "training images"]
    columns += [f"average-K accuracy at K={format_k(k)}, {HEAD_TITLES.get(head, head)}" for head in heads]
    rows = []
    for index, name in enumerate(class_names):
        accuracies = [float(results[head].per_class_accuracy[k][index]) for head in heads]
        count = None if class_counts is None else int(class_counts[index])
        rows.append([index, name, count, *(None if math.isnan(value) else value for value in accuracies)])
    return columns, rows


def set_size_bins(counts: Tensor, most: int = 512) -> tuple[list[int], list[int]]:
    """A set-size histogram as W&B's ``np_histogram``: the counts of sizes 0..largest seen, and the bin edges.

    W&B takes at most 512 bins: sizes from ``most - 1`` on share the last one.

    Example:
        >>> import torch
        >>> set_size_bins(torch.tensor([1, 5, 3, 0, 0]))
        ([1, 5, 3], [0, 1, 2, 3])
        >>> set_size_bins(torch.tensor([1, 5, 3, 2]), most=2)
        ([1, 10], [0, 1, 2])
    """
    largest = int(counts.nonzero().max()) if counts.any() else 0
    kept = counts[: min(largest + 1, most)].clone()
    kept[-1] += counts[len(kept) :].sum()
    return kept.tolist(), list(range(len(kept) + 1))


class TestTables(Callback):
    """After ``test``, logs the module's test results to every ``WandbLogger`` (the tables of this module's doc).

    Args:
        enabled: log the tables (``--tables.enabled false`` to skip them).

    Example:
        >>> from lightning.pytorch import Trainer
        >>> trainer = Trainer(callbacks=[TestTables()], logger=False)
    """

    __test__ = False  # not a pytest test class

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from avgk_lightning.module import TwoHeadModule

        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not self.enabled or not loggers or not trainer.is_global_zero or not isinstance(pl_module, TwoHeadModule):
            return
        results, k = pl_module.test_results, pl_module.k
        if not results:
            return
        import wandb

        names = pl_module.class_names or [str(index) for index in range(pl_module.num_classes)]
        class_columns, class_rows = per_class_rows(results, k, names, pl_module.class_counts)
        counts, bins = set_size_bins(results[pl_module.loss.set_head].set_size_histograms[k])
        rows = result_rows(results, pl_module.eval_ks)
        for logger in loggers:
            logger.log_table("test/results", columns=RESULT_COLUMNS, data=rows)
            logger.log_table("test/per_class", columns=class_columns, data=class_rows)
            logger.experiment.log({"test/set_size_histogram": wandb.Histogram(np_histogram=(counts, bins))})
