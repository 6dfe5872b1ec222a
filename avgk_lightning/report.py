"""Plain-text tables of evaluation results, printed at the end of `test`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from avgk_lightning.metrics import format_k

__all__ = ["results_table"]

_HEAD_TITLES = {"multilabel": "multi-label head", "softmax": "softmax head", "oracle": "Bayes oracle"}


def results_table(results: Mapping[str, float], stage: str, ks: Sequence[float], set_head: str) -> str:
    """A Markdown table of average-K accuracy per K for each head found in `results`, with top-K and set size.

    Top-K accuracy comes from the softmax head where `results` have it, else from the set head.

    `results` maps logged names (``"test/avgk_acc@3"``, ``"test/softmax/avgk_acc@3"``, ...) to values;
    `set_head` is the head logged without a sub-prefix.

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
    heads = [set_head] + [head for head in ("softmax", "oracle") if head != set_head]
    prefixes = {head: f"{stage}/" if head == set_head else f"{stage}/{head}/" for head in heads}
    heads = [head for head in heads if any(name.startswith(prefixes[head] + "avgk_acc@") for name in results)]
    columns = [(f"avg-K acc, {_HEAD_TITLES[head]}", prefixes[head] + "avgk_acc@", "{:.4f}") for head in heads]
    # Top-K (sets of exactly K) from the softmax head where it was trained, else from the set head.
    topk_head = "softmax" if "softmax" in heads else set_head
    columns.append((f"top-K acc, {_HEAD_TITLES[topk_head]}", prefixes[topk_head] + "topk_acc@", "{:.4f}"))
    columns.append((f"mean set size, {_HEAD_TITLES[set_head]}", prefixes[set_head] + "set_size@", "{:.3f}"))
    lines = ["| K | " + " | ".join(title for title, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for k in ks:
        cells = []
        for _, name, fmt in columns:
            value = results.get(name + format_k(k))
            cells.append("-" if value is None else fmt.format(value))
        lines.append(f"| {format_k(k)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
