"""The study report: figures per objective, tables with n and 95% intervals over seeds.

Reads only what the runs saved (metrics.json, analysis/*.json); draws each instrument's figure
with its own plot function; writes `report.md` and a self-contained `report.html` (figures
inline as base64 PNG). Every instrument number is a mean over runs with its 95% interval inside
the number's declared range (`interp.stats.runs_interval`) and n, and each instrument's table
lists its controls beside its headline numbers, because the instruments put both in their
`summary`. Each instrument's table lists the numbers its module
declares as `HEADLINES` (the registry in `interp.analysis`); the rest stay in the JSON. The
behaviour section (`behaviour_section`) follows `interp.stats`'s rules instead: people nested in
runs, bounded rates, per-run tests, Fisher-combined p-values, Holm over a declared family, nulls
as bounds.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib
import importlib.util
import json
import shutil
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from interp.analysis import INSTRUMENTS
from interp.files import atomic_path, write_text
from interp.findings import provenance_line, write_findings
from interp.results import read_result
from interp.stats import (
    Estimate,
    PairedTest,
    bound_of_interval,
    combine_pvalues,
    equivalence_bound,
    fmt_pvalues,
    fmt_runs,
    hierarchical_bootstrap,
    holm,
    is_pvalue,
    paired_test,
    rate_estimate,
)

# Figure name -> (plot module, function, instrument whose result it needs or "" for behaviour).
FIGURES: dict[str, tuple[str, str, str]] = {
    "exact_match": ("interp.plots.behaviour", "plot_exact_match", ""),
    "reversed_logprobs": ("interp.plots.behaviour", "plot_logprob_hist", ""),
    "lens": ("interp.plots.lens", "plot_lens", "lens"),
    "patching": ("interp.plots.patching", "plot_patching", "patching"),
    "patching_sites": ("interp.plots.patching_sites", "plot_patching_sites", "patching"),
    "probing": ("interp.plots.probing", "plot_probing", "probing"),
    "update": ("interp.plots.update", "plot_update", "update"),
    "update_sites": ("interp.plots.update", "plot_update_sites", "update"),
    "dynamics": ("interp.plots.dynamics", "plot_dynamics", "dynamics"),
    "selective": ("interp.plots.selective", "plot_selective", "selective"),
}

CAPTIONS: dict[str, str] = {
    "exact_match": "Exact match per subset and direction (the paper's Table 1): same direction vs "
    "reversed, on training and held-out templates.",
    "reversed_logprobs": "Reversed prompts: log p(correct) vs log p(random same-subset completion) "
    "(the paper's Figure 4). Both is the positive control.",
    "lens": "Logit lens: rank of the answer's first token per layer at A's last token, "
    "B's last token and the final prompt position, forward vs reverse.",
    "patching": "Activation patching (causal tracing): normalised restoration per layer x "
    "position, with the raw clean-minus-corrupted logit difference beside it.",
    "patching_sites": "Which sites carry the forward fact: restored fraction per layer at the "
    "entity's last token and the final position per activation, and ROME's severed path (the "
    "entity's residual stream patched with the downstream MLPs or attention frozen corrupted).",
    "probing": "Linear probes per layer: B's attribute from A alone and A's attribute from B "
    "alone, with random-init and random-label controls and chance.",
    "update": "The gradient-update test: change of log p(B | A-prompt) vs log p(A | B-prompt) "
    "after a step on 'A is B', against controls, and where the update lands.",
    "update_sites": "Where the update is written: share of the MLP weight update and of its "
    "first-order effect on the answer's first token, per layer x position role, forward vs "
    "reverse.",
    "update_alignment": "Step-size-free alignment: cosine of the plain causal step on 'A is B' "
    "with grad log p of the answer's first token, forward vs reverse per objective, against "
    "other people's prompts, and the Both subset as the positive control.",
    "dynamics": "Training dynamics: exact match, probes and lens over checkpoints.",
    "selective": "Selective prediction: accuracy-coverage curves per confidence score.",
}


RUNS_RULE = (
    "Instrument tables: mean over runs [95% interval] (n runs), the interval inside the "
    "number's declared range (interp.stats.RANGES): a t-interval on the logit scale for "
    "numbers in [0, 1] (and [-1, 1]), on the log scale for numbers bounded on one side, a plain "
    "t-interval for unbounded ones; \u2020 marks a t-interval truncated to the range because a "
    "run sits on its bound; no interval where there is 1 run or every run has the same value; "
    "p-values listed per run with Fisher's combination."
)


def group_runs(run_dirs: list[Path]) -> dict[str, list[Path]]:
    """Run directories by training objective (from each config.json), in the given order."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for r in run_dirs:
        cfg = json.loads((r / "config.json").read_text())
        groups[cfg["train"]["objective"]].append(r)
    return dict(groups)


def _summaries(runs: list[Path], instrument: str) -> list[dict[str, Any]]:
    """The summary of `instrument` of every run that has its result."""
    return [
        read_result(r, instrument, arrays=False).summary_dict
        for r in runs
        if (r / "analysis" / f"{instrument}.json").is_file()
    ]


def _person_values(run: Path, subset: str, direction: str, kind: str) -> dict[str, np.ndarray]:
    """One run's saved per-prompt results, averaged per person over templates (person order).

    Keys: 'hit' (exact-match rate), 'correct' and 'random' (log-probs). The same per-person
    averaging as `interp.evaluate`, read from `eval_logprobs.npz`.
    """
    a = np.load(run / "eval_logprobs.npz")
    m = (a["subset"] == subset) & (a["direction"] == direction) & (a["templates"] == kind)
    people, inv = np.unique(a["person"][m], return_inverse=True)
    cnt = np.bincount(inv, minlength=len(people))

    def per_person(x: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=x[m].astype(float), minlength=len(people)) / cnt

    out = {
        "hit": per_person(a["exact_match"]),
        "correct": per_person(a["correct_logprob"]),
        "random": per_person(a["random_logprob"]),
    }
    if "native_exact_match" in a:  # BICO and MLM-U asked in their own mode (interp.native)
        out["native_hit"] = per_person(a["native_exact_match"])
    return out


def _cells(run: Path) -> list[tuple[str, str, str]]:
    a = np.load(run / "eval_logprobs.npz")
    keys = {
        (str(s), str(d), str(k))
        for s, d, k in zip(a["subset"], a["direction"], a["templates"], strict=True)
    }
    order = {
        v: i for i, v in enumerate(("n2d", "d2n", "both", "same", "reverse", "train", "heldout"))
    }
    return sorted(keys, key=lambda c: tuple(order.get(x, 99) for x in c))


def _run_label(run: Path) -> str:
    cfg = json.loads((run / "config.json").read_text())
    return f"world {cfg['world']['seed']}, seed {cfg['train']['seed']}"


@dataclass(frozen=True)
class ReversedCell:
    """The reversed log-probability test of one subset x template kind, for one objective's
    runs: each run's paired test, the study-level difference (people nested in runs), the
    per-run p-values combined by Fisher's method, and the bound a null supports."""

    subset: str
    kind: str
    runs: list[tuple[str, PairedTest, float, float]]  # (run label, t-test, KS p, TOST bound)
    study: Estimate  # hierarchical bootstrap of log p(correct) - log p(random), per person
    fisher_p: float
    forward: Estimate  # the same difference on same-direction prompts (the effect to compare)
    bound: float  # the largest |difference| the study interval excludes

    @property
    def null(self) -> bool:
        """The study interval covers 0: no effect shown, only the bound."""
        return self.study.low <= 0 <= self.study.high

    def claim(self) -> str:
        """One sentence fragment saying what the numbers show, and no more."""
        h = self.study
        if not self.null:
            side = "above" if h.estimate > 0 else "below"
            return (
                f"log p(correct) is {side} log p(random) by {h.estimate:+.2f} nats "
                f"[{h.low:+.2f}, {h.high:+.2f}] (Fisher-combined p = {self.fisher_p:.2g})"
            )
        share = (
            f", {100 * self.bound / self.forward.estimate:.0f}% of the forward effect "
            f"{self.forward.estimate:+.2f}"
            if self.forward.estimate > 0
            else ""
        )
        return (
            f"the difference {h.estimate:+.2f} nats [{h.low:+.2f}, {h.high:+.2f}] covers 0: "
            f"the data exclude effects beyond +-{self.bound:.2f} nats{share}"
        )


def exact_match_cell(runs: list[Path], subset: str, direction: str, kind: str) -> Estimate:
    """Exact match of one cell: the mean over runs of each run's rate over people, with the
    hierarchical interval widened to the pooled Wilson interval (`interp.stats.rate_estimate`)."""
    return rate_estimate([_person_values(r, subset, direction, kind)["hit"] for r in runs])


def reversed_cell(runs: list[Path], subset: str, kind: str) -> ReversedCell:
    """The reversed log-probability test of `subset` on `kind` templates over `runs`."""
    diffs, per_run = [], []
    for r in runs:
        v = _person_values(r, subset, "reverse", kind)
        t = paired_test(v["correct"], v["random"])
        ks = (
            float(sps.ks_2samp(v["correct"], v["random"]).pvalue)
            if t.n >= 2 and np.ptp(v["correct"] - v["random"]) > 0
            else 1.0
        )
        diffs.append(v["correct"] - v["random"])
        per_run.append((_run_label(r), t, ks, equivalence_bound(diffs[-1])))
    h = hierarchical_bootstrap(diffs)
    fwd = [_person_values(r, subset, "same", kind) for r in runs]
    forward = hierarchical_bootstrap([v["correct"] - v["random"] for v in fwd])
    return ReversedCell(
        subset, kind, per_run, h, combine_pvalues([t.p for _, t, _, _ in per_run]), forward,
        bound_of_interval(h.low, h.high),
    )  # fmt: skip


def behaviour_section(groups: dict[str, list[Path]]) -> list[str]:
    """The behaviour section: exact match and the reversed log-probability test, by the rules
    of `interp.stats` (people nested in runs).

    - Exact match: the mean over runs of each run's rate over people (a person's rate is over
      their templates), with the hierarchical bootstrap interval (runs, then people), which
      stays in [0, 100]%, and the true n (runs, people).
    - Reversed log-prob test, per objective and cell: each run's own paired t-test (mean
      difference, 95% interval, p, KS p, the largest effect its 90% interval excludes); then
      the study-level difference with its hierarchical interval, the per-run p-values combined
      by Fisher's method (never averaged), and Holm's correction over the declared family: the
      reversed test of every subset x template kind of that objective. Where the interval
      covers 0, the null is stated as the bound it supports, also as a share of the forward
      (same-direction) effect of the same subset and templates.
    """
    objectives = list(groups)
    md: list[str] = []
    rows = []
    cells = _cells(groups[objectives[0]][0])
    for s, d, k in cells:
        row = [f"{s} {d} ({k} templates)"]
        for o in objectives:
            row.append(exact_match_cell(groups[o], s, d, k).fmt(pct=True, items="people"))
        rows.append(row)
        native = {
            o: [
                v["native_hit"]
                for r in groups[o]
                if "native_hit" in (v := _person_values(r, s, d, k))
            ]
            for o in objectives
        }
        if any(native.values()):
            rows.append(
                [f"{s} {d} ({k} templates), native mode"]
                + [
                    rate_estimate(native[o]).fmt(pct=True, items="people") if native[o] else "-"
                    for o in objectives
                ]
            )
    md += [
        "Exact match: mean over runs of each run's rate over people, [95% hierarchical "
        "bootstrap interval: runs, then people within runs, widened to the pooled Wilson "
        "interval, which bounds a rate of 0 or 100%] (runs, people). Rows marked native mode: "
        "BICO and MLM-U asked in their own mode (answer masked, bidirectional attention, "
        "interp.native), beside causal decoding.",
        "",
        _md_table(["", *objectives], rows),
        "",
    ]
    for o in objectives:
        family: list[tuple[str, float]] = []
        table = []
        for s, _, k in [c for c in cells if c[1] == "reverse"]:
            c = reversed_cell(groups[o], s, k)
            for label, t, ks, tost_bound in c.runs:
                table.append(
                    [f"{s} ({k})", label, str(t.n),
                     f"{t.diff_mean:+.3f} [{t.diff_low:+.3f}, {t.diff_high:+.3f}]",
                     f"{t.p:.3g}", f"{ks:.3g}", f"{tost_bound:.3f}"]
                )  # fmt: skip
            family.append((f"{s} ({k})", c.fisher_p))
            h = c.study
            null = ""
            if c.null:
                share = (
                    f", {100 * c.bound / c.forward.estimate:.0f}% of the forward effect "
                    f"{c.forward.estimate:+.2f}"
                    if c.forward.estimate > 0
                    else ""
                )
                null = f"interval covers 0: excludes effects beyond +-{c.bound:.3f} nats{share}"
            table.append(
                [f"**{s} ({k})**", f"study ({h.fmt_n('people')})", str(h.n_items),
                 f"{h.estimate:+.3f} [{h.low:+.3f}, {h.high:+.3f}]",
                 f"Fisher {c.fisher_p:.3g}", "", null or "(effect: interval excludes 0)"]
            )  # fmt: skip
        adjusted = holm([p for _, p in family])
        md += [
            f"### {o}: reversed log p(correct) - log p(random same-subset answer), per person",
            "",
            "Per run: paired t-test over people (95% t-interval; 'excludes beyond': the largest "
            "|difference| its 90% interval excludes, the TOST bound at alpha 0.05). Study: "
            "hierarchical bootstrap (runs, then people; 95%), per-run p-values combined by "
            "Fisher's method; where its interval covers 0, the largest |difference| it excludes.",
            "",
            _md_table(
                [
                    "cell",
                    "run",
                    "n",
                    "difference [95% CI]",
                    "p (t-test)",
                    "p (KS)",
                    "excludes beyond (nats)",
                ],
                table,
            ),  # fmt: skip
            "",
            "Holm-corrected over the declared family (the reversed test of each subset x "
            "template kind, Fisher-combined): "
            + "; ".join(f"{c} p = {p:.3g}" for (c, _), p in zip(family, adjusted, strict=True)),
            "",
        ]
    return md


def summary_rows(
    groups: dict[str, list[Path]], instrument: str, keys: Sequence[str] | None = None
) -> list[list[str]]:
    """One row per summary number in `keys` (default: every number any run has), one cell per
    objective: mean [95% interval over runs, inside the number's declared range] (n runs), by
    `interp.stats.runs_interval`; a p-value (`interp.stats.is_pvalue`) is listed per run and
    Fisher-combined instead, never averaged or given an interval. No rows if no run has the
    result."""
    per_obj = {o: _summaries(rs, instrument) for o, rs in groups.items()}
    if not any(per_obj.values()):
        return []
    if keys is None:
        keys = []
        for sums in per_obj.values():
            for s in sums:
                keys += [k for k, v in s.items() if isinstance(v, int | float) and k not in keys]
    rows = []
    for k in keys:
        cells = []
        for sums in per_obj.values():
            vals = [float(s[k]) for s in sums if isinstance(s.get(k), int | float)]
            if not vals:
                cells.append("n/a")
            elif is_pvalue(k):  # listed and combined, not averaged
                cells.append(fmt_pvalues(vals))
            else:
                cells.append(fmt_runs(vals, k))
        rows.append([f"{k}, per run" if is_pvalue(k) else k, *cells])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _inputs(runs: list[Path], instrument: str) -> list[Path]:
    """The saved files a figure reads: analysis/<instrument>.json/.npz, or the metrics."""
    names = (
        [f"analysis/{instrument}.json", f"analysis/{instrument}.npz"]
        if instrument
        else ["metrics.json", "eval_logprobs.npz"]
    )
    return [r / n for r in runs for n in names if (r / n).is_file()]


def _fingerprint(module: str, inputs: list[Path]) -> str:
    """Hash of the plot module's source and the inputs' paths, sizes and modification times."""
    spec = importlib.util.find_spec(module)
    files = [Path(spec.origin)] if spec is not None and spec.origin else []
    h = hashlib.sha256(module.encode())
    for p in [*files, *sorted(inputs)]:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _draw(module: str, func: str, arg: Any, stem: str) -> str:
    """Draw one figure (in a worker process); return its PNG path."""
    from interp.plots import figure_paths

    plot = getattr(importlib.import_module(module), func)
    plot(arg, stem)
    return str(figure_paths(stem)[0])


def draw_figures(
    groups: dict[str, list[Path]], fig_dir: Path, jobs: int = 1
) -> dict[str, dict[str, Path]]:
    """Every figure for every objective: {objective: {figure name: png path}}.

    A figure whose inputs (the saved results it reads, and its plot module) are unchanged since
    it was last drawn is not drawn again (fingerprints in fig_dir/.drawn.json), so re-running a
    finished study takes seconds. With `jobs` > 1 the figures are drawn on that many processes.
    """
    fig_dir.mkdir(parents=True, exist_ok=True)
    memo_path = fig_dir / ".drawn.json"
    try:
        memo: dict[str, str] = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    tasks: list[tuple[str, str, str, str, Any, list[Path]]] = []
    for objective, runs in groups.items():
        for name, (module, func, instrument) in FIGURES.items():
            have = [r for r in runs if _inputs([r], instrument)]
            if not have or importlib.util.find_spec(module) is None:
                continue
            tasks.append((objective, name, module, func, have, _inputs(have, instrument)))
    if len(groups) > 1:
        every = [r for runs in groups.values() for r in runs]
        inputs = _inputs(every, "") + [p for r in every for p in (r / "analysis").glob("*.json")]
        tasks.append(
            ("all", "objectives_comparison", "interp.plots.comparison", "plot_comparison",
             groups, inputs)
        )  # fmt: skip
    with_update = {o: [r for r in runs if _inputs([r], "update")] for o, runs in groups.items()}
    with_update = {o: runs for o, runs in with_update.items() if runs}
    if with_update:
        inputs = [p for runs in with_update.values() for p in _inputs(runs, "update")]
        tasks.append(
            ("all", "update_alignment", "interp.plots.update", "plot_alignment", with_update,
             inputs)
        )  # fmt: skip
    drawn: dict[str, dict[str, Path]] = {}
    todo = []
    for objective, name, module, func, arg, inputs in tasks:
        stem = fig_dir / (name if objective == "all" else f"{objective}_{name}")
        key, fp = stem.name, _fingerprint(module, inputs)
        pdf, png = stem.with_suffix(".pdf"), stem.with_suffix(".png")
        drawn.setdefault(objective, {})[name] = png
        if memo.get(key) == fp and png.is_file() and pdf.is_file():
            continue
        memo.pop(key, None)
        todo.append((key, fp, (module, func, arg, str(stem))))
    if jobs > 1 and len(todo) > 1:
        from interp.study import worker_context

        with ProcessPoolExecutor(
            max_workers=min(jobs, len(todo)), mp_context=worker_context()
        ) as pool:
            futures = {pool.submit(_draw, *args): (key, fp) for key, fp, args in todo}
            for fut in as_completed(futures):
                fut.result()
                key, fp = futures[fut]
                memo[key] = fp
    else:
        for key, fp, args in todo:
            _draw(*args)
            memo[key] = fp
    tmp = memo_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
    tmp.replace(memo_path)
    return drawn


def copy_figures(pngs: list[Path], dst: str | Path) -> None:
    """Copy figure PNGs into `dst` (e.g. the repository's figures/), creating it."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for p in pngs:
        with atomic_path(dst / p.name) as tmp:
            shutil.copy2(p, tmp)


def write_report(
    out: Path,
    run_dirs: list[Path],
    plan: Any,
    *,
    figures_dir: str | Path | None = None,
    wall_seconds: float = 0.0,
    jobs: int = 1,
) -> Path:
    """Write OUT/figures/*, OUT/report.md, OUT/report.html and the findings (OUT/findings.json
    and findings.md, `interp.findings`); copy figures, report and findings to `figures_dir`."""
    groups = group_runs(run_dirs)
    objectives = list(groups)
    fig_dir = out / "figures"
    drawn = draw_figures(groups, fig_dir, jobs=jobs)
    header = ["", *objectives]  # each cell states its own n: instruments run on some runs only
    findings = write_findings(out, groups, plan)  # OUT/findings.json, findings.md
    md = [
        "# Reversal-curse study report",
        "",
        provenance_line(findings["provenance"]),
        "",
        f"Runs: {len(run_dirs)} ({', '.join(objectives)} x seeds {list(plan.seeds)}), "
        f"run preset `{plan.run_preset}`. {RUNS_RULE} "
        f"Study wall time this invocation: {wall_seconds:.0f} s.",
        "",
        "## Behaviour: exact match and the reversed log-probability test",
        "",
        *behaviour_section(groups),
    ]
    for name, ins in INSTRUMENTS.items():
        rows = summary_rows(groups, name, ins.headlines)
        if rows:
            md += [
                f"## {name}",
                "",
                _md_table(header, rows),
                "",
                f"Headline numbers; every summary number is in each run's analysis/{name}.json.",
                "",
            ]
    md += ["## Figures", ""]
    for objective, figs in drawn.items():
        for name, png in figs.items():
            rel = png.relative_to(out)
            md += [
                f"### {objective}: {name}",
                "",
                CAPTIONS.get(name, ""),
                "",
                f"![{objective} {name}]({rel})",
                "",
            ]
    write_text(out / "report.md", "\n".join(md))  # atomic: a kill leaves the old report
    write_text(out / "report.html", _html(md, out))
    if figures_dir is not None:
        copy_figures(
            [*fig_dir.glob("*.png"), out / "report.md", out / "findings.json", out / "findings.md"],
            figures_dir,
        )
    return out / "report.md"


def _html(md_lines: list[str], out: Path) -> str:
    """A minimal markdown-to-HTML rendering of the report with figures inline (base64)."""
    body: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            rows = [r.strip("|").split("|") for r in table if not set(r) <= {"|", "-"}]
            h = "".join(f"<th>{html.escape(c.strip())}</th>" for c in rows[0])
            b = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>"
                for r in rows[1:]
            )
            body.append(f"<table><tr>{h}</tr>{b}</table>")
            table.clear()

    for block in md_lines:
        for line in block.split("\n"):
            if line.startswith("|"):
                table.append(line)
                continue
            flush()
            if line.startswith("![") and "](" in line:
                src = out / line[line.index("](") + 2 : -1]
                data = base64.b64encode(src.read_bytes()).decode()
                body.append(f'<img src="data:image/png;base64,{data}" style="max-width:100%">')
            elif line.startswith("#"):
                level = len(line) - len(line.lstrip("#"))
                body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
            elif line.strip():
                body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
    )
    head = f"<meta charset='utf-8'><title>interp study</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>"
