"""Plain-text tables of evaluation results, printed at the end of `test`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from avgk_lightning.metrics import EvaluationResult
from avgk_lightning.naming import HEAD_TITLES, format_k, heads_in, prefix, report_heads

__all__ = ["diagnostics_table", "prediction_note", "results_table", "set_size_table", "test_report"]


def results_table(
    results: Mapping[str, float],
    stage: str,
    ks: Sequence[float],
    set_head: str,
    multilabel_ks: Sequence[float] | None = None,
) -> str:
    """A Markdown table of average-K accuracy per K for each head found in `results`, with top-K and set size.

    Top-K accuracy comes from the softmax head where `results` have it, else from the set head.

    `results` maps logged names (``"test/avgk_acc@3"``, ``"test/softmax/avgk_acc@3"``, ...) to values;
    `set_head` is the head logged without a sub-prefix. With `multilabel_ks` (a multi-label head per K)
    a first column says which multi-label head made each row (``K=2``: the head trained for K = 2).

    Example:
        >>> print(results_table({"test/avgk_acc@1": 0.5, "test/set_size@1": 1.0}, "test", [1.0], "softmax"))
        | K | avg-K acc, softmax head | top-K acc, softmax head | mean set size, softmax head |
        |---|---|---|---|
        | 1 | 0.5000 | - | 1.000 |
        >>> print(results_table({"test/avgk_acc@1": 0.5, "test/topk_acc@1": 0.4}, "test", [1.0], "multilabel"))
        | K | avg-K acc, multi-label head | top-K acc, multi-label head | mean set size, multi-label head |
        |---|---|---|---|
        | 1 | 0.5000 | 0.4000 | - |
    """
    heads = heads_in(results, stage, set_head)
    prefixes = {head: prefix(stage, head, set_head) for head in report_heads(set_head)}
    columns = [(f"avg-K acc, {HEAD_TITLES[head]}", prefixes[head] + "avgk_acc@", "{:.4f}") for head in heads]
    # Top-K (sets of exactly K) from the softmax head where it was trained, else from the set head.
    topk_head = "softmax" if "softmax" in heads else set_head
    columns.append((f"top-K acc, {HEAD_TITLES[topk_head]}", prefixes[topk_head] + "topk_acc@", "{:.4f}"))
    columns.append((f"mean set size, {HEAD_TITLES[set_head]}", prefixes[set_head] + "set_size@", "{:.3f}"))
    trained = None if multilabel_ks is None else [float(k) for k in multilabel_ks]
    first = "" if trained is None else " multi-label head |"
    lines = [f"| K |{first} " + " | ".join(title for title, _, _ in columns) + " |"]
    lines.append("|---" * (len(columns) + 1 + (trained is not None)) + "|")
    for k in ks:
        cells = [] if trained is None else [f"K={format_k(k)}" if float(k) in trained else "-"]
        for _, name, fmt in columns:
            value = results.get(name + format_k(k))
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"| {format_k(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_DIAGNOSTIC_COLUMNS = (
    ("few", "avgk_acc_few@"),
    ("medium", "avgk_acc_medium@"),
    ("many", "avgk_acc_many@"),
    ("cov. size 1", "coverage_size1@"),
    ("cov. size 2", "coverage_size2@"),
    ("cov. size 3-5", "coverage_size3-5@"),
    ("cov. size 6+", "coverage_size6+@"),
    ("empty", "empty_rate@"),
    ("singletons", "singleton_rate@"),
)


def diagnostics_table(
    results: Mapping[str, float], stage: str, ks: Sequence[float], set_head: str, coverages: Sequence[float] = ()
) -> str:
    """Where the sets help: accuracy by training-class frequency and by set size, per head and K; then coverage.

    Rows: each evaluated head with its average-K sets, then "top-K" (sets of exactly K, from the softmax
    head where it was trained, else the set head); columns: accuracy on classes with few / medium /
    many training images, coverage among sets of size 1, 2, 3-5, 6+, and the rates of empty sets and
    singletons. A final table gives, per target coverage, the test coverage and mean set size.

    Example:
        >>> results = {"test/avgk_acc@1": 0.5, "test/avgk_acc_few@1": 0.25, "test/empty_rate@1": 0.1}
        >>> print(diagnostics_table(results, "test", [1.0], "softmax"))
        | sets | K | few | medium | many | cov. size 1 | cov. size 2 | cov. size 3-5 | cov. size 6+ | empty | singletons |
        |---|---|---|---|---|---|---|---|---|---|---|
        | softmax head | 1 | 0.2500 | - | - | - | - | - | - | 0.1000 | - |
    """
    present = heads_in(results, stage, set_head)
    prefixes = {head: prefix(stage, head, set_head) for head in report_heads(set_head)}
    topk_head = "softmax" if "softmax" in present else set_head
    header = "| sets | K | " + " | ".join(title for title, _ in _DIAGNOSTIC_COLUMNS) + " |"
    lines = [header, "|---" * (len(_DIAGNOSTIC_COLUMNS) + 2) + "|"]
    rows = [(HEAD_TITLES[head], prefixes[head], "") for head in present]
    rows.append((f"top-K, {HEAD_TITLES[topk_head]}", prefixes[topk_head], "topk"))
    for title, start, kind in rows:
        for k in ks:
            if kind == "topk" and not float(k).is_integer():
                continue
            cells = []
            for column, name in _DIAGNOSTIC_COLUMNS:
                if kind == "topk":
                    name = name.replace("avgk_acc", "topk_acc") if column in ("few", "medium", "many") else None
                value = None if name is None else results.get(start + name + format_k(k))
                cells.append("-" if value is None else f"{value:.4f}")
            if all(cell == "-" for cell in cells):  # e.g. top-K at K > L, or a K no multi-label head was trained for
                continue
            lines.append(f"| {title} | {format_k(k)} | " + " | ".join(cells) + " |")
    coverage_lines = []
    for head in present:
        for coverage in coverages:
            name = format_k(coverage)
            value = results.get(f"{prefixes[head]}coverage@{name}")
            size = results.get(f"{prefixes[head]}coverage_set_size@{name}")
            if value is not None and size is not None:
                coverage_lines.append(f"| {HEAD_TITLES[head]} | {name} | {value:.4f} | {size:.3f} |")
    if coverage_lines:
        lines += ["", "| sets | target coverage | test coverage | mean set size |", "|---|---|---|---|"]
        lines += coverage_lines
    return "\n".join(lines)


def set_size_table(histograms: Mapping[str, Tensor], k: float, largest: int = 10) -> str:
    """Share of samples per set size (0, 1, ..., `largest`+) for each head, at one K.

    Example:
        >>> import torch
        >>> print(set_size_table({"softmax": torch.tensor([1, 2, 1, 0])}, k=1, largest=2))
        | set size at K=1 | 0 | 1 | 2+ |
        |---|---|---|---|
        | softmax head | 0.2500 | 0.5000 | 0.2500 |
    """
    columns = [str(size) for size in range(largest)] + [f"{largest}+"]
    lines = [f"| set size at K={format_k(k)} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for head, counts in histograms.items():
        shares = counts.double() / counts.sum()
        cells = [float(shares[size]) if size < len(shares) else 0.0 for size in range(largest)]
        cells.append(float(shares[largest:].sum()))
        lines.append(f"| {HEAD_TITLES.get(head, head)} | " + " | ".join(f"{cell:.4f}" for cell in cells) + " |")
    return "\n".join(lines)


def prediction_note(head: str, k: float, accuracy: Mapping[str, Mapping[float, float]]) -> str:
    """The line that says which head makes the sets of ``predict`` and the exports under ``predict_head: validation``.

    Example:
        >>> print(prediction_note("softmax", 2.0, {"multilabel": {2.0: 0.948}, "softmax": {2.0: 0.9512}}))
        predict and the exports: sets of the softmax head at K=2, the better on validation (avg-K acc 0.9512; multi-label head 0.9480)
    """
    others = "; ".join(
        f"{HEAD_TITLES[other]} {values[float(k)]:.4f}"
        for other, values in accuracy.items()
        if other != head and float(k) in values
    )
    return (
        f"predict and the exports: sets of the {HEAD_TITLES[head]} at K={format_k(k)}, the better on validation "
        f"(avg-K acc {accuracy[head][float(k)]:.4f}" + (f"; {others})" if others else ")")
    )


def test_report(
    results: Mapping[str, EvaluationResult],
    logged: Mapping[str, float],
    ks: Sequence[float],
    k: float,
    set_head: str,
    coverages: Sequence[float] = (),
    multilabel_ks: Sequence[float] | None = None,
) -> str:
    """The three tables printed at the end of ``test``: results, diagnostics, and set sizes at the model's `k`.

    `multilabel_ks`: the K of the multi-label heads of a model with one per K (see :func:`results_table`).
    """
    histograms = {head: result.set_size_histograms[k] for head, result in results.items()}
    return "\n\n".join(
        (
            results_table(logged, "test", ks, set_head, multilabel_ks),
            diagnostics_table(logged, "test", ks, set_head, coverages),
            set_size_table(histograms, k),
        )
    )
