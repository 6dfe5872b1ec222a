"""A study's plan: which rows train in which settings with which seeds, and the key of each run."""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass
from typing import Literal

from avgk_lightning.losses import resolve_loss_class
from avgk_lightning.study.records import Job, Row

__all__ = ["StudyPlan", "depends_on_k", "setting_label"]


def depends_on_k(method: str) -> bool:
    """Whether a method's training depends on K (its pseudo-labels or expected positives).

    Example:
        >>> depends_on_k("two_head"), depends_on_k("softmax"), depends_on_k("epr")
        (True, False, True)
    """
    loss_class = resolve_loss_class(method)
    return bool(loss_class.uses_pseudo_labels) or "k" in inspect.signature(loss_class.__init__).parameters


def setting_label(overrides: tuple[str, ...]) -> str:
    """The name of a setting in tables: its overrides without the ``data.init_args.`` / ``model.init_args.`` prefixes.

    Example:
        >>> setting_label(("data.init_args.augment=true", "model.init_args.backbone=small_resnet"))
        'augment=true backbone=small_resnet'
    """
    return " ".join(override.removeprefix("data.init_args.").removeprefix("model.init_args.") for override in overrides)


@dataclass(frozen=True)
class StudyPlan:
    """Every training run of a study, and the key that says whether a saved run answers one of them.

    Each run is ``train.py fit`` of `config` with a row's method and overrides, the `overrides` given to
    every run, the setting's overrides, ``--seed_everything SEED`` (seeds ``0 .. seeds-1``; the data
    arguments in `seed_args` take the seed too, so each seed draws its own data) and `max_epochs`. A row
    with ``per_k`` trains one model per K of `per_k`. `order` ``cell`` runs a setting's runs before the
    next setting's; ``breadth`` runs seed by seed, the methods of every setting before the variants.

    Example:
        >>> plan = StudyPlan("configs/synthetic_two_head.yaml", (Row("softmax", "softmax"), Row("two_head", "two_head", per_k=True)),
        ...                  settings=(("data.init_args.noise=0.2",),), seeds=2, per_k=(1.5, 2.0))
        >>> runs = [(job.row.label, job.k, job.seed) for job in plan.jobs()]
        >>> runs
        [('softmax', None, 0), ('softmax', None, 1), ('two_head', 1.5, 0), ('two_head', 1.5, 1), ('two_head', 2.0, 0), ('two_head', 2.0, 1)]
        >>> plan.jobs()[0].setting, plan.jobs()[0].overrides
        ('noise=0.2', ('data.init_args.noise=0.2',))
    """

    config: str
    rows: tuple[Row, ...]
    settings: tuple[tuple[str, ...], ...] = ((),)
    seeds: int = 3
    max_epochs: int = 3
    overrides: tuple[str, ...] = ()
    seed_args: tuple[str, ...] = ()
    per_k: tuple[float, ...] | None = None
    checkpoints: tuple[str, ...] = ("best",)
    order: Literal["cell", "breadth"] = "cell"

    @property
    def setting_labels(self) -> list[str]:
        return [setting_label(setting) for setting in self.settings]

    def jobs(self) -> list[Job]:
        """The plan's runs, in the order they train."""
        jobs = []
        for setting in self.settings:
            for row in self.rows:
                for k in self.per_k if row.per_k else [None]:
                    for seed in range(self.seeds):
                        seeded = tuple(f"{key}={seed}" for key in self.seed_args)
                        jobs.append(Job(setting_label(setting), row, seed, k, self.overrides + seeded + setting))
        if self.order == "breadth":
            jobs.sort(key=lambda job: (job.seed, job.row.is_variant))
        return jobs

    def key(self, job: Job) -> str:
        """Everything that decides a run's numbers, as one string: a saved run is reused only for the same key.

        Example:
            >>> plan = StudyPlan("configs/fashion_mnist_two_head.yaml", (Row("softmax", "softmax"),), max_epochs=30)
            >>> job = plan.jobs()[0]
            >>> plan.key(job) == StudyPlan(plan.config, plan.rows, max_epochs=31).key(job)
            False
        """
        return json.dumps(
            {
                "config": self.config,
                "setting": job.setting,
                "row": asdict(job.row),
                "seed": job.seed,
                "k": job.k,
                "overrides": list(job.overrides),
                "max_epochs": self.max_epochs,
                "checkpoints": list(self.checkpoints),
                "eval_ks": None if self.per_k is None else list(self.per_k),
            },
            sort_keys=True,
        )
