"""The identity bridge (Ma et al. 2026; `interp.data.bridge`) as the kit builds it today.

The causal baseline trained with one identity document per person, in the OCR form ("the <role>
of the work of A is A") or the naive IDN form ("the name of A is A"), 3 seeds, behaviour (with
the bridge's echo and shortcut test), probes and the update test. The baseline is the causal
runs of `objectives` (the default study's configs: the same worlds, seeds and steps, without the
identities). Ma et al. report about 0% -> about 50% reversed on a 1B model with OCR, no gain
with IDN. A methods review found this form is not their recipe (their forward fact is phrased
through the relation, weighted 6x, and tested in the bridge's frame), so its verdicts say
whether *this* form helps here, not whether theirs does.
"""

from __future__ import annotations

from interp.analysis.probing import ProbingOptions
from interp.analysis.update import UpdateOptions
from interp.findings.text import nats, pct, table, vs
from interp.findings.verdicts import LIFT, Claim, interval, verdict
from interp.plan import Context, Preset, Use, get_path

CITATIONS = {"ma": "Ma, Huang, Zhu & Sojoudi 2026, arXiv 2602.02470"}
# Ma et al.: reversed accuracy of a 1B model, about 0% without and about 50% with the OCR
# identity bridge; the IDN form brings no gain.
MA_BASELINE_REVERSE = 0.0
MA_OCR_REVERSE = 50.0
BASELINE = "objectives"  # whose causal runs are the bridge's baseline
# The tables' rows: the preset whose findings fill the row, and the row's label.
ROWS = (
    (BASELINE, "facts only (causal runs of `objectives`)"),
    ("bridge_ocr", "facts + OCR identities"),
    ("bridge_idn", "facts + IDN identities"),
)


def _em(ctx: Context, preset: str, cell: str) -> dict | None:
    node: dict | None = get_path(ctx, f"{preset}.behaviour.causal.exact_match.{cell}")
    return node


def checks(ctx: Context, name: str) -> list[Claim]:
    """Ma et al.'s predictions for the OCR bridge against the baseline and the IDN form."""
    out = []
    for s in ("n2d", "d2n"):
        cell = f"{s}_reverse_train"
        base, ocr, idn = (
            _em(ctx, BASELINE, cell),
            _em(ctx, "bridge_ocr", cell),
            _em(ctx, "bridge_idn", cell),
        )
        out += [
            Claim(
                f"Without the bridge the causal model does not answer {s.upper()} reversed",
                verdict("near", base, MA_BASELINE_REVERSE), pct(base), "ma",
                f"about {MA_BASELINE_REVERSE:.0f}% (1B model)",
            ),
            Claim(
                f"The OCR identity bridge lifts {s.upper()} reversed exact match above the "
                "causal baseline (same worlds and seeds)",
                verdict("lift", ocr, base), vs(ocr, base), "ma",
                f"{MA_BASELINE_REVERSE:.0f}% -> {MA_OCR_REVERSE:.0f}%",
            ),
            Claim(
                f"With the OCR bridge, {s.upper()} reversed exact match is about "
                f"{MA_OCR_REVERSE:.0f}%",
                verdict("near", ocr, MA_OCR_REVERSE), pct(ocr), "ma",
                f"about {MA_OCR_REVERSE:.0f}% (1B model)",
            ),
            Claim(
                f"The naive IDN form brings no gain, {s.upper()} reversed (IDN vs baseline)",
                verdict("no gain", idn, base), vs(idn, base), "ma", "no gain",
            ),
        ]  # fmt: skip
    # a softer measure than exact match: the reversed log-probability test (N2D), the
    # difference log p(correct A) - log p(random A) against the baseline's, in nats
    base = get_path(ctx, f"{BASELINE}.behaviour.causal.reversed.n2d_train")
    for form, want in (("ocr", "lift"), ("idn", "no gain")):
        x = get_path(ctx, f"bridge_{form}.behaviour.causal.reversed.n2d_train")
        out.append(Claim(
            f"{form.upper()} bridge, a softer measure: the reversed N2D log-prob test's "
            "difference log p(correct A) - log p(random A) "
            + ("above the baseline's" if want == "lift" else "not above the baseline's"),
            verdict(f"nats {want}", x, base), f"{nats(x)} vs {nats(base)} nats", "ma",
            "OCR helps" if want == "lift" else "IDN does not",
        ))  # fmt: skip
    return out


def bridge_table(ctx: Context, _: str) -> str:
    """The causal baseline, the OCR and the IDN bridge side by side: steps, forward and reversed
    exact match, the echo test, and the instruments' view."""
    rows, views = [], []
    for preset, label in ROWS:
        f = ctx.get(preset)
        if f is None:
            rows.append([label, f"not run (`make study PRESET={preset}`)", *[""] * 6])
            views.append([label, f"not run (`make study PRESET={preset}`)", *[""] * 3])
            continue
        b = get_path(f, "behaviour.causal") or {}
        e, br = b.get("exact_match", {}), b.get("bridge", {})
        rows.append(
            [label, get_path(f, "steps.causal.text") or "-", pct(e.get("n2d_same_train")),
             pct(e.get("d2n_same_train")), pct(e.get("n2d_reverse_train")),
             pct(e.get("d2n_reverse_train")), pct(br.get("echo_train")),
             pct(br.get("echo_shortcut"))]
        )  # fmt: skip
        views.append(
            [label]
            + [
                get_path(f, f"instruments.{path}.text") or "-"
                for path in (
                    "update.causal.delta_logp_reverse_mean",
                    "update.causal.delta_logp_reverse_control_mean",
                    "probing.causal.probe_b_to_a_n2d_best",
                    "probing.causal.control_randlabel_b_to_a_n2d_best",
                )
            ]
        )
    return "\n".join(
        [
            table(
                [
                    "training data",
                    "steps",
                    "forward N2D",
                    "forward D2N",
                    "reversed N2D",
                    "reversed D2N",
                    "identity as trained, echoed",
                    "shortcut (another role), echoed",
                ],
                rows,
            ),  # fmt: skip
            "",
            "The instruments' view (mean [t-interval over runs]): the gradient-update test, "
            "change of log p(A | B-prompt) after one step on a new person's fact, against "
            "control answers; a linear probe reading A's attribute from B alone (N2D, best "
            "layer), against random labels.",
            "",
            table(
                [
                    "training data",
                    "update: reverse",
                    "update: reverse, control",
                    "probe B -> A",
                    "probe B -> A, random labels",
                ],
                views,
            ),  # fmt: skip
        ]
    )


def shortcut(ctx: Context, name: str) -> str:
    """What the echo test shows, by a stated rule: the model echoes the name when it answers A
    on the shortcut prompts (a role no fact supports) more than half the time (the interval's
    low above 50%), computes the relation when it rarely does (the interval's high below
    LIFT%), and neither is shown otherwise."""
    b = get_path(ctx, f"{name}.behaviour.causal.bridge") or {}
    tr, sc = interval(b.get("echo_train"), 100.0), interval(b.get("echo_shortcut"), 100.0)
    if tr is None or sc is None:
        return "The echo test was not measured."
    if sc[1] > 50:
        what = "the model echoes the name (the shortcut Ma et al. warn of), not the relation"
    elif sc[2] < LIFT:
        what = "the model answers the identity through the relation, not by echoing the name"
    else:
        what = "neither pure echo nor the relation is shown"
    return (
        f"Shortcut test: the identity as trained is answered {pct(b['echo_train'])}, the same "
        f"identity with another role, which no fact supports, {pct(b['echo_shortcut'])} "
        f"({b['echo_shortcut']['n_runs']} runs x {b['echo_shortcut']['n_items']} prompts): "
        f"{what} (rule: echo when the shortcut's interval lies above 50%, relation when it "
        f"lies below {LIFT:.0f}%)."
    )


_INSTRUMENTS = {"probing": Use(ProbingOptions()), "update": Use(UpdateOptions(n_facts=10))}

PRESETS = tuple(
    Preset(
        name=f"bridge_{form}",
        help=f"the causal baseline with the identity bridge's {form.upper()} documents, 3 seeds",
        run_preset="default",
        objectives=("causal",),
        seeds=(0, 1, 2),
        instruments=_INSTRUMENTS,
        overrides=(f"world.bridge={form}",),
        claims=checks if form == "ocr" else None,
        citations=CITATIONS,
        tables={"bridge": bridge_table, "shortcut": shortcut},
        reads=(BASELINE, "bridge_ocr", "bridge_idn"),
    )
    for form in ("ocr", "idn")
)
