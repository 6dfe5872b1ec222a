"""The typed records of a study: what is trained (a row, a job) and what one finished run measured.

A run record and a saved study read and write the JSON that studies keep on disk (the run journal
``FILE.runs.jsonl`` and ``FILE.json``), field for field, so that every saved study renders again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from avgk_lightning.naming import format_k

__all__ = ["Job", "Row", "RunRecord", "SavedStudy"]


@dataclass(frozen=True)
class Row:
    """One trained configuration: a method plus overrides, trained once or once per K.

    Example:
        >>> Row("bce_mean", "two_head", ('model.init_args.loss_options={"bce_reduction":"mean"}',), per_k=True).is_variant
        True
        >>> Row("softmax", "softmax").is_variant
        False
    """

    label: str
    method: str
    overrides: tuple[str, ...] = ()
    per_k: bool = False

    @property
    def is_variant(self) -> bool:
        """Whether the row is a variant of a method (its own label or overrides), not the method as configured."""
        return self.label != self.method or bool(self.overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        return cls(data["label"], data["method"], tuple(data["overrides"]), data["per_k"])

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "method": self.method, "overrides": list(self.overrides), "per_k": self.per_k}


@dataclass(frozen=True)
class Job:
    """One training run: a row, in a setting (its label), with a seed, the K it trains for if per K, its overrides."""

    setting: str
    row: Row
    seed: int
    k: float | None = None
    overrides: tuple[str, ...] = ()


# The fields a run record may lack: runs saved before they were recorded.
_OPTIONAL = ("trained_ks", "epoch_metrics", "seconds", "key")


@dataclass(frozen=True)
class RunRecord:
    """What one finished training run measured.

    ``results`` maps each tested checkpoint (``best``, ``last``) to its logged test metrics
    (``test/avgk_acc@2``, ``test/softmax/set_size@2``, ...); ``epochs`` gives the epoch of each checkpoint;
    ``train_top1_acc`` the top-1 accuracy on the training labels per epoch; ``epoch_metrics`` per epoch
    the training loss terms and every validation average-K accuracy; ``key`` the plan key the run
    answers (:meth:`StudyPlan.key <avgk_lightning.study.plan.StudyPlan.key>`).

    Example:
        >>> data = {"setting": "", "label": "softmax", "method": "softmax", "seed": 0, "k": 2.0, "per_k": False,
        ...         "eval_ks": [2.0], "results": {"best": {"test/avgk_acc@2": 0.9}}, "epochs": {"best": 3},
        ...         "train_top1_acc": [0.5, 0.6, 0.7, 0.8]}
        >>> record = RunRecord.from_dict(data)
        >>> record.value("best", "test/", "avgk_acc", 2.0), record.to_dict() == data
        (0.9, True)
    """

    setting: str
    label: str
    method: str
    seed: int
    k: float
    per_k: bool
    eval_ks: list[float]
    results: dict[str, dict[str, float]]
    epochs: dict[str, int]
    train_top1_acc: list[float]
    trained_ks: list[float] | None = None
    epoch_metrics: list[dict[str, float]] | None = None
    seconds: float | None = None
    key: str | None = None

    # The order of the fields in the JSON that studies write (and have written).
    _ORDER = (
        "setting", "label", "method", "seed", "k", "trained_ks", "per_k", "eval_ks", "results", "epochs",
        "train_top1_acc", "epoch_metrics", "seconds", "key",
    )  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown field(s) {', '.join(unknown)} in a run record (of label {data.get('label')!r})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The record as saved: its fields in the saved order, without the optional ones it lacks."""
        values = asdict(self)
        return {name: values[name] for name in self._ORDER if not (name in _OPTIONAL and values[name] is None)}

    def value(self, checkpoint: str, prefix: str, metric: str, k: float) -> float | None:
        """The test `metric` at `k` of the head logged under `prefix` (``test/``, ``test/softmax/``), if logged."""
        return self.results[checkpoint].get(f"{prefix}{metric}@{format_k(k)}")


@dataclass(frozen=True)
class SavedStudy:
    """A study as saved beside its tables (``FILE.json``): how it was run, its plan's rows and its runs.

    ``header`` holds the Markdown lines above the tables (the command, the settings, the hours of training);
    ``settings``, ``ks`` and ``checkpoints`` the order of the tables (derived from the runs when absent);
    ``against`` the rows (``LABEL`` or ``LABEL:HEAD``) that every other row is also paired against.
    """

    command: str
    rows: list[Row]
    runs: list[RunRecord]
    header: list[str] | None = None
    settings: list[str] | None = None
    ks: list[float] | None = None
    checkpoints: list[str] | None = None
    against: list[str] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedStudy:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"Unknown field(s) {', '.join(unknown)} in a saved study")
        return cls(
            command=data["command"],
            rows=[Row.from_dict(row) for row in data["rows"]],
            runs=[RunRecord.from_dict(run) for run in data["runs"]],
            header=data.get("header"),
            settings=data.get("settings"),
            ks=data.get("ks"),
            checkpoints=data.get("checkpoints"),
            against=data.get("against"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "command": self.command,
            "header": self.header,
            "settings": self.settings,
            "ks": self.ks,
            "checkpoints": self.checkpoints,
            "against": self.against,
            "rows": [row.to_dict() for row in self.rows],
            "runs": [run.to_dict() for run in self.runs],
        }
        return {name: value for name, value in data.items() if value is not None}
