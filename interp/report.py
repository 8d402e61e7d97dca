"""The study report: figures per group of runs, tables with n and 95% intervals over seeds, and
the findings.

Reads only what the runs saved, through `interp.findings.collect.Study`; draws each figure of
`FIGURES` with its plot function; writes REPORT_DIR/report.md and the findings (findings.json,
findings.md). A group is the runs that replicate one another (an objective, and the preset's
axis labels). Every instrument number is a mean over runs with its 95% interval inside the
number's declared range (`interp.stats.runs_interval`) and n; the instruments put their
controls in their summaries, so each table lists them beside the headline numbers. The behaviour
section (`behaviour_section`) follows `interp.stats`'s rules instead: people nested in runs,
bounded rates, per-run tests, Fisher-combined p-values, Holm over a declared family, nulls as
bounds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from interp.analysis import INSTRUMENTS
from interp.analysis.behaviour import (
    causal_cell,
    cells,
    exact_match_cell,
    has_matched,
    reversed_cell,
    reversed_family,
)
from interp.files import atomic_path, write_text
from interp.findings.collect import Study, StudyRun, collect
from interp.findings.provenance import provenance_line, study_sha256, timing_finding
from interp.findings.render import load_context, write_study_findings
from interp.findings.text import table
from interp.plots import figure_paths
from interp.plots.behaviour import plot_exact_match, plot_logprob_hist
from interp.plots.bridge import plot_bridge
from interp.plots.comparison import plot_comparison
from interp.plots.curves import plot_learning_curves
from interp.plots.dynamics import plot_dynamics
from interp.plots.lens import plot_lens
from interp.plots.patching import plot_patching
from interp.plots.patching_sites import plot_patching_sites
from interp.plots.probing import plot_probing
from interp.plots.selective import plot_selective
from interp.plots.storage import plot_pprobe, plot_storage
from interp.plots.update import plot_alignment, plot_update, plot_update_sites
from interp.stats import fmt_pvalues, runs_interval

FACT_WORLDS = ("synthetic", "paper", "retrieval")
BEHAVIOUR_WORLDS = (*FACT_WORLDS, "bridge")  # the worlds the behaviour figures read


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: the instrument whose results it draws, its plot function, its
    caption, and its scope: one figure per group of runs ("group"), one over every group
    ("groups", a mapping group -> results), or one over every run ("runs")."""

    name: str
    instrument: str
    draw: Callable[..., Any]
    caption: str
    scope: str = "group"
    worlds: tuple[str, ...] = FACT_WORLDS + ("biography",)  # every world but the bridge's
    own_size: bool = False  # "runs" scope: only runs at the preset's own size (no scale label)


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "exact_match",
        "behaviour",
        plot_exact_match,
        "Exact match per subset and direction (the paper's Table 1): same direction vs "
        "reversed, on training and held-out templates.",
        worlds=FACT_WORLDS,  # the bridge's: its own figure
    ),
    FigureSpec(
        "reversed_logprobs",
        "behaviour",
        plot_logprob_hist,
        "Reversed prompts: log p(correct) vs log p(random same-subset completion) (the paper's "
        "Figure 4), and where the world's people have roles the role-matched control's (an "
        "outline). Both is the positive control.",
        worlds=BEHAVIOUR_WORLDS,
    ),
    FigureSpec(
        "bridge",
        "behaviour",
        plot_bridge,
        "The identity bridge (Ma et al. 2026): per model size and training condition, forward "
        "exact match, reversed exact match (the reversal question in the bridge's frame) and "
        "the echo rate (that question answered with B's own name, the shortcut), mean and 95% "
        "interval over runs inside [0, 100]%, runs as dots.",
        scope="groups",
        worlds=("bridge",),
    ),
    FigureSpec(
        "learning_curves",
        "behaviour",
        plot_learning_curves,
        "Learning curves per objective from the training logs: exact match in its own mode "
        "forward and backward on the held-out queries, in-document infill of each entity, "
        "causal decoding where logged; grey: the 95% convergence bar.",
        scope="groups",
        worlds=("retrieval",),
    ),
    FigureSpec(
        "lens",
        "lens",
        plot_lens,
        "Logit lens: rank of the answer's first token per layer at A's last token, B's last "
        "token and the final prompt position, forward vs reverse.",
    ),
    FigureSpec(
        "patching",
        "patching",
        plot_patching,
        "Activation patching (causal tracing): normalised restoration per layer x position, "
        "with the raw clean-minus-corrupted logit difference beside it.",
    ),
    FigureSpec(
        "patching_sites",
        "patching",
        plot_patching_sites,
        "Which sites carry the forward fact: restored fraction per layer at the entity's last "
        "token and the final position per activation, and ROME's severed path (the entity's "
        "residual stream patched with the downstream MLPs or attention frozen corrupted).",
    ),
    FigureSpec(
        "probing",
        "probing",
        plot_probing,
        "Linear probes per layer: B's attribute from A alone and A's attribute from B alone, "
        "with random-init and random-label controls and chance.",
    ),
    FigureSpec(
        "update",
        "update",
        plot_update,
        "The gradient-update test: change of log p(B | A-prompt) vs log p(A | B-prompt) after "
        "a step on 'A is B', against controls, and where the update lands.",
    ),
    FigureSpec(
        "update_sites",
        "update",
        plot_update_sites,
        "Where the update is written: share of the MLP weight update and of its first-order "
        "effect on the answer's first token, per layer x position role, forward vs reverse.",
    ),
    FigureSpec(
        "dynamics",
        "dynamics",
        plot_dynamics,
        "Training dynamics: exact match, probes and lens over checkpoints.",
    ),
    FigureSpec(
        "selective",
        "selective",
        plot_selective,
        "Selective prediction: accuracy-coverage curves per confidence score.",
    ),
    FigureSpec(
        "update_alignment",
        "update",
        plot_alignment,
        "Step-size-free alignment: cosine of the plain causal step on 'A is B' with grad log p "
        "of the answer's first token, forward vs reverse per objective, against other people's "
        "prompts, and the Both subset as the positive control.",
        scope="groups",
    ),
    FigureSpec(
        "objectives_comparison",
        "behaviour",
        plot_comparison,
        "Objectives side by side: exact match, probes, the update test and selective "
        "prediction, mean and 95% interval over runs.",
        scope="bundles",
        worlds=FACT_WORLDS,
    ),
    FigureSpec(
        "storage",
        "storage",
        plot_storage,
        "Where is the fact stored: probes at the entity and extraction on unseen people against "
        "the augmentation level, per objective (runs at the preset's own size).",
        scope="runs",
        own_size=True,
    ),
    FigureSpec(
        "storage_pprobe",
        "storage",
        plot_pprobe,
        "P-probes: each attribute read just before its value, per layer, one panel per run.",
        scope="runs",
    ),
)

RUNS_RULE = (
    "Instrument tables: mean over runs [95% interval] (n runs), the interval inside the "
    "number's declared range (its `number(...)` declaration in the instrument's Summary): a "
    "t-interval on the logit scale for numbers in [0, 1] (and [-1, 1]), on the log scale for "
    "numbers bounded on one side, a plain t-interval for unbounded ones; \u2020 marks a "
    "t-interval truncated to the range because a run sits on its bound; no interval where "
    "there is 1 run or every run has the same value; p-values listed per run with Fisher's "
    "combination."
)


def _draw(draw: Callable[..., Any], what: Any, stem: Path) -> None:
    draw(what, stem)


def _safe(name: str) -> str:
    return name.replace("/", "_")


def draw_figures(
    study: Study, fig_dir: Path, progress: bool = False
) -> list[tuple[str, FigureSpec, Path]]:
    """Every figure the study's results allow: [(group or "all", figure, png path)]."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    groups = study.groups()
    todo: list[tuple[str, FigureSpec, Callable[[Path], Any]]] = []

    def world(runs: list[StudyRun]) -> str:
        return runs[0].spec.config.world.source

    for spec in FIGURES:
        if spec.scope == "group":
            for g, runs in groups.items():
                results = study.results(runs, spec.instrument)
                if results and world(runs) in spec.worlds:
                    todo.append((g, spec, partial(_draw, spec.draw, results)))
            continue
        if not study.runs or world(study.runs) not in spec.worlds:
            continue
        if spec.scope == "groups":
            by = {
                g: rs for g, runs in groups.items() if (rs := study.results(runs, spec.instrument))
            }
            if by:
                todo.append(("all", spec, partial(_draw, spec.draw, by)))
        elif spec.scope == "bundles" and len(groups) > 1:
            bundles = {
                g: [r for name in INSTRUMENTS for r in study.results(runs, name)]
                for g, runs in groups.items()
            }
            todo.append(("all", spec, partial(_draw, spec.draw, bundles)))
        elif spec.scope == "runs":
            runs = [r for r in study.runs if not (spec.own_size and r.spec.labels.get("scale"))]
            results = study.results(runs, spec.instrument)
            if results:
                todo.append(("all", spec, partial(_draw, spec.draw, results)))
    drawn = []
    for group, spec, draw in tqdm(todo, desc="figures", disable=not progress, dynamic_ncols=True):
        stem = fig_dir / (spec.name if group == "all" else f"{_safe(group)}_{spec.name}")
        draw(stem)
        drawn.append((group, spec, figure_paths(stem)[0]))
    return drawn


def behaviour_section(study: Study) -> list[str]:
    """The behaviour section: exact match and the reversed log-probability test, by the rules
    of `interp.stats` (people nested in runs).

    - Exact match: the mean over runs of each run's rate over people (a person's rate is over
      their templates), with the hierarchical bootstrap interval (runs, then people), which
      stays in [0, 100]%, and the true n (runs, people).
    - Reversed log-prob test, per group and cell: each run's own paired t-test (mean difference,
      95% interval, p, KS p, the largest effect its 90% interval excludes); then the study-level
      difference with its hierarchical interval, the per-run p-values combined by Fisher's
      method (never averaged), and Holm's correction over the declared family: the reversed
      test of every subset x template kind of that group. Where the interval covers 0, the
      null is stated as the bound it supports, also as a share of the forward (same-direction)
      effect of the same subset and templates. Where the world's people have roles, the same
      tables again against the role-matched control, a Holm family of its own.
    """
    results = {
        g: rs for g, runs in study.groups().items() if (rs := study.results(runs, "behaviour"))
    }
    if not results:
        return []
    names = list(results)
    cs = cells(next(iter(results.values()))[0])
    rows = []
    for s, d, k in cs:
        rows.append(
            [f"{s} {d} ({k} templates)"]
            + [study.behaviour(g, exact_match_cell, s, d, k).fmt(pct=True, items="people")
               for g in names]
        )  # fmt: skip
        causal = {g: study.behaviour(g, causal_cell, s, d, k) for g in names}
        if any(v is not None for v in causal.values()):
            rows.append(
                [f"{s} {d} ({k} templates), causal decoding"]
                + [v.fmt(pct=True, items="people") if v else "-" for v in causal.values()]
            )
    md = [
        "Exact match: mean over runs of each run's rate over people, [95% hierarchical "
        "bootstrap interval: runs, then people within runs, widened to the pooled Wilson "
        "interval, which bounds a rate of 0 or 100%] (runs, people). Each objective is asked in "
        "its own mode (interp.modes: causal decoding for next-token training, bidirectional "
        "greedy decoding for BICO, left-to-right masked decoding for MLM and MLM-U); rows "
        "marked causal decoding: an objective asked otherwise, asked causally beside it.",
        "",
        table(["", *names], rows),
        "",
    ]
    for g in names:
        md += reversed_tables(study, g, cs, "random")
        if has_matched(results[g]):
            md += reversed_tables(study, g, cs, "matched")
    return md


CONTROL_TITLE = {
    "random": "log p(random same-subset answer)",
    "matched": "log p(same-subset answer of the same role; on D2N also the same first-name class)",
}


def reversed_tables(
    study: Study, group: str, cs: list[tuple[str, str, str]], control: str
) -> list[str]:
    """One group's reversed log-prob tests against `control` ('random' or 'matched'): each run's
    paired test, the study-level difference, and Holm over the group's declared family."""
    rows = []
    reverse = [(s, k) for s, d, k in cs if d == "reverse"]
    # the random control's key is the findings' (`collect`): one bootstrap for both
    family = [
        study.behaviour(group, reversed_cell, *((s, k) if control == "random" else (s, k, control)))
        for s, k in reverse
    ]
    decisions = reversed_family(family)  # the one rule, as the findings and the README take it
    for c, d in zip(family, decisions, strict=True):
        s, k = c.subset, c.kind
        for label, t, ks, tost_bound in c.runs:
            rows.append(
                [f"{s} ({k})", label, str(t.n),
                 f"{t.diff_mean:+.3f} [{t.diff_low:+.3f}, {t.diff_high:+.3f}]",
                 f"{t.p:.3g}", f"{ks:.3g}", f"{tost_bound:.3f}"]
            )  # fmt: skip
        h = c.study
        said = (
            f"effect (Holm p = {d.p_holm:.3g})"
            if d.effect
            else f"no effect (Holm p = {d.p_holm:.3g}): excludes {c.bound_text(3)}; "
            f"detects {d.mde:.3f} nats with 80% power"
        )
        rows.append(
            [f"**{s} ({k})**", f"study ({h.fmt_n('people')})", str(h.n_items),
             f"{h.estimate:+.3f} [{h.low:+.3f}, {h.high:+.3f}]",
             f"one-sided Fisher {d.p:.3g}", "", said]
        )  # fmt: skip
    matched = (
        " People without another person of the same role (and class) in their subset are left "
        "out, so n can be below the random control's."
        if control == "matched"
        else ""
    )
    return [
        f"### {group}: reversed log p(correct) - {CONTROL_TITLE[control]}, per person",
        "",
        "Per run: paired t-test over people (95% t-interval, two-sided p; 'excludes beyond': "
        "the largest |difference| its 90% interval excludes, the TOST bound at alpha 0.05). "
        "Study: hierarchical bootstrap (runs, then people; 95%). The decision, the kit's one "
        "rule (`interp.stats.decide_family`), is the one the findings and the README state: each "
        "run's one-sided p (log p(correct) above the control) combined by Fisher's method, "
        "Holm-corrected over the declared family below, effect at alpha 0.05; with no effect, "
        "the largest |difference| the interval excludes and the smallest effect the test "
        "detects with 80% power." + matched,
        "",
        table(
            [
                "cell",
                "run",
                "n",
                "difference [95% CI]",
                "p (t-test)",
                "p (KS)",
                "excludes beyond (nats)",
            ],
            rows,
        ),  # fmt: skip
        "",
        "Holm-corrected over the declared family (the reversed test of each subset x "
        "template kind against this control, one-sided, Fisher-combined): "
        + "; ".join(
            f"{c.subset} ({c.kind}) p = {d.p_holm:.3g}"
            for c, d in zip(family, decisions, strict=True)
        ),
        "",
    ]


def _sections(cls: Any, chain: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The helps of the sections around each declared number of `cls`, in `declared()` order."""
    for f in cls._own():
        inner = f.metadata.get("section")
        if inner is not None:
            yield from _sections(inner, (*chain, f.metadata["help"]))
        else:
            yield chain


def human_labels(cls: Any) -> dict[str, str]:
    """Each declared number's row label: the helps of its sections, outer first, then its own
    help, then its key (`forward queries (n2d, entity swap) / restored fraction at the final
    position / the MLP's output (ROME's site): largest restored fraction over layers`)."""
    out = {}
    for d, chain in zip(cls.declared(), _sections(cls), strict=True):
        out[d.key] = f"{' / '.join(chain)}: {d.help}" if chain else d.help
    return out


def instrument_rows(study: Study, instrument: str) -> list[list[str]]:
    """One row per declared headline number (its key and help), one cell per group: mean [95%
    interval over runs, inside the number's range] (n runs); a p-value listed per run and
    Fisher-combined, never averaged. No rows if no run has the result."""
    per_group = {
        g: [r.summary for r in study.results(runs, instrument)]
        for g, runs in study.groups().items()
    }
    if not any(per_group.values()):
        return []
    rows = []
    summary_type = INSTRUMENTS[instrument].summary_type
    labels = human_labels(summary_type)
    for d in summary_type.headlines():
        cells_ = []
        for sums in per_group.values():
            vals = [v for s in sums if (v := s.value(d.key)) is not None]
            if not vals:
                cells_.append("n/a")
            elif d.pvalue:
                cells_.append(fmt_pvalues(vals))
            else:
                cells_.append(runs_interval(vals, d.range).fmt(3))
        if any(c != "n/a" for c in cells_):
            label = f"{labels[d.key]}{' (per run)' if d.pvalue else ''} (`{d.key}`)"
            rows.append([label, *cells_])
    return rows


def write_report(
    study: Study,
    report_dir: Path,
    *,
    figures_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Write REPORT_DIR/figures/*, report.md, findings.json and findings.md; with
    `figures_dir`, copy the figures, the report and the findings there."""
    report_dir.mkdir(parents=True, exist_ok=True)
    log("collecting the findings")
    f = collect(study)
    timing = timing_finding(report_dir, study_sha256(study.plan))
    if timing is not None:
        f["timing"] = timing
    out_root = study.runs[0].path.parents[1] if study.runs else report_dir
    write_study_findings(report_dir, study.plan.preset, f, load_context(out_root))
    log("drawing the figures")
    drawn = draw_figures(study, report_dir / "figures", progress)
    groups = list(study.groups())
    plan = study.plan
    md = [
        f"# Study report: `{plan.name}`",
        "",
        provenance_line(f["provenance"]),
        "",
        f"Runs: {len(study.runs)} ({', '.join(groups)}; seeds {list(plan.seeds)}), run preset "
        f"`{plan.preset.run_preset}`. {RUNS_RULE}",
        "",
        "## Behaviour: exact match and the reversed log-probability test",
        "",
        *behaviour_section(study),
    ]
    for name in INSTRUMENTS:
        if name == "behaviour":
            continue
        rows = instrument_rows(study, name)
        if rows:
            md += [
                f"## {name}",
                "",
                table(["", *groups], rows),
                "",
                f"Headline numbers; every summary number is in each run's analysis/{name}.json.",
                "",
            ]
    md += ["## Figures", ""]
    for group, spec, png in drawn:
        rel = png.relative_to(report_dir).as_posix()
        title = spec.name if group == "all" else f"{group}: {spec.name}"
        md += [f"### {title}", "", spec.caption, "", f"![{spec.caption}]({rel})", ""]
    write_text(report_dir / "report.md", "\n".join(md))
    if figures_dir is not None:
        copy_figures(
            [p for _, _, p in drawn]
            + [report_dir / n for n in ("report.md", "findings.json", "findings.md")],
            figures_dir,
        )
    return report_dir / "report.md"


def copy_figures(files: list[Path], dst: str | Path) -> None:
    """Copy files (figure PNGs, the report, the findings) into `dst`, creating it."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for p in files:
        if p.is_file():
            with atomic_path(dst / p.name) as tmp:
                shutil.copy2(p, tmp)
