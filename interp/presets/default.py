"""The default study and its smoke-run size, and the hypothesis's predictions they judge.

`default`: the baseline and the two reverse-training mitigations (entity-preserving
`reverse_entity` and token-level `reverse_token`, whose contrast shows that keeping entities
whole matters), 3 seeds, each seed its own world. Every objective here reaches forward exact
match 1.00 on training templates at the run preset's 800 steps, so the comparison is at matched
forward accuracy; BICO and MLM-U need longer and are in `objectives`. The instruments that
compare objectives (behaviour, probes, update test) run on every objective, the per-model deep
dives on the causal baseline (lens and patching on 3 seeds, dynamics on seed 0), selective
prediction on the baseline and on reverse training (whose intermediate reversed accuracy gives
AUROC something to rank).

`tiny`: the pipeline end to end in about a minute on 2 CPU cores: one seed of the baseline and
of the mitigation that works, every instrument sized down. One seed is one run: its report shows
the pipeline and its plots, not evidence.
"""

from __future__ import annotations

from typing import Any

from interp.analysis.dynamics import DynamicsOptions
from interp.analysis.lens import LensOptions
from interp.analysis.patching import PatchingOptions
from interp.analysis.probing import ProbingOptions
from interp.analysis.selective import SelectiveOptions
from interp.analysis.update import UpdateOptions
from interp.findings.text import per_run_difference, pooled_ratio, vs_text
from interp.findings.verdicts import Claim, verdict
from interp.plan import Context, Preset, Use, get_path


def _runs_text(node: dict[str, Any], unit: str = "") -> str:
    test = (
        f"; one-sided t over runs p = {node['p_one_sided']:.2g}, detects {node['mde']:.2f}"
        f"{unit} with 80% power"
        if "mde" in node
        else ""
    )
    return (
        f"{node['estimate']:+.2f} [{node['low']:+.2f}, {node['high']:+.2f}]{unit} "
        f"(n={node['n_runs']} runs{test})"
    )


def predictions(ctx: Context, name: str) -> list[Claim]:
    """The hypothesis's predictions on the causal baseline (and the mitigation it implies), each
    judged from the study's numbers by the rule its sentence states (`interp.findings.verdicts`).
    A directional claim is decided by the kit's one rule (`interp.stats.decide_family`): a
    one-sided test at alpha 0.05, Holm over its declared family (the reversed log-prob tests;
    an instrument's per-run difference is a family of one), with the smallest effect it detects
    at 80% power. A predicted effect holds when the test shows it; a predicted null holds, with
    the bound its interval supports, unless the test shows the effect the hypothesis rules
    out. Exact-match comparisons compare intervals (`above`)."""
    f = ctx.get(name) or {}
    b = "behaviour.causal"
    out = []

    def claim(text: str, rule: str, x: Any, y: Any = None, evidence: str = "") -> None:
        out.append(Claim(text, verdict(rule, x, y, kind="hypothesis"), evidence))

    both = get_path(f, f"{b}.exact_match.both_reverse_train")
    for s in ("n2d", "d2n"):
        rev = get_path(f, f"{b}.exact_match.{s}_reverse_train")
        claim(
            f"Trained in one order, the causal model does not answer {s.upper()} facts reversed "
            "(exact match, training templates, below the Both subset's reversed exact match, "
            "the positive control trained in both orders)",
            "above", both, rev,
            vs_text(rev, both),
        )  # fmt: skip
    for s in ("n2d", "d2n"):
        c = get_path(f, f"{b}.reversed.{s}_train")
        claim(
            f"Reversed {s.upper()} questions: log p(correct) is no higher than log p(a random "
            "same-subset answer) (training templates)",
            "null", c, None, c["claim"] if c else "",
        )  # fmt: skip
        # the same prediction against a control matched on everything but the fact: a
        # difference from the role word alone (a leak, not a memory) does not count here
        c = get_path(f, f"{b}.reversed_role_matched.{s}_train")
        also = " and the same first-name class" if s == "d2n" else ""
        claim(
            f"Reversed {s.upper()} questions: log p(correct) is no higher than log p(a "
            f"same-subset answer of the same role{also}) (training templates)",
            "null", c, None, c["claim"] if c else "",
        )  # fmt: skip
    c = get_path(f, f"{b}.reversed.both_train")
    claim(
        "Positive control: on the Both subset (trained in both orders) the reversed test finds "
        "log p(correct) above log p(random)",
        "positive", c, None, c["claim"] if c else "",
    )  # fmt: skip
    for d, want in (("forward", "above"), ("reverse", "not above")):
        target = "B | A" if d == "forward" else "A | B"
        r = per_run_difference(
            f, "update", "causal", f"delta_logp_{d}_mean", f"delta_logp_{d}_control_mean"
        )
        ev = "needs 2 or more runs with the update test"
        if r is not None:
            ev = _runs_text(r).replace(" (n=", " nats (n=")
            if d == "reverse" and r["low"] <= 0:
                ev += f"; excludes effects beyond +{r['high']:.2f} nats"
        claim(
            f"Gradient-update test: one step on 'A is B' moves log p({target}-prompt) {want} "
            "the same change for control answers (mean over runs of each run's difference)",
            "positive" if d == "forward" else "null", r, None, ev,
        )  # fmt: skip
    rome = (  # (claim, key, the key it is compared with, unit of the difference)
        (
            "Causal tracing as in ROME: the MLP outputs at A's last token restore the forward "
            "fact beyond the same site patched from a third person (the same-site wrong-source "
            "control; largest over layers of each; N2D, entity swap; mean over runs of each "
            "run's difference)",
            "forward_entity_last_mlp_out_max",
            "forward_control_entity_last_mlp_out_max",
            "",
        ),
        (
            "Causal tracing as in ROME, the whole subject: the MLP outputs at every token of A, "
            "patched together, restore the forward fact beyond the same tokens patched from a "
            "third person (largest over layers of each; mean over runs of each run's difference)",
            "forward_entity_all_mlp_out_max",
            "forward_control_entity_all_mlp_out_max",
            "",
        ),
        (
            "Severed path as in ROME: freezing the MLPs at A's last token at their corrupted "
            "values lowers what patching A's residual stream there restores (largest over "
            "layers, without minus with the MLPs frozen; mean over runs of each run's "
            "difference)",
            "forward_severed_none_max",
            "forward_severed_mlp_max",
            " of the clean-corrupted gap",
        ),
    )
    for text, key, control, unit in rome:
        r = per_run_difference(f, "patching", "causal", key, control)
        ev = _runs_text(r, unit) if r else "needs 2 or more runs with patching"
        claim(text, "positive", r, None, ev)
    r = get_path(f, "behaviour.reverse_entity.exact_match.n2d_reverse_train")
    c = get_path(f, f"{b}.exact_match.n2d_reverse_train")
    claim(
        "Entity-preserving reverse training answers N2D facts reversed more often than the "
        "causal baseline (exact match, training templates)",
        "above", r, c, vs_text(r, c),
    )  # fmt: skip
    t = get_path(f, "behaviour.reverse_token.exact_match.n2d_reverse_train")
    claim(
        "Keeping entities whole matters (Golovneva et al. 2024): entity-preserving reverse "
        "training answers N2D facts reversed more often than token-level reverse training "
        "(exact match, training templates)",
        "above", r, t, vs_text(r, t),
    )  # fmt: skip
    return out


def update_pooled(ctx: Context, name: str) -> str:
    """The update test's reverse first-token alignment above its control as a share of the
    forward one, pooled over the causal runs (a ratio of means with Fieller's interval)."""
    r = pooled_ratio(ctx.get(name) or {}, "update", "causal", "align_reverse_first",
                     "align_forward_first")  # fmt: skip
    if r is None:
        return "(needs 2 or more runs with the update test)"
    return f"{r['text']}, so the data exclude a reverse effect beyond {r['bound']:.1f}%"


DEFAULT = Preset(
    name="default",
    help="the baseline and reverse training, 3 seeds, every instrument (make study)",
    run_preset="default",
    objectives=("causal", "reverse_entity", "reverse_token"),
    seeds=(0, 1, 2),
    instruments={
        "lens": Use(LensOptions(tuned=True), on=("causal",)),
        # 64 prompts per subset x query and 3 noise draws, for time
        "patching": Use(PatchingOptions(max_prompts=64, noise_samples=3), on=("causal",)),
        "probing": Use(ProbingOptions()),
        # 10 of the 20 new people updated on (all 20 serve as controls), for time
        "update": Use(UpdateOptions(n_facts=10)),
        "dynamics": Use(DynamicsOptions(), on=("causal:0",)),
        "selective": Use(SelectiveOptions(), on=("causal", "reverse_entity")),
    },
    own_dir=False,
    claims=predictions,
    tables={"update_pooled": update_pooled},
)

TINY = Preset(
    name="tiny",
    help="a smoke run of the whole pipeline in about a minute (not evidence)",
    run_preset="tiny",
    objectives=("causal", "reverse_entity"),
    seeds=(0,),
    instruments={
        "lens": Use(LensOptions(tuned=True, tuned_steps=100), on=("causal",)),
        "patching": Use(PatchingOptions(max_prompts=8, noise_samples=1), on=("causal",)),
        "probing": Use(ProbingOptions()),
        "update": Use(UpdateOptions(n_facts=4, own=False)),  # the smoke run: the main step only
        "dynamics": Use(DynamicsOptions(), on=("causal",)),
        "selective": Use(SelectiveOptions(max_epochs=5), on=("causal",)),
    },
    claims=predictions,
)

PRESETS = (DEFAULT, TINY)
