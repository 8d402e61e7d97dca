"""How findings nodes read in text: rates, nats, intervals, table cells."""

from __future__ import annotations

from typing import Any

from interp.findings.verdicts import Claim, Node
from interp.plan import ordered


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
    return f"{pct(x)} vs {pct(y)}"


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
    n = f"{node['n_runs']} runs x {node['n_items']} {items}" if node else "-"
    return f"\n\nEach cell: mean [95% interval] over {n} per subset."
