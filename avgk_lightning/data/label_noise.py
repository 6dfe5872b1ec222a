"""Label noise on training labels: the superclass rule shared by the data modules, and the reference code's rule.

* :func:`superclass_label_noise`: with probability p, another class of the same superclass (the label
  always changes: realised rate p);
* :func:`reference_label_noise`: the rule of the authors' public code for the CIFAR-100 protocol
  (garcinc/noised-topk): with probability p, a class drawn uniformly in the label's block of
  ``block`` consecutive class indices, itself included (realised rate p (block - 1) / block).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from avgk_lightning.atomic import atomic_path

__all__ = ["reference_label_noise", "report_label_noise", "superclass_label_noise"]


def superclass_label_noise(labels: Tensor, superclass_of: Tensor, noise: float, seed: int) -> Tensor:
    """Replace each label, with probability `noise`, by another class of its superclass, drawn uniformly.

    ``superclass_of[c]`` is the superclass of class ``c``. A class alone in its superclass never changes.
    The draws come from a generator seeded with `seed`: one uniform number per label decides the flip,
    a second one picks the sibling among the others in increasing class order.

    Example:
        >>> superclass_of = torch.tensor([0, 0, 1])  # classes 0 and 1 are siblings, class 2 is alone
        >>> noisy = superclass_label_noise(torch.tensor([0, 1, 2] * 4), superclass_of, noise=1.0, seed=0)
        >>> noisy.tolist()
        [1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2]
    """
    num_classes = len(superclass_of)
    generator = torch.Generator().manual_seed(seed)
    flip = torch.rand(len(labels), generator=generator) < noise
    draws = torch.rand(len(labels), generator=generator)
    siblings = superclass_of.unsqueeze(0) == superclass_of.unsqueeze(1)
    siblings.fill_diagonal_(False)
    counts = siblings.sum(dim=1)
    # others[c] lists the siblings of class c in increasing order (padded with c itself).
    order = torch.arange(num_classes).expand(num_classes, -1)
    others = torch.where(siblings, order, num_classes).sort(dim=1).values.clamp_max_(num_classes - 1)
    labels = labels.long()
    choice = (draws * counts[labels]).long()
    replace = flip & (counts[labels] > 0)
    noisy = labels.clone()
    noisy[replace] = others[labels[replace], choice[replace]]
    return noisy


def reference_label_noise(labels: Tensor, noise: float, seed: int, block: int = 5) -> Tensor:
    """The reference code's rule: with probability `noise`, a label is redrawn uniformly in its block.

    The blocks are the `block` consecutive class indices ``label - label % block`` ... ``+ block - 1``;
    the redrawn label may be the label itself. The draws are those of the reference code after
    ``np.random.seed(seed)``: first one offset in ``[0, block)`` per label (``np.random.choice``), then
    one Bernoulli(`noise`) per label (``np.random.binomial``), over `labels` in their order. Given the
    official training labels in file order and the reference run's seed, the noisy labels are the
    reference run's, image by image.

    Example:
        >>> reference_label_noise(torch.tensor([0, 7, 12, 19]), noise=1.0, seed=0).tolist()  # blocks 0-4, 5-9, ...
        [4, 5, 13, 18]
    """
    generator = np.random.RandomState(seed)
    offsets = torch.from_numpy(generator.choice(block, size=len(labels)))
    redraw = torch.from_numpy(generator.binomial(1, noise, size=len(labels)).astype(bool))
    labels = labels.long()
    return torch.where(redraw, labels - labels % block + offsets, labels)


def report_label_noise(
    trainer: Trainer | None, data_set: str, clean: Tensor, noisy: Tensor, record: dict[str, Any]
) -> None:
    """Log the realised noise rate and write the changed labels to ``<run dir>/label_noise.json``.

    `record` holds the settings to save beside them (requested rate, seeds). An existing file (another
    run in the same directory) is never overwritten: a warning says so.
    """
    changed = torch.nonzero(noisy != clean).flatten()
    rate = len(changed) / max(len(clean), 1)
    rank_zero_info(
        f"{data_set} label noise: {len(changed)} of {len(clean)} training labels changed (realised rate "
        f"{rate:.4f}, requested {record.get('requested_noise')})"
    )
    if trainer is None or not trainer.is_global_zero:
        return
    for logger in trainer.loggers:
        logger.log_metrics({"data/realised_noise_rate": rate}, step=0)
    run_dir = Path(trainer.default_root_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    content = {
        **record,
        "realised_noise_rate": rate,
        "train_index_of_changed_labels": changed.tolist(),
        "clean_labels": clean[changed].tolist(),
        "noisy_labels": noisy[changed].tolist(),
    }
    path = run_dir / "label_noise.json"
    if path.exists():
        rank_zero_warn(f"{path} exists already (from another run in this directory): not overwritten")
    else:
        with atomic_path(path, "label-noise record", overwrite=False) as partial:
            partial.write_text(json.dumps(content))
