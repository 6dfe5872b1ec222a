"""The names of logged metrics: one owner for the ``stage/head/name@K`` scheme, K formatting and head order.

A metric is logged as ``<stage>/<name>@<K>`` for the head that makes the sets (the method's set head)
and as ``<stage>/<head>/<name>@<K>`` for every other evaluated head (``softmax`` for a two-head
model, ``oracle`` for the Bayes posteriors where the data know them), e.g. ``val/avgk_acc@2``,
``test/softmax/topk_acc@1``, ``test/oracle/set_size@2.5``. Coverage metrics use the target coverage
in place of K (``test/coverage@0.9``). The reports, the plots, the checkpoint monitor and
``benchmarks/compare.py`` all build and read names through this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "HEAD_TITLES",
    "format_k",
    "heads_in",
    "metric_name",
    "monitor_name",
    "prefix",
    "report_heads",
]

#: the evaluated heads, in report order after the set head, with their titles
HEAD_TITLES = {"multilabel": "multi-label head", "softmax": "softmax head", "oracle": "Bayes oracle"}


def format_k(k: float) -> str:
    """K as written in metric names: ``3.0 -> "3"``, ``2.5 -> "2.5"``.

    Example:
        >>> format_k(3.0), format_k(2.5)
        ('3', '2.5')
    """
    return f"{float(k):g}"


def prefix(stage: str, head: str, set_head: str) -> str:
    """The start of every name of `head` at `stage`: no head part for the set head.

    Example:
        >>> prefix("val", "multilabel", set_head="multilabel"), prefix("val", "softmax", set_head="multilabel")
        ('val/', 'val/softmax/')
    """
    return f"{stage}/" if head == set_head else f"{stage}/{head}/"


def metric_name(stage: str, head: str, set_head: str, name: str, k: float | None = None) -> str:
    """The logged name of metric `name` (``avgk_acc``, ``set_size``, ...) of `head` at `stage`, at K = `k`.

    Example:
        >>> metric_name("test", "softmax", "multilabel", "avgk_acc", 2.0)
        'test/softmax/avgk_acc@2'
    """
    return prefix(stage, head, set_head) + (name if k is None else f"{name}@{format_k(k)}")


def monitor_name(k: float | Sequence[float]) -> str:
    """The validation metric that selects the best checkpoint: the set head's average-K accuracy at `k`.

    For a list of K (a multi-label head per K), at the first one.

    Example:
        >>> monitor_name(3.0), monitor_name([2, 3])
        ('val/avgk_acc@3', 'val/avgk_acc@2')
    """
    return f"val/avgk_acc@{format_k(k[0] if isinstance(k, Sequence) else k)}"


def report_heads(set_head: str) -> list[str]:
    """The heads in report order: the set head first, then the softmax head and the oracle.

    Example:
        >>> report_heads("multilabel")
        ['multilabel', 'softmax', 'oracle']
    """
    return [set_head] + [head for head in ("softmax", "oracle") if head != set_head]


def heads_in(results: Mapping[str, float] | Iterable[str], stage: str, set_head: str) -> list[str]:
    """The heads of :func:`report_heads` that have an average-K accuracy among the names of `results`.

    Example:
        >>> heads_in({"test/avgk_acc@1": 0.5, "test/oracle/avgk_acc@1": 0.7}, "test", "multilabel")
        ['multilabel', 'oracle']
    """
    names = list(results)
    return [
        head
        for head in report_heads(set_head)
        if any(name.startswith(prefix(stage, head, set_head) + "avgk_acc@") for name in names)
    ]
