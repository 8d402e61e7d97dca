"""The identity bridge as Ma et al. (2026) built it (`interp.data.bridge`), at two model sizes.

`bridge`: pairs of people linked by a relation and its inverse, trained under each of Ma et al.'s
three training sets (forward-only; OCR: the forward fact through the relation x6, the OCR bridge
and B's self-identity; IDN: the forward fact x6 and both naive self-identities), at the kit's
default size (4 layers, d_model 64) and at d_model 128, 3 seeds each (seed s is world s, shared
by every condition and size, so they are compared on the same pairs). Every pair is trained and
asked the reversal question in the bridge's frame, as Ma et al. ask it; behaviour only (exact
match, the echo shortcut, the reversed log-prob test against a random and a same-relation
answer). 1600 steps of 64 texts: 128 passes over the OCR set (Ma et al.: 250 epochs), enough
that every run learns its own training texts (the findings say so, and a condition whose texts
were not learned is "not tested", never "not reproduced").

Ma et al. fine-tune a pretrained Llama-3.2-1B-Instruct and report about 0% -> about 50% reversed
with the OCR bridge and no gain with IDN. No one has run the recipe on a few-layer transformer
trained from scratch, so either answer here is a finding about this regime, not a verdict on
theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from interp.config import BRIDGE_CONDITIONS
from interp.findings.text import nats, pct, table, vs
from interp.findings.verdicts import NOT_TESTED, Claim, verdict
from interp.plan import Axis, Context, Preset, get_path

CITATIONS = {
    "ma": "Ma, Huang, Zhu & Sojoudi 2026, Breaking the Reversal Curse in Autoregressive Language "
    "Models via Identity Bridge, arXiv 2602.02470; recipe and data: "
    "github.com/xutaoma/reversal_curse_code (data/wife_husband, scripts/train_husband_wife.sh)",
}
# Ma et al.'s reversed accuracy (%), Llama-3.2-1B-Instruct fine-tuned on the husband-wife task.
MA_REVERSED = {"forward": 0.0, "ocr": 50.0, "idn": 0.0}
MA_TEXT = {"forward": "about 0%", "ocr": "about 50%", "idn": "about 0% (no gain)"}
LABEL = {"forward": "forward-only", "ocr": "OCR", "idn": "IDN"}
LEARNED = 0.95  # a condition is tested once its training texts are answered this often
STEPS = 1600
SIZES = Axis("size", (("d64", ()), ("d128", ("model.d_model=128", "model.d_mlp=512"))))
CONDITIONS = Axis("condition", tuple((c, (f"world.bridge={c}",)) for c in BRIDGE_CONDITIONS))
CELL = "pairs_train"  # the bridge world's one subset, one template


def cell(ctx: Context, name: str, size: str, condition: str) -> dict[str, Any]:
    """The behaviour findings of one size x condition ({} where not run)."""
    node: dict[str, Any] = get_path(ctx, f"{name}.behaviour.{size}/{condition}/causal") or {}
    return node


def run_cells(ctx: Context, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(size, condition, its behaviour findings) of every size x condition that was run."""
    return [
        (size, c, x)
        for size in SIZES.labels
        for c in CONDITIONS.labels
        if (x := cell(ctx, name, size, c))
    ]


def _em(c: dict[str, Any], direction: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = c.get("exact_match", {}).get(f"pairs_{direction}_train")
    return node


def learned(c: dict[str, Any]) -> bool | None:
    """Whether a condition's runs learned their own training texts: the forward fact and, where
    trained, the OCR bridge and the self-identities, each answered as trained at >= LEARNED
    (None where not measured)."""
    nodes = [_em(c, "same"), *(c.get("bridge", {}).get(k) for k in ("bridge", "identity"))]
    if nodes[0] is None:
        return None
    return all(n["estimate"] >= LEARNED for n in nodes if n)


def checks(ctx: Context, name: str) -> list[Claim]:
    """Ma et al.'s results, per model size, each judged by its rule; a claim about a condition
    that did not learn its own training texts is "not tested"."""
    out = []
    for size in SIZES.labels:
        fwd, ocr, idn = (cell(ctx, name, size, c) for c in ("forward", "ocr", "idn"))

        def judged(rule: str, x: Any, y: Any, *conditions: dict[str, Any]) -> str:
            if any(learned(c) is False for c in conditions):
                return NOT_TESTED
            return verdict(rule, x, y)

        rev = {k: _em(c, "reverse") for k, c in (("forward", fwd), ("ocr", ocr), ("idn", idn))}
        echo = ocr.get("bridge", {}).get("shortcut")
        lp_ocr, lp_fwd, lp_idn = (
            c.get("reversed_role_matched", {}).get(CELL) for c in (ocr, fwd, idn)
        )
        out += [
            Claim(
                f"{size}: trained on the forward fact only, the model does not answer the "
                "reversal question (exact match, in the bridge's frame)",
                judged("near", rev["forward"], MA_REVERSED["forward"], fwd), pct(rev["forward"]),
                "ma", MA_TEXT["forward"],
            ),
            Claim(
                f"{size}: the OCR bridge lifts reversed exact match above forward-only (same "
                "pairs, worlds and seeds)",
                judged("lift", rev["ocr"], rev["forward"], ocr, fwd),
                vs(rev["ocr"], rev["forward"]), "ma", "about 0% -> about 50%",
            ),
            Claim(
                f"{size}: with the OCR bridge, reversed exact match is about "
                f"{MA_REVERSED['ocr']:.0f}%",
                judged("near", rev["ocr"], MA_REVERSED["ocr"], ocr), pct(rev["ocr"]), "ma",
                MA_TEXT["ocr"],
            ),
            Claim(
                f"{size}: the naive IDN form brings no gain over forward-only (reversed exact "
                "match)",
                judged("no gain", rev["idn"], rev["forward"], idn, fwd),
                vs(rev["idn"], rev["forward"]), "ma", "no gain",
            ),
            Claim(
                f"{size}: with the OCR bridge the model does not take the shortcut (the reversal "
                "question answered with B's own name stays near 0%)",
                judged("near", echo, 0.0, ocr), pct(echo), "ma", "stays low",
            ),
            Claim(
                f"{size}: below exact match, the OCR bridge raises log p(correct A) - log p(A "
                "of another pair of the same relation) on the reversal question above "
                "forward-only's",
                judged("nats lift", lp_ocr, lp_fwd, ocr, fwd),
                f"{nats(lp_ocr)} vs {nats(lp_fwd)} nats", "ma",
                "(no log-probs reported; implied by their exact match)",
            ),
            Claim(
                f"{size}: below exact match, the naive IDN form does not raise that difference "
                "above forward-only's",
                judged("nats no gain", lp_idn, lp_fwd, idn, fwd),
                f"{nats(lp_idn)} vs {nats(lp_fwd)} nats", "ma",
                "(no log-probs reported; implied by their exact match)",
            ),
        ]  # fmt: skip
    return out


def bridge_table(ctx: Context, name: str) -> str:
    """Per size x condition, beside Ma et al.'s reversed accuracy: steps, the run's own
    training texts answered as trained, forward and reversed exact match, the echo shortcut,
    and the reversed log-prob difference against a random and a same-relation answer."""
    f = ctx.get(name)
    if f is None:
        return f"(`{name}` not run)"
    rows = []
    for size, c, x in run_cells(ctx, name):
        b = x.get("bridge", {})
        rows.append(
            [size, c, get_path(f, f"steps.{size}/{c}/causal.text") or "-",
             pct(_em(x, "same")), pct(b.get("bridge")), pct(b.get("identity")),
             pct(_em(x, "reverse")), pct(b.get("shortcut")),
             nats(x.get("reversed", {}).get(CELL)),
             nats(x.get("reversed_role_matched", {}).get(CELL)), MA_TEXT[c]]
        )  # fmt: skip
    header = [
        "size", "training set", "steps", "forward", "OCR bridge, as trained",
        "self-identity, as trained", "reversed (bridge's frame)", "echo (shortcut)",
        "log-prob: correct - random A (nats)", "log-prob: correct - same-relation A (nats)",
        "Ma et al., reversed (fine-tuned 1B)",
    ]  # fmt: skip
    node = _em(cell(ctx, name, SIZES.labels[0], "forward"), "reverse")
    n = f"{node['n_runs']} runs, {node['n_items']} pairs in all" if node else "-"
    return (
        table(header, rows)
        + f"\n\nEach cell: mean over runs [95% interval: runs, then pairs within runs; rates "
        f"inside [0, 100]%], {n}; a log-prob difference is per pair, in nats."
    )


def _each(cs: dict[str, dict[str, Any]], text: Callable[[dict[str, Any]], str]) -> str:
    """'forward-only <text>, OCR <text>, IDN <text>' of one size's conditions."""
    return ", ".join(f"{LABEL[c]} {text(x)}" for c, x in cs.items())


def summary(ctx: Context, name: str) -> str:
    """The headline numbers in one sentence per size, quoted from the findings: reversed exact
    match, the echo shortcut, and the same-relation log-prob difference, per condition."""
    node = _em(cell(ctx, name, SIZES.labels[0], "forward"), "reverse")
    if node is None:
        return f"(`{name}` not run)"
    lines = [
        f"Mean [95% interval], {node['n_runs']} runs and {node['n_items']} pairs in all per cell:",
        "",
    ]
    for size in SIZES.labels:
        cs = {c: cell(ctx, name, size, c) for c in CONDITIONS.labels}
        if not all(cs.values()):
            continue

        lines.append(
            f"- **{size}**: forward exact match {_each(cs, lambda x: pct(_em(x, 'same')))}; "
            f"reversed exact match {_each(cs, lambda x: pct(_em(x, 'reverse')))}; echo of B "
            f"{_each(cs, lambda x: pct(x.get('bridge', {}).get('shortcut')))}; reversed log "
            "p(correct A) - log p(same-relation A), nats: "
            f"{_each(cs, lambda x: nats(x.get('reversed_role_matched', {}).get(CELL)))}."
        )
    return "\n".join(lines)


def logprob_table(ctx: Context, name: str) -> str:
    """The reversed log-prob test in words, per size x condition: against a random A (any
    relation) and against an A of the same relation, with the forward question's difference
    against a same-relation B (the test's positive control: it must find the trained fact)."""
    rows = []
    for size, c, x in run_cells(ctx, name):
        rnd = x.get("reversed", {}).get(CELL) or {}
        mat = x.get("reversed_role_matched", {}).get(CELL) or {}
        fwd = mat.get("forward")
        rows.append([size, c, rnd.get("claim", "-"), mat.get("claim", "-"), nats(fwd)])
    header = [
        "size", "training set", "reversed, against a random A",
        "reversed, against an A of the same relation",
        "forward, against a B of the same relation (positive control)",
    ]  # fmt: skip
    return table(header, rows)


PRESETS = (
    Preset(
        name="bridge",
        help="the identity bridge as Ma et al. built it: forward-only, OCR and IDN at d_model "
        "64 and 128, 3 seeds, behaviour only",
        run_preset="default",
        objectives=("causal",),
        seeds=(0, 1, 2),
        instruments={},
        overrides=(
            "world.source=bridge",
            f"train.steps={STEPS}",
            "train.eval_every=0",
            "train.checkpoint_every=400",
        ),
        axes=(SIZES, CONDITIONS),
        claims=checks,
        citations=CITATIONS,
        tables={"bridge": bridge_table, "logprob": logprob_table, "summary": summary},
    ),
)
