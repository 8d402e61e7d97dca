"""Activation patching, the reversal study's numbers: positions named across templates, patched
grids summarised per group (baselines, best cells, the meaningfulness flag, the wrong-source
control), the restored fraction per person at two sites and along ROME's severed path, the flat
summary (`PatchingSummary`) and the text table.

The tracing (corruptions, the patched runs) is :mod:`interp.analysis.patching`, which re-exports
everything here; the method and its controls are described there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float, Int
from torch import Tensor

from interp.analysis.activation_patching import ACTS
from interp.analysis.options import SEED_MAX, Options, option
from interp.data.dataset import TEMPLATE_KINDS, Example, FactDataset
from interp.data.world import SUBSETS
from interp.results import Result, Section, Summary, number, section
from interp.stats import NONNEGATIVE, REAL, mean_ci

QUERIES = {"forward": "same", "reverse": "reverse"}  # query name -> dataset direction
SITES = ("entity_last", "final")  # the entity's last token (A's, forward) and the final position
CORRUPTIONS = ("swap", "noise")
SEVER = ("none", "mlp", "attn")  # severed path: nothing, the MLPs or attention frozen corrupted


@dataclass(frozen=True)
class PatchingOptions(Options):
    """What `run_analysis` patches and how (each help line is also the CLI's --help)."""

    corruptions: tuple[str, ...] = option(
        CORRUPTIONS,
        "entity swap and/or Gaussian noise on the entity's token embeddings",
        choices=CORRUPTIONS,
    )
    templates: str = option(
        "train", "prompts on training or held-out templates", choices=TEMPLATE_KINDS
    )
    batch_size: int = option(512, "patched cells per forward pass; lower it to save memory", min=1)
    max_prompts: int = option(32, "prompts per subset x query, a seeded sample; 0 = all", min=0)
    noise_samples: int = option(5, "noise draws per prompt for the noise corruption", min=1)
    noise_scale: float = option(
        3.0,
        "noise std in units of the entity token embeddings' std (ROME: 3)",
        min=0,
        max=1000,
        min_open=True,
    )
    min_gap: float = option(1.0, "smallest clean - corrupted score gap for a normalised map", min=0)
    seed: int = option(
        0,
        "offset on the run's item seed (stats.run_seed) of prompt sampling, swap partners, noise",
        min=0,
        max=SEED_MAX,
    )
    subsets: tuple[str, ...] = option(SUBSETS, "subsets whose facts are patched", choices=SUBSETS)


@dataclass(frozen=True)
class TraceGrids:
    """Raw scores of every patched cell of a set of prompts, with the two baselines."""

    patched: Float[Tensor, "prompt act layer pos"]  # NaN past each prompt's length
    clean: Float[Tensor, " prompt"]
    corrupted: Float[Tensor, " prompt"]
    lengths: Int[Tensor, " prompt"]
    span: Float[Tensor, "prompt act layer"] | None = None  # the entity's tokens patched together

    def normalised(self) -> Float[Tensor, "prompt act layer pos"]:
        gap = (self.clean - self.corrupted)[:, None, None, None]
        return (self.patched - self.corrupted[:, None, None, None]) / gap


@dataclass(frozen=True)
class MaxOverLayers(Section):
    """The largest restored fraction over layers, its within-run 95% interval over people and
    its layer."""

    value: float | None = number("largest restored fraction over layers", REAL, headline=True)
    low: float | None = number("its 95% interval over people, low end", REAL)
    high: float | None = number("its 95% interval over people, high end", REAL)
    layer: float | None = number("the layer where it is largest", NONNEGATIVE)


@dataclass(frozen=True)
class Sites(Section):
    """Restored fraction per activation at one site (largest over layers)."""

    resid_pre_max: MaxOverLayers = section(MaxOverLayers, "the residual stream into the block")
    attn_out_max: MaxOverLayers = section(MaxOverLayers, "attention's output")
    mlp_out_max: MaxOverLayers = section(MaxOverLayers, "the MLP's output (ROME's site)")


@dataclass(frozen=True)
class Severed(Section):
    """ROME's severed path: resid_pre at the entity's last token restored with nothing, the
    downstream MLPs or downstream attention at that token frozen at their corrupted values."""

    none_max: MaxOverLayers = section(MaxOverLayers, "nothing frozen")
    mlp_max: MaxOverLayers = section(MaxOverLayers, "the downstream MLPs frozen corrupted")
    attn_max: MaxOverLayers = section(MaxOverLayers, "downstream attention frozen corrupted")


@dataclass(frozen=True)
class Query(Section):
    """One query's numbers (n2d, entity swap). Restorations are normalised (corrupted 0, clean
    1) and exist only where the clean - corrupted gap is meaningful; the gap is a raw logit
    difference."""

    clean_minus_corrupt: float | None = number(
        "mean clean - corrupted logit difference, final position", REAL, headline=True
    )
    best_restoration: float | None = number(
        "largest normalised restoration by one resid_pre cell", REAL, headline=True
    )
    control_best_restoration: float | None = number(
        "the same from a third person's clean run (wrong-source control)", REAL, headline=True
    )
    best_layer: float | None = number("the layer of the best resid_pre cell", NONNEGATIVE)
    clean: float | None = number("mean clean score", REAL)
    corrupted: float | None = number("mean corrupted score", REAL)
    entity_last: Sites = section(Sites, "restored fraction at the entity's last token")
    entity_all: Sites = section(Sites, "restored fraction, every token of the entity together")
    final: Sites = section(Sites, "restored fraction at the final position")
    control_entity_last: Sites = section(
        Sites, "the same-site control (a third person's clean run) at the entity's last token"
    )
    control_entity_all: Sites = section(
        Sites, "the same-site control, every token of the entity together"
    )
    severed: Severed = section(Severed, "ROME's severed path at the entity's last token")


@dataclass(frozen=True)
class PatchingSummary(Summary):
    """Activation patching's headline numbers (`result.summary` of `run_analysis`): the n2d
    entity swap, forward vs reverse (the reverse gap is near 0 under the curse, so its
    restorations are usually undefined). Per-group numbers (subset x query x corruption) are
    details (`group_gaps`)."""

    forward: Query = section(Query, "forward queries (n2d, entity swap)")
    reverse: Query = section(Query, "reverse queries (n2d, entity swap)")

    def group_gaps(self) -> dict[tuple[str, str, str], float]:
        """Mean clean - corrupted score by (subset, query, corruption), every group patched."""
        return self.cells(
            "{subset}_{query}_{corruption}_clean_minus_corrupt",
            subset=SUBSETS,
            query=tuple(QUERIES),
            corruption=CORRUPTIONS,
        )


def entity_span(e: Example) -> tuple[int, int]:
    """The span of the entity the prompt names (A for "A is ..." prompts, B for "B is ...")."""
    return e.a_span if 0 <= e.a_span[0] and e.a_span[1] <= e.prompt_len else e.b_span


def entity_letter(e: Example) -> str:
    return "A" if entity_span(e) == e.a_span else "B"


def severed_restoration(
    scores: Float[Tensor, "prompt sever layer"], trace: TraceGrids, prompts: Sequence[Example]
) -> tuple[dict[str, Any], np.ndarray]:
    """Per person, (severed score - corrupted) / (clean - corrupted), means over the person's
    prompts as in `site_restoration`; the mean over people per layer with its 95% interval."""
    people = sorted({e.person for e in prompts})
    rows = [np.array([e.person == p for e in prompts]) for p in people]
    effect = scores.double().numpy() - trace.corrupted.cpu().double().numpy()[:, None, None]
    gap = (trace.clean - trace.corrupted).cpu().double().numpy()
    per_person = np.stack([effect[r].mean(0) / gap[r].mean() for r in rows])  # person sever layer
    out = {"site": "entity_last", "n_people": len(people), **_by_layer(per_person, SEVER)}
    return out, per_person


def position_labels(e: Example, fixed_entity_len: bool = True) -> list[str]:
    """The name of every prompt position relative to the entity span (see module docstring)."""
    start, end = entity_span(e)
    letter = entity_letter(e)
    out = []
    for p in range(e.prompt_len):
        if p == 0:
            out.append("<bos>")
        elif p < start:
            out.append("pre")
        elif p < end:
            k = p - start
            if fixed_entity_len:
                out.append(f"{letter}{k + 1}")
            else:
                out.append(
                    f"{letter}last"
                    if p == end - 1
                    else f"{letter}first"
                    if k == 0
                    else f"{letter}mid"
                )
        elif p == e.prompt_len - 1:
            out.append("final")
        elif p == end:
            out.append("post")
        else:
            out.append("mid")
    return out


def label_order(labels: Sequence[Sequence[str]]) -> list[str]:
    """Every label that occurs, in prompt order (<bos>, pre, entity, post, mid, final)."""
    seen = {x for ls in labels for x in ls}
    order = ["<bos>", "pre"]
    for letter in "AB":
        order += [f"{letter}{k}" for k in range(1, 65)]
        order += [f"{letter}first", f"{letter}mid", f"{letter}last"]
    order += ["post", "mid", "final"]
    return [x for x in order if x in seen]


def by_label(
    grid: Float[Tensor, "prompt act layer pos"],
    labels: Sequence[Sequence[str]],
    order: Sequence[str],
) -> Float[np.ndarray, "prompt act layer label"]:
    """Average each prompt's cells over the positions of each label (NaN where it has none)."""
    g = grid.detach().cpu().double().numpy()
    out = np.full((*g.shape[:3], len(order)), np.nan)
    for i, ls in enumerate(labels):
        for j, name in enumerate(order):
            pos = [p for p, x in enumerate(ls) if x == name]
            if pos:
                out[i, :, :, j] = g[i][..., pos].mean(axis=-1)
    return out


def _nan_to_none(a: np.ndarray) -> list[Any]:
    """A nested list for JSON, with NaN (no data) as null."""
    return [_nan_to_none(x) if np.ndim(x) else (None if np.isnan(x) else float(x)) for x in a]


def summarise_group(
    trace: TraceGrids,
    control: TraceGrids | None,
    control_idx: list[int],
    prompts: list[Example],
    opts: PatchingOptions,
    ds: FactDataset,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Mean grids per position name, baselines, best cells and the meaningfulness flag."""
    fixed = len({entity_span(e)[1] - entity_span(e)[0] for e in prompts}) == 1
    labels = [position_labels(e, fixed) for e in prompts]
    order = label_order(labels)
    effect = by_label(trace.patched - trace.corrupted[:, None, None, None], labels, order)
    clean = trace.clean.cpu().double().numpy()
    corrupted = trace.corrupted.cpu().double().numpy()
    gap = clean - corrupted
    present = ~np.isnan(effect[:, 0, 0, :])  # prompt label
    n_label = present.sum(0)
    # Mean effect over the prompts that have each label, over the mean gap of those prompts.
    mean_effect = np.nansum(effect, axis=0) / n_label  # act layer label
    gap_label = (gap[:, None] * present).sum(0) / n_label  # label
    # Prompts of one person share the fact, so the interval counts people, not prompts.
    people = sorted({e.person for e in prompts})
    per_person = np.array([gap[[e.person == p for e in prompts]].mean() for p in people])
    p_mean, g_lo, g_hi, _ = mean_ci(per_person.tolist())
    g_mean = float(gap.mean())
    meaningful = abs(g_mean) >= opts.min_gap and (g_lo > 0 or g_hi < 0)
    normalised = mean_effect / gap_label
    out: dict[str, Any] = {
        "n_prompts": len(prompts),
        "corrupted_entity": entity_letter(prompts[0]),
        "example_prompt": ds.text(prompts[0].prompt),
        "labels": order,
        "label_counts": [int(c) for c in n_label],
        "clean": {"mean": float(clean.mean()), "per_prompt": clean.tolist()},
        "corrupted": {"mean": float(corrupted.mean()), "per_prompt": corrupted.tolist()},
        "clean_minus_corrupt": {
            "mean": g_mean,
            "mean_over_people": p_mean,
            "ci95_over_people": [g_lo, g_hi],
            "n_people": len(people),
            "frac_prompts_above_min_gap": float(np.mean(gap >= opts.min_gap)),
        },
        "meaningful": bool(meaningful),
        "effect_raw": {a: mean_effect[i].tolist() for i, a in enumerate(ACTS)},
        "normalised": {
            a: (normalised[i].tolist() if meaningful else None) for i, a in enumerate(ACTS)
        },
        "best": {},
    }
    for i, a in enumerate(ACTS):
        src = normalised[i] if meaningful else mean_effect[i]
        layer, j = np.unravel_index(int(np.argmax(src)), src.shape)
        out["best"][a] = {
            "value": float(src[layer, j]),
            "layer": int(layer),
            "position": order[j],
            "units": "normalised" if meaningful else "raw",
        }
    arrays = {
        "meaningful": np.array(meaningful),
        "normalised": normalised,
        "effect_raw": mean_effect,
        "clean": clean,
        "corrupted": corrupted,
        "per_prompt_effect": effect,
        "person": np.array([e.person for e in prompts]),
        "template": np.array([e.template for e in prompts]),
    }
    if meaningful:
        out["sites"], site_arrays = site_restoration(
            effect, gap, prompts, order, _span_effect(trace)
        )
        arrays.update(site_arrays)
    if control is not None:
        # Control runs exist for the prompts that found a third person (`control_idx`).
        c_effect = by_label(
            control.patched - control.corrupted[:, None, None, None],
            [labels[i] for i in control_idx],
            order,
        )
        c_present = ~np.isnan(c_effect[:, 0, 0, :])
        c_gap = (control.clean - control.corrupted).cpu().double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):  # a label no control prompt has
            c_norm = (np.nansum(c_effect, axis=0)[0] / c_present.sum(0)) / (
                (c_gap[:, None] * c_present).sum(0) / c_present.sum(0)
            )  # layer label
        layer, j = np.unravel_index(int(np.nanargmax(c_norm)), c_norm.shape)
        out["control"] = {
            "what": "every activation patched from a third person's clean run (wrong source); "
            "normalised_resid_pre and best: its resid_pre cells, sites: each site's comparator",
            "n_prompts": int(control.clean.shape[0]),
            "normalised_resid_pre": _nan_to_none(c_norm) if meaningful else None,
            "best": {"value": float(c_norm[layer, j]), "layer": int(layer), "position": order[j]}
            if meaningful
            else None,
        }
        arrays["control_normalised_resid_pre"] = c_norm
        if meaningful and c_effect.shape[1] == len(ACTS):
            # the same sites patched from the third person: each site's own comparator
            c_prompts = [prompts[i] for i in control_idx]
            out["control"]["sites"], c_arrays = site_restoration(
                c_effect, c_gap, c_prompts, order, _span_effect(control)
            )
            arrays.update({f"control/{k}": v for k, v in c_arrays.items()})
    return out, arrays


def _span_effect(trace: TraceGrids) -> np.ndarray | None:
    """The span patch's effect (patched - corrupted) [prompt, act, layer], if it was run."""
    if trace.span is None:
        return None
    corrupted = trace.corrupted.cpu().double().numpy()[:, None, None]
    return trace.span.cpu().double().numpy() - corrupted


def entity_last_label(order: Sequence[str], letter: str) -> str | None:
    """The position name of the entity's last token: `<letter>last`, or the highest
    `<letter>k` when every prompt's entity has the same length."""
    if f"{letter}last" in order:
        return f"{letter}last"
    ks = [int(x[1:]) for x in order if x[:1] == letter and x[1:].isdigit()]
    return f"{letter}{max(ks)}" if ks else None


def _by_layer(
    per_person: Float[np.ndarray, "person variant layer"], names: Sequence[str]
) -> dict[str, Any]:
    """Per variant (`names[i]`: an act, a severed path): the mean over people per layer with its
    95% interval, and the largest layer."""
    out: dict[str, Any] = {}
    for i, a in enumerate(names[: per_person.shape[1]]):
        cis = [mean_ci(per_person[:, i, layer].tolist()) for layer in range(per_person.shape[2])]
        means = [c[0] for c in cis]
        best = int(np.nanargmax(means))
        out[a] = {
            "mean": means,
            "low": [c[1] for c in cis],
            "high": [c[2] for c in cis],
            "max": {"value": means[best], "layer": best, "ci95": [cis[best][1], cis[best][2]]},
        }
    return out


def site_restoration(
    effect: Float[np.ndarray, "prompt act layer label"],
    gap: Float[np.ndarray, " prompt"],
    prompts: Sequence[Example],
    order: Sequence[str],
    span: Float[np.ndarray, "prompt act layer"] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Restored fraction per activation x layer at each site, with a within-run 95% interval
    over people: the entity's last token (`entity_last`), the final position (`final`), every
    token of the entity patched together (`entity_all`, from `span`, the patched effect of the
    span) and each entity token alone (`entity_each[label]`).

    A person's restored fraction is the mean patched effect over their prompts divided by the
    mean clean - corrupted gap over the same prompts (the group's normalisation, per person);
    prompts of one person share the fact, so people, not prompts, are the items. The site
    estimate is the mean over people with its Student-t interval. Returns the JSON part
    (`sites[site][act]`: `mean`, `low`, `high` per layer, `max` with its layer and interval;
    `label`, `n_people`) and arrays `sites/<site>` [person, act, layer].
    """
    people = sorted({e.person for e in prompts})
    rows = [np.array([e.person == p for e in prompts]) for p in people]
    letter = entity_letter(prompts[0])

    def per_person(x: Float[np.ndarray, "prompt act layer"]) -> np.ndarray:
        return np.stack([np.nanmean(x[r], axis=0) / gap[r].mean() for r in rows])

    columns: dict[str, tuple[str, np.ndarray]] = {}
    for site, label in (("entity_last", entity_last_label(order, letter)), ("final", "final")):
        if label is not None and label in order:
            columns[site] = (label, effect[..., order.index(label)])
    if span is not None:
        columns["entity_all"] = (f"{letter} (every token)", span)
    each = [x for x in order if x[:1] == letter and len(x) > 1]
    columns |= {f"entity_each/{x}": (x, effect[..., order.index(x)]) for x in each}
    out: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for site, (label, x) in columns.items():
        pp = per_person(x)
        arrays[f"sites/{site}"] = pp
        entry = {"label": label, "n_people": len(people), **_by_layer(pp, ACTS)}
        if site.startswith("entity_each/"):
            out.setdefault("entity_each", {})[label] = entry
        else:
            out[site] = entry
    return out, arrays


def details(groups: dict[str, Any]) -> dict[str, float]:
    """Per group `<subset>_<query>_<corruption>_`: `clean_minus_corrupt` (raw score gap,
    always), `<act>_best` and `control_best` (max normalised effect, only where the gap is
    meaningful)."""
    out: dict[str, float] = {}
    for subset, by_q in groups.items():
        for query, by_c in by_q.items():
            for corruption, g in by_c.items():
                key = f"{subset}_{query}_{corruption}"
                out[f"{key}_clean_minus_corrupt"] = g["clean_minus_corrupt"]["mean"]
                if not g["meaningful"]:
                    continue
                for a in ACTS:
                    out[f"{key}_{a}_best"] = g["best"][a]["value"]
                if g.get("control") and g["control"]["best"]:
                    out[f"{key}_control_best"] = g["control"]["best"]["value"]
    return out


def _max(m: dict[str, Any]) -> MaxOverLayers:
    return MaxOverLayers(m["value"], m["ci95"][0], m["ci95"][1], float(m["layer"]))


def query_numbers(g: dict[str, Any] | None) -> Query:
    """One query's declared numbers from its n2d swap group (empty without the group)."""
    if g is None:
        return Query()
    meaningful = g["meaningful"]
    control = g.get("control") or {}
    sites = {
        prefix + site: Sites(**{f"{a}_max": _max(by_act[a]["max"]) for a in ACTS})
        for prefix, found in (("", g.get("sites", {})), ("control_", control.get("sites", {})))
        for site, by_act in (found if meaningful else {}).items()
        if site in ("entity_last", "entity_all", "final")
        and not (prefix and site == "final")  # the final position's control: its resid_pre best
    }
    severed = (
        Severed(**{f"{v}_max": _max(g["severed"][v]["max"]) for v in SEVER})
        if meaningful and "severed" in g
        else Severed()
    )
    best = g["best"]["resid_pre"]
    return Query(
        clean_minus_corrupt=g["clean_minus_corrupt"]["mean"],
        best_restoration=best["value"] if meaningful else None,
        control_best_restoration=(
            control["best"]["value"] if meaningful and control.get("best") else None
        ),
        best_layer=float(best["layer"]) if meaningful else None,
        clean=g["clean"]["mean"],
        corrupted=g["corrupted"]["mean"],
        severed=severed,
        **sites,
    )


def summarise(groups: dict[str, Any]) -> PatchingSummary:
    """The declared numbers: the n2d swap group of each query."""
    n2d = groups.get("n2d", {})
    return PatchingSummary(
        forward=query_numbers(n2d.get("forward", {}).get("swap")),
        reverse=query_numbers(n2d.get("reverse", {}).get("swap")),
    )


def format_summary(result: Result) -> str:
    """A short table: per group the baselines, the gap and the best cell per activation."""
    lines = [
        f"{'group':<24} {'clean':>7} {'corrupt':>8} {'gap':>7}  best resid_pre / attn_out / "
        "mlp_out (value @ layer, position)"
    ]
    for subset, by_q in result["groups"].items():
        for query, by_c in by_q.items():
            for corruption, g in by_c.items():
                cells = []
                for a in ACTS:
                    b = g["best"][a]
                    cells.append(f"{b['value']:.2f}@L{b['layer']},{b['position']}")
                flag = "" if g["meaningful"] else "  [gap not meaningful: raw effects shown]"
                lines.append(
                    f"{subset + ' ' + query + ' ' + corruption:<24} "
                    f"{g['clean']['mean']:>7.2f} {g['corrupted']['mean']:>8.2f} "
                    f"{g['clean_minus_corrupt']['mean']:>7.2f}  {' / '.join(cells)}{flag}"
                )
    s = result["summary"]
    if "forward_best_restoration" in s:
        lines.append(
            f"forward (n2d, swap) best resid_pre restoration: "
            f"{s['forward_best_restoration']:.3f}; wrong-source control: "
            f"{s.get('forward_control_best_restoration', float('nan')):.3f}"
        )
    g = result["groups"].get("n2d", {}).get("forward", {}).get("swap", {})
    control_sites = (g.get("control") or {}).get("sites") or {}
    for site, by_act in g.get("sites", {}).items():
        if site == "entity_each":
            continue
        cells = [
            f"{a} {m['value']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] @L{m['layer']}"
            + (
                f" (control {c:.2f})"
                if (c := _control_max(control_sites, site, a)) is not None
                else ""
            )
            for a in ACTS
            for m in [by_act[a]["max"]]
        ]
        lines.append(
            f"forward (n2d, swap) restored at {site} ({by_act['label']}; max over layers, "
            f"95% interval over {by_act['n_people']} people): " + "; ".join(cells)
        )
    if "severed" in g:
        sv = g["severed"]
        cells = [
            f"{v} {m['value']:.2f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}] @L{m['layer']}"
            for v in SEVER
            for m in [sv[v]["max"]]
        ]
        lines.append(
            "forward (n2d, swap) severed path at the entity's last token, resid_pre restored "
            "with nothing / the MLPs / attention frozen corrupted: " + "; ".join(cells)
        )
    if "reverse_clean_minus_corrupt" in s:
        lines.append(
            f"reverse (n2d, swap) clean - corrupted logit difference: "
            f"{s['reverse_clean_minus_corrupt']:.3f}"
        )
    return "\n".join(lines)


def _control_max(sites: dict[str, Any], site: str, act: str) -> float | None:
    """The same-site control's largest restored fraction over layers, if there is one."""
    by_act = sites.get(site)
    return None if by_act is None else by_act[act]["max"]["value"]
