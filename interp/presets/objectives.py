"""The objectives on equal footing, and the same comparison at paper grade for one GPU.

`objectives`: every objective of the kit on the fact world, `reverse_token` beside
`reverse_entity`, 3 seeds, each objective asked in its own mode (`interp.modes`) and trained to
`STEPS` (measured with experiments/steps_to_learn.py to meet the convergence criterion,
`interp.evaluate.learned`: own-mode forward exact match on training text and, for a masking
objective, in-document infill of both entities, >= 95%); MLM, MLM-U and BICO without weight
decay.
A claim about an objective some run of which did not learn its own objective reads "not tested",
never "not reproduced". The instruments that compare objectives: behaviour, probes, the update
test (with each objective's own step read in its own mode, `interp.analysis.own_step`).

`gpu`: the same comparison at paper grade (10 seeds; patching on every prompt with 10 noise
draws, the update test on all of a run's new people; the deep dives on the baseline and on
reverse training); unmeasured on a GPU so far: `interp study --preset gpu --device cuda`.

Claims: Golovneva et al. (reverse training helps, entity-preserving best, no forward cost),
Kitouni et al.'s retrieval result and Lv et al.'s BICO carried to facts (each in its own mode),
and Shin et al.'s prediction for the update (each objective's own step).
"""

from __future__ import annotations

from collections.abc import Callable

from interp.analysis.dynamics import DynamicsOptions
from interp.analysis.lens import LensOptions
from interp.analysis.patching import PatchingOptions
from interp.analysis.probing import ProbingOptions
from interp.analysis.qk import QkOptions
from interp.analysis.selective import SelectiveOptions
from interp.analysis.update import UpdateOptions
from interp.evaluate import LEARNED_AT
from interp.findings.text import (
    cells_footer,
    exact_match_by_objective,
    pct,
    per_run_difference,
    pooled_ratio,
    table,
    vs,
)
from interp.findings.verdicts import Claim, verdict, verdict_if_learned
from interp.plan import OBJECTIVE_ORDER, Context, Preset, Use, get_path

# Steps per objective (the rest: the run preset's 800), and the overrides each objective's paper
# sets (MLM and MLM-U: no weight decay, Kitouni et al.'s appendix E.3; BICO: none either, Lv et
# al.'s run_mlm.sh leaves the Hugging Face Trainer's default weight_decay of 0).
# MLM-U: one seed on the fact world (weight decay 0, learned positions) at 12k steps had
# own-mode forward 86-89% and in-document infill 69-94% (D2N lowest), still rising about 2
# points per 1k steps, so 30k. BICO (experiments/steps_to_learn.py, seed 0): at 800 steps
# own-mode forward 17%; at 6k 99-100% with infill of the first entity 85% (N2D) / 58% (D2N)
# (without weight decay 87% / 62%); at 20k forward 100%, infill 99% / 76%, reversed in its own
# mode 53% / 47%. The D2N misses are at the description's first word with the whole description
# masked (95 of 96 misses at 20k), a question its 15% coin per token poses about once in 2,000
# documents: the forward facts are learned long before the infill, which still rises; 40k is
# what 2 cores allow for 3 seeds. At 40k without weight decay (this preset, seeds 0-2) the D2N
# first-entity infill was 91.3 / 98.3 / 92.3%: learned in 1 of 3 runs, so BICO is still "not
# tested"; its training log's quick infill (48 documents) swings by 10-20 points between
# evaluations after 24k steps. A GPU run at 80k or more is what it needs.
# MLM keeps the run preset's steps: its 15% masks seldom cover a whole entity (on the retrieval
# task at 10k it infills 58%). Claims read "not tested" where an objective did not learn.
STEPS: dict[str, int] = {"mlm_u": 30_000, "bico": 40_000}
NO_DECAY = ("train.weight_decay=0",)
PAPER_SETTINGS: dict[str, tuple[str, ...]] = {o: NO_DECAY for o in ("mlm", "mlm_u", "bico")}
GPU_STEPS = {**STEPS, "bico": 80_000}  # the gpu preset: what BICO's infill still needed at 40k


def overrides(steps: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Each objective's paper settings and its steps, as `--set` overrides."""
    return {
        o: (*PAPER_SETTINGS.get(o, ()), *((f"train.steps={steps[o]}",) if o in steps else ()))
        for o in OBJECTIVE_ORDER
        if o in steps or o in PAPER_SETTINGS
    }


OVERRIDES = overrides(STEPS)
CITATIONS = {
    "golovneva": "Golovneva, Allen-Zhu, Weston & Sukhbaatar 2024, Reverse Training to Nurse the "
    "Reversal Curse, arXiv 2403.13799",
    "kitouni": "Kitouni et al. 2024, The Factorization Curse: Which Tokens You Predict Underlie "
    "the Reversal Curse and More, arXiv 2406.05183, retrieval task table",
    "lv": "Lv et al. 2023, An Analysis and Mitigation of the Reversal Curse, arXiv 2311.07468",
    "shin": "Shin et al. 2026, arXiv 2602.02133 (masked diffusion: a step on the forward loss "
    "lowers the reverse loss through shared weights; next-token training does not)",
    "saponati": "Saponati et al. 2025, The underlying structures of self-attention: symmetry, "
    "directionality, and emergent dynamics in Transformer training, arXiv 2502.10927",
}
MASKED = ("mlm", "mlm_u", "bico")  # the objectives Shin et al.'s prediction is about


def em(ctx: Context, preset: str, objective: str, cell: str, causal: bool = False) -> dict | None:
    """An exact-match node of a preset's findings in the objective's own mode (with `causal`,
    by causal decoding beside it), None where absent."""
    key = "causal_exact_match" if causal else "exact_match"
    node: dict | None = get_path(ctx, f"{preset}.behaviour.{objective}.{key}.{cell}")
    return node


def learned(ctx: Context, preset: str, *objectives: str) -> dict | None:
    """The `learned` node of the first of `objectives` that did not learn its objective (or of
    the last): a comparison is judged only where every objective in it learned."""
    nodes = [get_path(ctx, f"{preset}.behaviour.{o}.learned") for o in objectives]
    return next((n for n in nodes if n is not None and not n.get("met")), nodes[-1])


def checks(ctx: Context, name: str) -> list[Claim]:
    """Golovneva et al.'s, Kitouni et al.'s and Lv et al.'s predictions, judged on this preset's
    runs where every objective compared learned its own objective."""
    out: list[Claim] = []

    def check(text: str, source: str, paper: str, rule: str, x: dict | None, y: dict | None,
              objectives: tuple[str, ...]) -> None:  # fmt: skip
        word = verdict_if_learned(learned(ctx, name, *objectives), rule, x, y)
        out.append(Claim(text, word, vs(x, y), source, paper))

    contrasts = (  # (the objective reverse_entity is compared with, the claim, the paper's words)
        ("causal", "Entity-preserving reverse training answers {S} facts reversed more often "
         "than the causal baseline (reverse_entity vs causal)", "far better on reversal tasks"),
        ("reverse_token", "Keeping entities whole matters: entity-preserving above token "
         "reversal, {S} reversed (reverse_entity vs reverse_token)", "entity-preserving best"),
    )  # fmt: skip
    for other, text, paper in contrasts:
        for s in ("n2d", "d2n"):
            cell = f"{s}_reverse_train"
            r, c = em(ctx, name, "reverse_entity", cell), em(ctx, name, other, cell)
            check(text.format(S=s.upper()), "golovneva", paper, "lift", r, c,
                  ("reverse_entity", other))  # fmt: skip
    for o in ("reverse_entity", "reverse_token"):
        r, c = em(ctx, name, o, "n2d_same_train"), em(ctx, name, "causal", "n2d_same_train")
        check(
            f"Reverse training does not cost forward accuracy (N2D forward, {o} vs causal)",
            "golovneva", "no loss forward", "no loss", r, c, (o, "causal"),
        )  # fmt: skip
    for o, source, paper, label in (
        ("mlm_u", "kitouni", "MLM-U 100% backward (retrieval)", "MLM-U, left-to-right masked"),
        ("bico", "lv", "about 70% reversed (Llama, fine-tuned)", "BICO, bidirectional greedy"),
    ):
        for s in ("n2d", "d2n"):
            m = em(ctx, name, o, f"{s}_reverse_train")
            c = em(ctx, name, "causal", f"{s}_reverse_train")
            check(
                f"{label} decoding (its own mode) answers {s.upper()} facts reversed more often "
                "than the causal baseline",
                source, paper, "lift", m, c, (o, "causal"),
            )  # fmt: skip
    out += update_checks(ctx, name)
    return out


def _runs(node: dict | None) -> str:
    if node is None:
        return "needs 2 or more runs with the update test"
    e, lo, hi = node["estimate"], node["low"], node["high"]
    return f"{e:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={node['n_runs']} runs)"


def _qk_text(node: dict | None) -> str:
    if not node or node.get("estimate") is None:
        return "-"
    return str(node.get("text") or f"{node['estimate']:+.3f}")


def own_reverse(f: dict, objective: str) -> tuple[dict | None, dict | None]:
    """An objective's own step: its reverse first-token alignment minus the control, per run
    (`per_run_difference`), and as a pooled share of the forward effect (`pooled_ratio`)."""
    r = per_run_difference(f, "update", objective, "own_align_reverse_first_mean",
                           "own_align_reverse_first_control_mean")  # fmt: skip
    q = pooled_ratio(f, "update", objective, "own_align_reverse_first", "own_align_forward_first")
    return r, q


def update_checks(ctx: Context, name: str) -> list[Claim]:
    """Shin et al.'s prediction, read from each objective's own step (`own_*`, the update test's
    `interp.analysis.own_step`): reverse first-token alignment above its control for a masking
    objective, not for next-token training; the positive control (the own step on both orders,
    `pair_*`) moves the reverse alignment; and the QK symmetry of bidirectional training.
    Every difference is the mean over runs of each run's (fact - control)."""
    f = ctx.get(name) or {}
    out: list[Claim] = []
    for o in ("causal", *MASKED):
        if get_path(f, f"instruments.update.{o}") is None:
            continue
        r, q = own_reverse(f, o)
        lr = learned(ctx, name, o)
        if o == "causal":
            text = ("Next-token training: its own step on 'A is B' does not raise the reverse "
                    "(A | B) first-token alignment above its control")  # fmt: skip
            rule, paper = "null", "no reverse transfer under next-token training"
        else:
            text = (f"{o}: its own step on 'A is B' raises the reverse (A | B) first-token "
                    "alignment, read in its own mode, above its control")  # fmt: skip
            rule, paper = "positive", "the forward step lowers the reverse loss"
        ev = _runs(r)
        if q is not None:
            ev += f"; pooled, {q['text']} of the forward effect"
        out.append(Claim(text, verdict_if_learned(lr, rule, r), ev, "shin", paper))
        p = per_run_difference(f, "update", o, "pair_align_reverse_first_mean",
                               "pair_align_reverse_first_control_mean")  # fmt: skip
        q = pooled_ratio(f, "update", o, "pair_align_reverse_first", "pair_align_forward_first")
        ev = _runs(p) + (f"; pooled, {q['text']} of the forward effect" if q else "")
        out.append(Claim(
            f"Positive control ({o}): its own step on both orders raises the reverse alignment "
            "above its control", verdict_if_learned(lr, "positive", p, kind="hypothesis"), ev,
        ))  # fmt: skip
    for o in ("mlm", "mlm_u"):
        x = get_path(f, f"instruments.qk.{o}.symmetry_mean")
        y = get_path(f, "instruments.qk.causal.symmetry_mean")
        if x is None:
            continue
        out.append(Claim(
            f"Bidirectional training makes W_Q W_K^T more symmetric: {o} above causal (QK "
            "symmetry score, mean over heads and layers)",
            verdict("above", x, y), f"{x.get('text', '-')} vs {(y or {}).get('text', '-')}",
            "saponati", "encoder-only (bidirectional) models: symmetric",
        ))  # fmt: skip
    return out


def own_reverse_text(objective: str) -> Callable[[Context, str], str]:
    """The README's words for an objective's own step: its reverse first-token alignment above
    the control (mean over runs) and that as a share of the forward effect, pooled."""

    def text(ctx: Context, name: str) -> str:
        r, q = own_reverse(ctx.get(name) or {}, objective)
        return _runs(r) + (f", pooled {q['text']} of the forward effect" if q else "")

    return text


def lowest_infill(objective: str) -> Callable[[Context, str], str]:
    """An objective's lowest in-document infill cell over its runs, as 'D2N, first entity 79.8%
    [..]'."""

    def text(ctx: Context, name: str) -> str:
        fills = get_path(ctx.get(name) or {}, f"behaviour.{objective}.infill") or {}
        if not fills:
            return "n/a"
        cell, node = min(fills.items(), key=lambda kv: kv[1]["estimate"])
        which = "first" if cell.split("_")[1] == "reverse" else "second"
        return f"{cell.split('_')[0].upper()}, the {which} entity, {pct(node)}"

    return text


def bico_text(ctx: Context, name: str) -> str:
    """The README's sentence on BICO, as the runs came out: where every run learned its own
    objective, its reversed N2D rate beside the causal baseline's and Lv et al.'s verdict; where
    some run did not, the rate and why it is not tested (what fell short of 95%)."""
    f = ctx.get(name) or {}
    lr = get_path(f, "behaviour.bico.learned")
    if lr is None:
        return "BICO was not run"
    x, y = em(ctx, name, "bico", "n2d_reverse_train"), em(ctx, name, "causal", "n2d_reverse_train")
    rate = (x or {}).get("text") or pct(x)
    steps = get_path(f, "steps.bico.text") or "-"
    if lr.get("met"):
        word = verdict_if_learned(learned(ctx, name, "bico", "causal"), "lift", x, y)
        return (
            f"BICO ({steps} steps) learned its objective ({lr['text']}) and answers N2D facts "
            f"reversed {rate} in its own mode (next-token training: {pct(y)}): Lv et al.'s fix, "
            f"{word}"
        )
    fills = get_path(f, "behaviour.bico.infill") or {}
    worst = min((x for v in fills.values() for x in v.get("per_run") or [v["estimate"]]), default=1)
    short = (
        f"its infill is still short of 95% (lowest: {lowest_infill('bico')(ctx, name)})"
        if worst < LEARNED_AT  # some run's infill; otherwise its forward fell short
        else "its own-mode forward exact match is short of 95%"
    )
    return (
        f"BICO at {steps} steps answers N2D reversed {rate} in its own mode but is "
        f'"not tested" (it learned its objective in {lr.get("text", "-")}): {short}'
    )


TEXTS = {
    **{f"own_reverse_{o}": own_reverse_text(o) for o in ("causal", *MASKED)},
    **{f"infill_{o}": lowest_infill(o) for o in MASKED},
    "bico": bico_text,
}


def objectives_table(ctx: Context, name: str) -> str:
    """Per objective: its mode, steps, whether every run learned its own objective, its lowest
    in-document infill, forward and reversed exact match in its own mode (training templates),
    and reversed by causal decoding where it also has that."""
    f = ctx.get(name)
    if f is None:
        return f"(`{name}` not run)"
    rows = []
    for o, e, causal in exact_match_by_objective(f):
        b = f["behaviour"][o]
        fills = b.get("infill", {})
        fill = min((v["estimate"] for v in fills.values()), default=None)
        rows.append(
            [o, get_path(f, f"steps.{o}.text") or "-", get_path(b, "learned.text") or "-",
             f"{100 * fill:.1f}%" if fill is not None else "n/a",
             pct(e.get("n2d_same_train")), pct(e.get("d2n_same_train")),
             pct(e.get("n2d_reverse_train")), pct(e.get("d2n_reverse_train")),
             pct(causal.get("n2d_reverse_train")) if causal else "n/a",
             " / ".join(_qk_text(get_path(f, f"instruments.qk.{o}.{k}")) for k in
                        ("symmetry_first_layer", "symmetry_last_layer", "symmetry_init_mean"))]
        )  # fmt: skip
    header = [
        "objective", "steps", "learned its objective", "infill (lowest cell)", "forward N2D",
        "forward D2N", "reversed N2D", "reversed D2N", "reversed N2D, causal decoding",
        "QK symmetry: layer 0 / last layer / at initialisation",
    ]  # fmt: skip
    return table(header, rows) + cells_footer(f, "people")


_COMPARE = {
    "probing": Use(ProbingOptions()),
    "update": Use(UpdateOptions(n_facts=10)),
    "qk": Use(QkOptions()),
}

PRESETS = (
    Preset(
        name="objectives",
        help="every objective in its own mode, 3 seeds, each judged only where it learned "
        "its objective",
        run_preset="default",
        objectives=OBJECTIVE_ORDER,
        seeds=(0, 1, 2),
        instruments=_COMPARE,
        objective_overrides=OVERRIDES,
        claims=checks,
        citations=CITATIONS,
        tables={"objectives": objectives_table, **TEXTS},
    ),
    Preset(
        name="gpu",
        help="the objectives study at paper grade (10 seeds, every instrument), for one GPU",
        run_preset="default",
        objectives=OBJECTIVE_ORDER,
        seeds=tuple(range(10)),
        instruments={
            "lens": Use(LensOptions(tuned=True), on=("causal", "reverse_entity")),
            "patching": Use(
                PatchingOptions(max_prompts=0, noise_samples=10), on=("causal", "reverse_entity")
            ),
            "probing": Use(ProbingOptions()),
            "update": Use(UpdateOptions()),
            "qk": Use(QkOptions()),
            "dynamics": Use(DynamicsOptions(), on=("causal",)),
            "selective": Use(SelectiveOptions(), on=("causal", "reverse_entity")),
        },
        objective_overrides=overrides(GPU_STEPS),
        claims=checks,
        citations=CITATIONS,
        tables={"objectives": objectives_table, **TEXTS},
    ),
)
