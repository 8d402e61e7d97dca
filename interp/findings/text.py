"""How findings nodes read in text: rates, nats, intervals, table cells."""

from __future__ import annotations

import math
from typing import Any

from interp.findings.verdicts import Claim, Node, detectable
from interp.plan import get_path, ordered
from interp.stats import decide_over_runs, mean_ci, ratio_of_means


def pct(node: Node) -> str:
    """'12.3% [8.1, 17.0]' for an exact-match node (fractions), '-' when absent."""
    if not node or node.get("estimate") is None:
        return "-"
    return f"{100 * node['estimate']:.1f}% [{100 * node['low']:.1f}, {100 * node['high']:.1f}]"


def nats(node: Node) -> str:
    """'+0.48 [+0.09, +0.88]' for a log-prob difference node, '-' when absent."""
    if not node or node.get("estimate") is None or node.get("low") is None:
        return "-"
    return f"{node['estimate']:+.2f} [{node['low']:+.2f}, {node['high']:+.2f}]"


def vs(x: Node, y: Node) -> str:
    """'59.2% [..] vs 0.0% [..]; detects 4.1 points': two rates and the smallest difference the
    one rule detects with 80% power at this study's size (`verdicts.detectable`)."""
    return f"{pct(x)} vs {pct(y)}" + detects(x, y)


def vs_text(x: Node, y: Node) -> str:
    """`vs` with each node's own `text` in place of its interval; '' where either is absent."""
    return f"{x['text']} vs {y['text']}{detects(x, y)}" if x and y else ""


def detects(x: Node, y: Node) -> str:
    """'; detects 5.3 points' (`verdicts.detectable` of two exact-match nodes), or ''."""
    m = detectable(x, y)
    return f"; detects {100 * m:.1f} points" if m is not None else ""


def with_null(x: Node) -> str:
    """A probe's rate beside its permutation null's 95th percentile."""
    if not x:
        return "-"
    return f"{pct(x)} (null95 {100 * x['null95']:.1f}%)"


def paper_pct(x: float | None) -> str:
    """A paper's number as quoted: 'fails' is recorded as 0, a number not quoted as '-'."""
    return "-" if x is None else "fails" if x == 0 else f"{x:.0f}%"


def cell(text: str) -> str:
    """Text for a markdown table cell: a '|' (as in 'p(B | A)') would end the cell."""
    return text.replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def claims_table(claims: list[Claim]) -> str:
    """The claims judged: with source and the paper's number where any claim has a source."""
    if any(c.source for c in claims):
        return table(
            ["prediction", "source", "paper", "this kit", "verdict"],
            [[c.claim, c.source, c.paper, c.evidence, f"**{c.verdict}**"] for c in claims],
        )
    return table(
        ["prediction", "verdict", "evidence"],
        [[c.claim, f"**{c.verdict}**", c.evidence or "n/a"] for c in claims],
    )


def value_text(node: Any) -> str:
    """A node as the README quotes it: its `text`, a float to 3 significant digits, or str."""
    if isinstance(node, dict):
        return str(node.get("text", node))
    if isinstance(node, float):
        return f"{node:.3g}"
    return str(node)


def exact_match_by_objective(f: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(objective, exact-match nodes in its own mode, causal-decoding nodes beside them) of a
    findings file, in the kit's order."""
    return [
        (o, b.get("exact_match", {}), b.get("causal_exact_match", {}))
        for o, b in ordered(f.get("behaviour", {}))
    ]


def cells_footer(f: dict[str, Any], items: str) -> str:
    """The line under an exact-match table: what each cell is, over how many runs and items."""
    first: dict[str, Any] = next(iter(f.get("behaviour", {}).values()), {})
    node = first.get("exact_match", {}).get("n2d_reverse_train")
    n = "-"
    if node:  # n_items counts every run's items
        runs = node["n_runs"]
        n = f"{runs} run{'s' if runs != 1 else ''} ({node['n_items']} {items} in all)"
    return f"\n\nEach cell: mean [95% interval] over {n} per subset."


def per_run_difference(
    f: dict[str, Any], instrument: str, objective: str, key: str, control: str
) -> dict[str, Any] | None:
    """Mean [t-interval] over runs of each run's `key` - `control`, as a node (None if not
    measured, or fewer than 2 runs), with the one rule's decision (`effect`: the one-sided t-test
    over runs at alpha 0.05, `p_one_sided`, and `mde`, the effect it detects at 80% power)."""
    a = get_path(f, f"instruments.{instrument}.{objective}.{key}.per_run")
    b = get_path(f, f"instruments.{instrument}.{objective}.{control}.per_run")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    m, lo, hi, n = mean_ci(diffs)
    node: dict[str, Any] = {"estimate": m, "low": lo, "high": hi, "n_runs": n}
    d = decide_over_runs(diffs)  # the one rule: one-sided t over runs at alpha 0.05
    if d is not None:
        node |= {"effect": d.effect, "p_one_sided": d.p, "mde": d.mde}
    return node


def pooled_ratio(
    f: dict[str, Any], instrument: str, objective: str, num: str, den: str
) -> dict[str, Any] | None:
    """One effect as a share of another, pooled over runs: the ratio of the mean over runs of
    `num`'s effect (its `<num>_mean` minus `<num>_control_mean`, per run) to the mean of
    `den`'s, in %, with Fieller's interval (`interp.stats.ratio_of_means`) and the bound it sets
    (the largest |share| the interval admits); None with fewer than 2 runs. This, not an average
    of per-run bounds, is the bound a pooled null sets."""

    def effects(key: str) -> list[float] | None:
        a = get_path(f, f"instruments.{instrument}.{objective}.{key}_mean.per_run")
        b = get_path(f, f"instruments.{instrument}.{objective}.{key}_control_mean.per_run")
        if not a or not b or len(a) != len(b):
            return None
        return [x - y for x, y in zip(a, b, strict=True)]

    n_eff, d_eff = effects(num), effects(den)
    if n_eff is None or d_eff is None or len(n_eff) != len(d_eff) or len(n_eff) < 2:
        return None
    q, lo, hi, n = ratio_of_means(n_eff, d_eff)
    bound = max(abs(lo), abs(hi))
    text = (
        f"{100 * q:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}] (Fieller, n={n} runs)"
        if math.isfinite(bound)
        else f"{100 * q:+.1f}%, interval unbounded (the denominator's effect is not "
        f"distinguishable from 0 over n={n} runs)"
    )
    return {"estimate": 100 * q, "low": 100 * lo, "high": 100 * hi, "bound": 100 * bound,
            "n_runs": n, "text": text}  # fmt: skip
