"""Failure modes of addition attacks (blog: leading zeros, carry chains): statistics, a table and a plot
(the addition benchmark's report; banel itself never imports it).

Reads plain strings (prior samples, accepted samples, or the `sample` field of a run folder's
successes.jsonl) and describes them: the invalid-string rate and, among well-formed queries, the share
with a leading zero and the distributions of the longest carry chain and of operand lengths.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from banel.tasks.addition import carry_chain, has_leading_zero, parse_query


def failure_modes(texts: Sequence[str], max_digits: int = 10) -> dict[str, Any]:
    """Statistics of attacker strings (well-formed: digits `+` digits `=`, leading zeros allowed)."""
    parsed = [parse_query(t, max_digits, leading_zeros=True) for t in texts]
    valid = [p for p in parsed if p is not None]
    n, v = len(texts), len(valid)
    carries = np.array([carry_chain(a, b) for a, b in valid], dtype=np.int64)
    lengths = np.array([len(x) for p in valid for x in p], dtype=np.int64)
    return {
        "n": n,
        "valid": v,
        "invalid_rate": (n - v) / n if n else float("nan"),
        "leading_zero_share": float(np.mean([has_leading_zero(a, b) for a, b in valid])) if v else float("nan"),
        "carry_chain_mean": float(carries.mean()) if v else float("nan"),
        "carry_chain_hist": np.bincount(carries, minlength=max_digits + 2).tolist() if v else [],
        "long_carry_share": float(np.mean(carries >= 4)) if v else float("nan"),
        "operand_length_mean": float(lengths.mean()) if v else float("nan"),
        "operand_length_hist": np.bincount(lengths, minlength=max_digits + 1).tolist() if v else [],
    }


def read_successes(run_dirs: Sequence[str | Path]) -> list[str]:
    """The successful attack strings recorded in run folders (successes.jsonl), in order."""
    out = []
    for d in run_dirs:
        path = Path(d) / "successes.jsonl"
        if path.is_file():
            out += [json.loads(line)["sample"] for line in path.read_text().splitlines() if line.strip()]
    return out


def failure_table(groups: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table with one row per group of `failure_modes` statistics."""
    head = (
        "| strings | n | invalid rate | leading zero (valid) | mean carry chain | carry chain >= 4 "
        "| mean operand length |"
    )
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in groups.items():
        rows.append(
            f"| {name} | {s['n']} | {s['invalid_rate']:.3f} | {s['leading_zero_share']:.3f} | "
            f"{s['carry_chain_mean']:.2f} | {s['long_carry_share']:.3f} | {s['operand_length_mean']:.2f} |"
        )
    return "\n".join(rows)


def plot_failure_modes(groups: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Bar plots of the carry-chain and operand-length distributions (as shares) per group; returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = list(groups)
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        s = groups[name]
        for ax, key in ((axes[0], "carry_chain_hist"), (axes[1], "operand_length_hist")):
            hist = np.asarray(s[key], dtype=float)
            if hist.sum():
                ax.bar(np.arange(len(hist)) + k * width, hist / hist.sum(), width, label=name)
                ax.set_xticks(np.arange(len(hist)) + 0.4 - width / 2, [str(i) for i in range(len(hist))])
    axes[0].set(xlabel="longest carry chain", ylabel="share of valid queries", title="carry chains")
    axes[1].set(xlabel="operand length (digits)", ylabel="share of operands", title="operand lengths")
    shares = [[groups[n]["invalid_rate"], groups[n]["leading_zero_share"]] for n in names]
    for k, (name, row) in enumerate(zip(names, shares, strict=True)):
        axes[2].bar(np.arange(2) + k * width, np.nan_to_num(row), width, label=name)
    axes[2].set_xticks(np.arange(2) + 0.4 - width / 2, ["invalid", "leading zero"])
    axes[2].set(ylabel="share", title="invalid strings, leading zeros")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
