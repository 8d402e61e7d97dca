"""Kitouni et al. (2024)'s retrieval task (`interp.data.retrieval`) as the kit builds it today.

Random key-value pairs in the three subsets, next-token prediction, token reversal (their "AR w/
reversed tokens"), BICO (a fixed 15% masking rate, as their MLM) and MLM-U, 3 seeds; behaviour
only (the other instruments read the fact world's attributes), with native mode for the masking
objectives. Kitouni et al. report MLM-U 100% / 100% forward / backward and next-token 0%
backward. A methods review found the kit's MLM-U departs from theirs (half its batches
next-token, masked tokens attendable, one-shot decoding, shared key pools), so a verdict here
says whether this variant retrieves backward at this budget.
"""

from __future__ import annotations

from interp.findings.text import cells_footer, exact_match_by_objective, paper_pct, pct, table
from interp.findings.verdicts import Claim, verdict
from interp.plan import Context, Preset, get_path

CITATIONS = {
    "kitouni": "Kitouni et al. 2024, The Factorization Curse: Which Tokens You Predict Underlie "
    "the Reversal Curse and More, arXiv 2406.05183, retrieval task table",
}
# Their retrieval table: exact match (%) forward / backward, None where not quoted here; "fails"
# is recorded as 0 (backward retrieval by next-token prediction and on token-reversed text).
KITOUNI: dict[str, tuple[float | None, float | None, str]] = {
    "causal": (None, 0.0, "next-token"),
    "reverse_token": (None, 0.0, "AR on reversed tokens"),
    "mlm_u": (100.0, 100.0, "MLM-U"),
}


def _em(ctx: Context, name: str, o: str, cell: str, native: bool = False) -> dict | None:
    key = "native_exact_match" if native else "exact_match"
    node: dict | None = get_path(ctx, f"{name}.behaviour.{o}.{key}.{cell}")
    return node


def checks(ctx: Context, name: str) -> list[Claim]:
    """Each objective's forward and backward retrieval against Kitouni et al.'s table."""
    out = []
    for o, (fwd, bwd, label) in KITOUNI.items():
        native = o == "mlm_u"  # Kitouni et al. query MLM-U in its own mode
        mode = "native mode" if native else "causal decoding"
        for s in ("n2d", "d2n"):
            if fwd is not None:
                x = _em(ctx, name, o, f"{s}_same_train")
                out.append(Claim(
                    f"{o} retrieves forward ({s.upper()} pairs, causal decoding)",
                    verdict("near", x, fwd), pct(x), "kitouni", f"{label}: {paper_pct(fwd)}",
                ))  # fmt: skip
            x = _em(ctx, name, o, f"{s}_reverse_train", native=native)
            out.append(Claim(
                f"{o} retrieves backward ({s.upper()} pairs, {mode})",
                verdict("near", x, bwd), pct(x), "kitouni", f"{label}: {paper_pct(bwd)}",
            ))  # fmt: skip
    return out


def retrieval_table(ctx: Context, name: str) -> str:
    """Kitouni et al.'s table beside the kit's: forward and backward per objective and subset,
    backward by causal decoding and in native mode."""
    f = ctx.get(name)
    if f is None:
        return f"(`{name}` not run)"
    rows = []
    for o, e, nat in exact_match_by_objective(f):
        fwd, bwd, label = KITOUNI.get(o, (None, None, ""))
        paper = f"{paper_pct(fwd)} / {paper_pct(bwd)}" if label else "not quoted here"
        for s in ("n2d", "d2n"):
            rows.append(
                [o, get_path(f, f"steps.{o}.text") or "-", s.upper(), pct(e.get(f"{s}_same_train")),
                 pct(e.get(f"{s}_reverse_train")), pct(nat.get(f"{s}_reverse_train")), paper]
            )  # fmt: skip
    header = [
        "objective", "steps", "pairs", "forward", "backward, causal decoding",
        "backward, native mode", "Kitouni et al. (forward / backward)",
    ]  # fmt: skip
    return table(header, rows) + cells_footer(f, "pairs")


PRESETS = (
    Preset(
        name="retrieval",
        help="Kitouni et al.'s key-value retrieval task, 4 objectives, 3 seeds, behaviour only",
        run_preset="default",
        objectives=("causal", "reverse_token", "bico", "mlm_u"),
        seeds=(0, 1, 2),
        instruments={},
        overrides=("world.source=retrieval",),
        claims=checks,
        citations=CITATIONS,
        tables={"retrieval": retrieval_table},
    ),
)
