"""The gradient-update test's statistics and summary, computed from its saved arrays alone.

`summarise(arrays, options)` rebuilds everything `analysis/update.json` holds from
`analysis/update.npz` and the options, so the summary can be recomputed (or changed) without
rerunning the update test: `summary_from_saved(run_dir)`. Per fact the unit is the fact
(templates averaged first); tests are paired over facts (t-test and Wilcoxon signed-rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float
from scipy import stats

from interp.results import Result, Section, Summary, number, read_result, section, summary_json
from interp.stats import NONNEGATIVE, REAL, SIGNED_UNIT, UNIT, equivalence_bound
from interp.stats import paired_test as paired_t_test

LINEAR_TOLERANCE = 0.2  # revert/only group tables are kept when their sum is within 20% of full

CONTEXTS = ("alone", "prompt")  # entity alone ("<bos> A") or inside the prompts
ENTITIES = ("a", "b")  # A's last token (direction: B's first token), B's last token (A's first)


@dataclass(frozen=True)
class Effect(Section):
    """A per-fact change against its matched control, tests paired over facts."""

    mean: float | None = number("mean over facts", REAL, headline=True)
    control_mean: float | None = number("the same for the control", REAL, headline=True)
    p: float | None = number(
        "paired t-test p, correct vs control", UNIT, pvalue=True, headline=True
    )


@dataclass(frozen=True)
class Alignment(Effect):
    """A first-order change (grad . update) against its control, and the cosine."""

    cos_mean: float | None = number(
        "cosine of the gradient with the update, mean over facts", SIGNED_UNIT, headline=True
    )


@dataclass(frozen=True)
class Projection(Effect):
    """Delta h of an entity alone along the other entity's direction, mean over depths and
    facts; the control: along other people's tokens."""

    p: float | None = number("Wilcoxon p, correct vs control", UNIT, pvalue=True, headline=True)


@dataclass(frozen=True)
class ByQuery(Section):
    """Delta log p of the answer after the update, forward vs reverse."""

    forward: Effect = section(Effect, "log p(B | 'A is the'), control: other new people's B")
    reverse: Effect = section(Effect, "log p(A | 'the B is called'), control: other people's A")


@dataclass(frozen=True)
class ByProbeDirection(Section):
    """Where the update lands, on the entity alone."""

    a_to_b: Projection = section(Projection, "A's last token along B's first token's unembedding")
    b_to_a: Projection = section(Projection, "B's last token along A's first token's unembedding")


@dataclass(frozen=True)
class AlignByQuery(Section):
    """First-order change of log p(answer's first token), grad . update."""

    forward_first: Alignment = section(Alignment, "forward, control: other first tokens")
    reverse_first: Alignment = section(Alignment, "reverse, control: other first tokens")


@dataclass(frozen=True)
class Gain(Section):
    """A paired difference over facts."""

    mean: float | None = number("mean over facts", REAL, headline=True)
    p: float | None = number("paired t-test p over facts", UNIT, pvalue=True, headline=True)


@dataclass(frozen=True)
class Loss(Section):
    """The fact's training loss, mean over facts."""

    before_mean: float | None = number("before the update", NONNEGATIVE)
    after_mean: float | None = number("after the update", NONNEGATIVE)


@dataclass(frozen=True)
class UpdateSummary(Summary):
    """The gradient-update test's headline numbers (`result.summary` of `run_analysis`): per
    fact, one update on "A is B", then what moved forward and in reverse, against matched
    controls (tests paired over facts). The other variants (first token only, held-out
    templates, cue controls) and per parameter group (`group_attribution`,
    `group_norm_sq_share`) are details."""

    delta_logp: ByQuery = section(ByQuery, "Delta log p of the answer, summed over its tokens")
    specific_forward_minus_reverse: Gain = section(
        Gain, "fact-specific gain (correct - control), forward minus reverse"
    )
    proj: ByProbeDirection = section(ByProbeDirection, "where the update lands")
    align: AlignByQuery = section(AlignByQuery, "the step-size-free alignment")
    reverse_first_bound_pct_of_forward: float | None = number(
        "95% equivalence bound on the reverse alignment, % of forward", NONNEGATIVE, headline=True
    )
    first_order_over_measured_forward: float | None = number(
        "first-order prediction over the measured forward change (1: linear)", REAL, headline=True
    )
    both_align_reverse_first: Effect = section(
        Effect, "Both-subset control: reverse first-token alignment of a trained reverse fact"
    )
    own_align_forward_first: Effect = section(
        Effect, "the objective's own step, read in its own mode: forward first-token alignment"
    )
    own_align_reverse_first: Effect = section(
        Effect, "the objective's own step, read in its own mode: reverse first-token alignment"
    )
    pair_align_forward_first: Effect = section(
        Effect, "positive control: the own step on both orders, forward first-token alignment"
    )
    pair_align_reverse_first: Effect = section(
        Effect, "positive control: the own step on both orders, reverse first-token alignment"
    )
    top_group_attribution_fraction_forward: float | None = number(
        "share of the forward first-order change of the top parameter group", REAL, headline=True
    )
    update_loss: Loss = section(Loss, "the fact's training loss")
    update_norm_mean: float | None = number(
        "norm of the parameter update, mean over facts", NONNEGATIVE
    )

    def group_attribution(self) -> dict[str, float]:
        """First-order forward change attributed to each parameter group (grad . update)."""
        return self.prefixed("attribution_forward_")

    def group_norm_sq_share(self) -> dict[str, float]:
        """Each parameter group's share of the update's squared norm."""
        return self.prefixed("norm_sq_share_")


def summary_from_saved(run_dir: str | Path) -> dict[str, Any]:
    """update.json's content recomputed from RUN_DIR/analysis/update.npz and its options."""
    saved = read_result(run_dir, "update")
    return summarise(saved.arrays, saved.options)


def paired_test(
    correct: Float[np.ndarray, " n"], control: Float[np.ndarray, " n"]
) -> dict[str, float]:
    """Means of both, the mean difference with a 95% t-interval, paired t-test (the kit's one,
    `interp.stats.paired_test`) and Wilcoxon p."""
    diff = correct - control
    t = paired_t_test(correct, control)
    out = {
        "n": float(t.n),
        "mean": t.mean,
        "control_mean": t.control_mean,
        "diff_mean": t.diff_mean,
        "diff_lo": t.diff_low,
        "diff_hi": t.diff_high,
        "t_p": t.p,
        "wilcoxon_p": 1.0,
    }
    if t.n >= 2 and np.ptp(diff) > 0:
        out["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)
    return out


def per_fact_scores(
    a: dict[str, np.ndarray], tokens: str, templates: str = "all"
) -> dict[str, dict[str, Float[np.ndarray, " fact"]]]:
    """direction -> {"correct", "control", "cue_control"}: one Delta log p per fact.

    `correct`: Delta log p(k's answer | k's prompts). `control` (other answers, same prompts): the
    mean over the other pool people's answers ("full"), or over the distinct first tokens other
    than the correct one ("first"). `cue_control` (same answer, other prompts): k's answer in the
    other pool people's prompts, which catches a generic boost of the answer's own tokens.
    `tokens`: "full" (summed over the answer) or "first"; `templates`: "all", "train", "heldout".
    Values are averaged over the selected templates first, so the unit is the fact.
    """
    keep = np.ones(len(a["templates"]), bool) if templates == "all" else a["templates"] == templates
    row = a[f"delta_row_{tokens}"][:, :, keep].mean(2)  # [F, D, K]
    col = a[f"delta_col_{tokens}"][:, :, keep].mean(2)  # [F, D, K]
    F, K = row.shape[0], row.shape[2]
    out = {}
    for di, d in enumerate(a["directions"]):
        correct, control, cue = np.zeros(F), np.zeros(F), np.zeros(F)
        for k in range(F):
            others = [j for j in range(K) if j != k]
            correct[k] = row[k, di, k]
            cue[k] = col[k, di, others].mean()
            if tokens == "first":  # one representative per distinct other first token
                toks = a["first_tokens"][:, di]
                distinct: dict[int, int] = {}
                for j in others:
                    if toks[j] != toks[k]:
                        distinct.setdefault(int(toks[j]), j)
                others = list(distinct.values())
            control[k] = row[k, di, others].mean() if others else np.nan
        out[str(d)] = {"correct": correct, "control": control, "cue_control": cue}
    return out


def _effect(r: dict[str, float]) -> Effect:
    return Effect(mean=r["mean"], control_mean=r["control_mean"], p=r["t_p"])


def summarise(a: dict[str, np.ndarray], options: dict[str, Any]) -> dict[str, Any]:
    """update.json: options, the summary (`UpdateSummary`, the details beside it), and the
    tables behind it."""
    name = {"same": "forward", "reverse": "reverse"}
    summary: dict[str, float] = {}  # the details
    tests: dict[str, Any] = {}
    effects: dict[str, Effect] = {}
    specific = Gain()
    for tokens, tag in (("full", ""), ("first", "_first")):
        for tpl, ttag in (("all", ""), ("heldout", "_heldout")):
            main = tokens == "full" and tpl == "all"  # the declared variant
            scores = per_fact_scores(a, tokens, tpl)
            for d, s in scores.items():
                key = f"delta_logp_{name[d]}{tag}{ttag}"
                r = paired_test(s["correct"], s["control"])
                rc = paired_test(s["correct"], s["cue_control"])
                tests[key] = r
                tests[f"{key}_cue"] = rc
                if main:
                    effects[name[d]] = _effect(r)
                else:
                    summary[f"{key}_mean"] = r["mean"]
                    summary[f"{key}_control_mean"] = r["control_mean"]
                    summary[f"{key}_p"] = r["t_p"]
                summary[f"{key}_wilcoxon_p"] = r["wilcoxon_p"]
                summary[f"{key}_cue_control_mean"] = rc["control_mean"]
                summary[f"{key}_cue_p"] = rc["t_p"]
            # Is the fact-specific gain larger forward than in reverse? (paired over facts)
            fwd = scores["same"]["correct"] - scores["same"]["control"]
            rev = scores["reverse"]["correct"] - scores["reverse"]["control"]
            r = paired_test(fwd, rev)
            tests[f"specific_forward_vs_reverse{tag}{ttag}"] = r
            if main:
                specific = Gain(mean=r["diff_mean"], p=r["t_p"])
            else:
                summary[f"specific_forward_minus_reverse{tag}{ttag}_mean"] = r["diff_mean"]
                summary[f"specific_forward_minus_reverse{tag}{ttag}_p"] = r["t_p"]

    own = a["delta_own_full"].mean(2)  # [F, D, K]
    F = own.shape[0]
    other = np.ones((F, own.shape[2]), bool)
    other[np.arange(F), np.arange(F)] = False
    for di, d in enumerate(a["directions"]):
        summary[f"delta_logp_{name[str(d)]}_other_facts_mean"] = float(own[:, di][other].mean())
        summary[f"logp_{name[str(d)]}_before_mean"] = float(a["logp0_correct"][:, di].mean())
    loss = Loss(
        before_mean=float(a["loss_before"].mean()), after_mean=float(a["loss_after"].mean())
    )

    layers = [str(x) for x in a["layers"]]
    projections: dict[str, Any] = {}
    direction_of = {"a": "a_to_b", "b": "b_to_a"}
    proj: dict[str, Projection] = {}
    for c, ctx in enumerate(CONTEXTS):
        for e, ent in enumerate(ENTITIES):
            key = f"{ctx}_{direction_of[ent]}"
            rows = []
            for li, lab in enumerate(layers):
                r = paired_test(a["proj"][:, c, e, li], a["proj_control"][:, c, e, li])
                rc = paired_test(a["cos"][:, c, e, li], a["cos_control"][:, c, e, li])
                rows.append(
                    {
                        "layer": lab,
                        "proj": r["mean"],
                        "proj_control": r["control_mean"],
                        "proj_p": r["wilcoxon_p"],
                        "cos": rc["mean"],
                        "cos_control": rc["control_mean"],
                        "cos_p": rc["wilcoxon_p"],
                        "dh_rel": float(a["dh_rel"][:, c, e, li].mean()),
                    }
                )
                if ctx == "alone":
                    summary[f"proj_{direction_of[ent]}_{lab}"] = r["mean"]
                    summary[f"proj_{direction_of[ent]}_control_{lab}"] = r["control_mean"]
            projections[key] = rows
            # Over layers: the mean over depths of each fact's projection (one number per fact).
            r = paired_test(a["proj"][:, c, e].mean(-1), a["proj_control"][:, c, e].mean(-1))
            rc = paired_test(a["cos"][:, c, e].mean(-1), a["cos_control"][:, c, e].mean(-1))
            pre = "" if ctx == "alone" else "prompt_"
            if ctx == "alone":
                proj[direction_of[ent]] = Projection(r["mean"], r["control_mean"], r["wilcoxon_p"])
            else:
                summary[f"{pre}proj_{direction_of[ent]}_mean"] = r["mean"]
                summary[f"{pre}proj_{direction_of[ent]}_control_mean"] = r["control_mean"]
                summary[f"{pre}proj_{direction_of[ent]}_p"] = r["wilcoxon_p"]
            summary[f"{pre}cos_{direction_of[ent]}_mean"] = rc["mean"]
            summary[f"{pre}cos_{direction_of[ent]}_control_mean"] = rc["control_mean"]
            summary[f"{pre}dh_rel_{ent}_mean"] = float(a["dh_rel"][:, c, e].mean())

    group_names = [str(g) for g in a["groups"]]
    sq = a["group_norm"] ** 2
    share = sq.sum(0) / max(sq.sum(), 1e-300)
    full = a["full_correct"]  # [F, D]
    lost = full[:, None, :] - a["revert"]  # [F, G, D]: gain lost when group g is reverted
    frac_lost = lost.mean(0) / np.where(np.abs(full.mean(0)) > 0, full.mean(0), np.nan)  # [G, D]
    frac_only = a["only"].mean(0) / np.where(np.abs(full.mean(0)) > 0, full.mean(0), np.nan)
    # The revert/only tables decompose the effect only in the linear regime: kept when the
    # group-alone effects sum to within LINEAR_TOLERANCE of the full forward effect.
    only_sum_ratio = float(a["only"][:, :, 0].sum(1).mean() / full[:, 0].mean())
    keep_tables = abs(only_sum_ratio - 1) <= LINEAR_TOLERANCE
    summary["only_sum_over_full_forward"] = only_sum_ratio
    attribution = a["attribution"]  # [F, D, G]: grad f . Delta theta per group
    attr_total = attribution.sum(-1).mean(0)  # [D]
    group_rows = []
    for i, g in enumerate(group_names):
        row = {
            "group": g,
            "norm_mean": float(a["group_norm"][:, i].mean()),
            "norm_sq_share": float(share[i]),
            "attribution_forward": float(attribution[:, 0, i].mean()),
            "attribution_reverse": float(attribution[:, 1, i].mean()),
            "attribution_fraction_forward": float(attribution[:, 0, i].mean() / attr_total[0]),
            "alignment_forward": float(a["align"][:, 0, i].mean()),
            "alignment_reverse": float(a["align"][:, 1, i].mean()),
            "alignment_reverse_first": float(a["align_first"][:, 1, i].mean()),
            "alignment_reverse_first_control": float(a["align_first_control"][:, 1, i].mean()),
        }
        if keep_tables:
            row.update(
                revert_loss_forward=float(lost[:, i, 0].mean()),
                revert_loss_reverse=float(lost[:, i, 1].mean()),
                revert_fraction_forward=float(frac_lost[i, 0]),
                only_fraction_forward=float(frac_only[i, 0]),
            )
        group_rows.append(row)
    top = int(np.argmax(attribution[:, 0].mean(0)))
    top_norm = int(np.argmax(share))
    summary["top_group_norm_sq_share"] = float(share[top_norm])
    for i, g in enumerate(group_names):
        summary[f"attribution_forward_{g}"] = float(attribution[:, 0, i].mean())
        summary[f"norm_sq_share_{g}"] = float(share[i])
    align_details, align = alignment_summary(a, tests)
    summary.update(align_details)
    typed = UpdateSummary(
        delta_logp=ByQuery(**effects),
        specific_forward_minus_reverse=specific,
        proj=ByProbeDirection(**proj),
        align=align["align"],
        reverse_first_bound_pct_of_forward=align["reverse_first_bound_pct_of_forward"],
        first_order_over_measured_forward=align["first_order_over_measured_forward"],
        both_align_reverse_first=align["both_align_reverse_first"],
        own_align_forward_first=align["own_align_forward_first"],
        own_align_reverse_first=align["own_align_reverse_first"],
        pair_align_forward_first=align["pair_align_forward_first"],
        pair_align_reverse_first=align["pair_align_reverse_first"],
        top_group_attribution_fraction_forward=float(attribution[:, 0, top].mean() / attr_total[0]),
        update_loss=loss,
        update_norm_mean=float(a["total_norm"].mean()),
    )

    return {
        "options": options,
        "n_facts": len(a["facts"]),
        "n_pool": len(a["pool"]),
        "summary": summary_json(typed, summary),
        "tests": tests,
        "projections": projections,
        "layers": layers,
        "groups": group_rows,
        "top_group_attribution": group_names[top],
        "revert_only_tables": "kept"
        if keep_tables
        else (
            f"dropped: group-alone effects sum to {only_sum_ratio:.2f}x the full forward effect "
            f"(outside 1 +- {LINEAR_TOLERANCE}); take a smaller --lr for the linear regime"
        ),
        "decomposition": decomposition_tables(a),
        "top_group_norm": group_names[top_norm],
        "definitions": {
            "delta_logp": "log p(answer | prompt) after the update minus before, summed over the "
            "answer's tokens, averaged over the fact's prompts of one direction",
            "forward": "prompt 'A_i ... the' (n2d order), answer B_i",
            "reverse": "prompt 'the B_i ... ' (d2n order), answer A_i",
            "control": "mean Delta log p of every other new person's answer in fact i's prompts "
            "(first-token scores: the distinct other first tokens)",
            "cue_control": "mean Delta log p of fact i's answer in every other new person's "
            "prompts of the same direction (a generic boost of the answer)",
            "p": "paired t-test over facts, correct vs control (wilcoxon_p: signed-rank test; "
            "cue_p: paired t-test, correct vs cue_control)",
            "first": "the answer's first token only (forward: B's role word; reverse: A's first "
            "name), free of the within-entity bigram the update document teaches",
            "proj_a_to_b": "Delta h at A's last token ('<bos> A' alone) projected on the unit "
            "direction LN_final-gamma * W_U[:, B's first token] (centred); "
            "control: mean over random tokens' directions",
            "proj_b_to_a": "Delta h at B's last token ('<bos> B' alone) on A's first token's "
            "direction; prompt_*: the same inside forward / reverse prompts",
            "revert_loss_forward_G": "Delta log p(B | forward prompt) of the full update minus "
            "that with group G's update reverted (nats); kept only in the linear regime",
            "alignment": "-grad L . grad log p(answer | prompt): the first-order change of the "
            "log-prob per unit SGD step (influence), summed over groups; control: the same for "
            "every other new person's own prompts and answer",
            "attribution": "grad log p . Delta theta of the step taken, per group; the groups "
            "sum exactly to the total first-order change",
            "first_order_over_measured": "lr * alignment / measured Delta log p (1 in the linear "
            "regime; SGD, one step)",
            "reverse_first_bound_pct_of_forward": "equivalence bound (90% t-interval) of the "
            "reverse first-token alignment minus its control, as % of the forward one",
            "both_*": "positive control on the Both subset (learned in both orders): the "
            "forward step's alignment with log p(A | B-prompt); both_all_*: the step on both "
            "orders' documents",
            "decomposition": "per layer and position role (A, B, final = the position before B, "
            "template): share of the MLP weight update (<G_r, G>/|G|^2), its first-order effect "
            "per unit step on each direction, and the written values' (-backward signal) cosine "
            "with the other entity's first token (control: other roles at A, other first names "
            "at B) and that token's rank on the vocabulary",
        },
    }


def format_summary(result: Result) -> str:
    """A few lines for the terminal."""
    s = result["summary"]
    o = result["options"]
    lines = [
        f"update test: {result['n_facts']} facts, {o['steps']} {o['optimizer']} step(s), "
        f"lr={o['lr']}; update loss {s['update_loss_before_mean']:.3f} -> "
        f"{s['update_loss_after_mean']:.3f}",
        f"{'':<20}{'Delta correct':>14}{'other answer':>13}{'p (t)':>9}{'p (W)':>9}"
        f"{'other cue':>11}{'p (t)':>9}",
    ]
    for key, label in (
        ("delta_logp_forward", "forward (B|A)"),
        ("delta_logp_reverse", "reverse (A|B)"),
        ("delta_logp_forward_first", "forward 1st token"),
        ("delta_logp_reverse_first", "reverse 1st token"),
    ):
        lines.append(
            f"{label:<20}{s[key + '_mean']:>14.4f}{s[key + '_control_mean']:>13.4f}"
            f"{s[key + '_p']:>9.3g}{s[key + '_wilcoxon_p']:>9.3g}"
            f"{s[key + '_cue_control_mean']:>11.4f}{s[key + '_cue_p']:>9.3g}"
        )
    lines.append(
        f"projection on the other entity's direction (mean over layers): "
        f"A->B {s['proj_a_to_b_mean']:+.4g} (control {s['proj_a_to_b_control_mean']:+.4g}"
        f", p={s['proj_a_to_b_p']:.3g}); B->A {s['proj_b_to_a_mean']:+.4g} "
        f"(control {s['proj_b_to_a_control_mean']:+.4g}, p={s['proj_b_to_a_p']:.3g})"
    )
    lines.append(
        f"alignment per unit step, first token (vs other people's): forward "
        f"{s['align_forward_first_mean']:.3g} ({s['align_forward_first_control_mean']:.3g}), "
        f"reverse {s['align_reverse_first_mean']:.3g} "
        f"({s['align_reverse_first_control_mean']:.3g}, p={s['align_reverse_first_p']:.2g}); "
        f"reverse specific below {s['reverse_first_bound_pct_of_forward']:.2g}% of forward"
    )
    if "both_align_reverse_first_mean" in s:
        lines.append(
            f"positive control (Both subset): reverse first-token alignment "
            f"{s['both_align_reverse_first_mean']:.3g} vs control "
            f"{s['both_align_reverse_first_control_mean']:.3g} "
            f"(p={s['both_align_reverse_first_p']:.2g})"
        )
    lines.append(
        f"first order / measured (forward): {s['first_order_over_measured_forward']:.3f}; "
        f"top group by attribution: {result['top_group_attribution']} "
        f"({s['top_group_attribution_fraction_forward']:.0%}); by norm: "
        f"{result['top_group_norm']}; revert/only tables {result['revert_only_tables']}"
    )
    return "\n".join(lines)


def alignment_summary(
    a: dict[str, np.ndarray], tests: dict[str, Any]
) -> tuple[dict[str, float], dict[str, Any]]:
    """The step-size-free alignment: forward vs reverse against matched controls, the
    first-order check against the measured change, the reverse bound, the Both control.
    Returns (details, the declared pieces of `UpdateSummary`)."""
    name = {"same": "forward", "reverse": "reverse"}
    out: dict[str, float] = {}
    headline = ("both_align_reverse_first", *(f"{t}_align_{d}_first" for t in ("own", "pair")
                                              for d in ("forward", "reverse")))  # fmt: skip
    typed: dict[str, Any] = dict.fromkeys(headline, Effect())
    aligned: dict[str, Alignment] = {}
    specific: dict[str, np.ndarray] = {}
    for m in ("", "_first"):
        for di, d in enumerate(a["directions"]):
            key = f"align_{name[str(d)]}{m}"
            align = a[f"align{m}"][:, di].sum(-1)
            control = a[f"align{m}_control"][:, di].sum(-1)
            r = paired_test(align, control)
            tests[key] = r
            specific[key] = align - control
            cos = float(a[f"align{m}_cos"][:, di].mean())
            if m == "_first":
                aligned[f"{name[str(d)]}_first"] = Alignment(
                    r["mean"], r["control_mean"], r["t_p"], cos
                )
            else:
                out[f"{key}_mean"] = r["mean"]
                out[f"{key}_control_mean"] = r["control_mean"]
                out[f"{key}_p"] = r["t_p"]
                out[f"{key}_cos_mean"] = cos
            out[f"{key}_cos_control_mean"] = float(a[f"align{m}_cos_control"][:, di].mean())
        fwd = specific[f"align_forward{m}"].mean()
        rev = specific[f"align_reverse{m}"]
        out[f"align_reverse_over_forward{m}"] = float(rev.mean() / fwd)
        bound = float(100 * equivalence_bound(rev) / abs(fwd))
        if m == "_first":
            typed["reverse_first_bound_pct_of_forward"] = bound
        else:
            out[f"reverse{m}_bound_pct_of_forward"] = bound
    typed["align"] = AlignByQuery(**aligned)
    lr = float(a["lr"]) if "lr" in a else float("nan")
    for di, d in enumerate(a["directions"]):
        measured = a["full_correct"][:, di].mean()
        ratio = float(lr * a["align"][:, di].sum(-1).mean() / measured)
        if name[str(d)] == "forward":
            typed["first_order_over_measured_forward"] = ratio
        else:
            out[f"first_order_over_measured_{name[str(d)]}"] = ratio
        out[f"attribution_total_{name[str(d)]}_mean"] = float(
            a["attribution"][:, di].sum(-1).mean()
        )
    for c, ctx in enumerate(CONTEXTS):
        for e, ent in enumerate(ENTITIES):
            tag = f"{ctx}_{'a_to_b' if ent == 'a' else 'b_to_a'}"
            r = paired_test(a["dlogit"][:, c, e], a["dlogit_control"][:, c, e])
            out[f"dlogit_{tag}_mean"] = r["mean"]
            out[f"dlogit_{tag}_control_mean"] = r["control_mean"]
            out[f"dlogit_{tag}_p"] = r["t_p"]
    for tag in ("both", "both_all", "own", "pair"):
        for m in ("", "_first"):
            if f"{tag}{m}_align" not in a:
                continue
            align, control = a[f"{tag}{m}_align"], a[f"{tag}{m}_align_control"]
            for di, d in enumerate(a["directions"]):
                r = paired_test(align[:, di], control[:, di])
                tests[f"{tag}_{name[str(d)]}{m}"] = r
                if f"{tag}_align_{name[str(d)]}{m}" in headline:
                    typed[f"{tag}_align_{name[str(d)]}{m}"] = _effect(r)
                else:
                    out[f"{tag}_align_{name[str(d)]}{m}_mean"] = r["mean"]
                    out[f"{tag}_align_{name[str(d)]}{m}_control_mean"] = r["control_mean"]
                    out[f"{tag}_align_{name[str(d)]}{m}_p"] = r["t_p"]
                out[f"{tag}_cos_{name[str(d)]}{m}_mean"] = float(a[f"{tag}{m}_cos"][:, di].mean())
            out[f"{tag}_reverse_over_forward{m}"] = float(
                (align[:, 1] - control[:, 1]).mean() / (align[:, 0] - control[:, 0]).mean()
            )
    return out, typed


def decomposition_tables(a: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per (layer, role) of the MLP-gradient decomposition, means over facts."""
    rows = []
    for li in range(a["role_norm_share"].shape[1]):
        for ri, role in enumerate(a["roles"]):
            rows.append(
                {
                    "layer": f"L{li}",
                    "role": str(role),
                    "norm_share": float(a["role_norm_share"][:, li, ri].mean()),
                    "effect_forward": float(a["role_effect"][:, 0, li, ri].mean()),
                    "effect_reverse": float(a["role_effect"][:, 1, li, ri].mean()),
                    "effect_forward_first": float(a["role_effect_first"][:, 0, li, ri].mean()),
                    "effect_reverse_first": float(a["role_effect_first"][:, 1, li, ri].mean()),
                    "written_cos_b": float(a["written_cos"][:, li, ri, 0].mean()),
                    "written_cos_b_control": float(a["written_cos_control"][:, li, ri, 0].mean()),
                    "written_rank_b": float(a["written_rank"][:, li, ri, 0].mean()),
                    "written_cos_a": float(a["written_cos"][:, li, ri, 1].mean()),
                    "written_cos_a_control": float(a["written_cos_control"][:, li, ri, 1].mean()),
                    "written_rank_a": float(a["written_rank"][:, li, ri, 1].mean()),
                }
            )
    return rows
