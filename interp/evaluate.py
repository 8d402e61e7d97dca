"""Behavioural evaluation, as in Berglund et al. (2023), Experiment 1.

- Exact match: greedy decoding, scored by `match_rule`. On the paper's data, the paper's rule: the
  generated text (stripped, lower-cased) starts with the completion. On the synthetic world, where
  every word is one token, whole words: the generated words must begin with the completion's
  words, so a wrong last name that extends the right one (`hawe` vs `haweyu`) is wrong, where the
  character rule would count it. Reported per subset x direction x template kind (training
  templates vs held-out ones, whose words all occur in training but in new arrangements).
- The log-probability test: on reversed prompts, the summed log-probability of the correct
  completion against that of a random other completion of the same subset (the person's
  entity swapped for another's). Log-probabilities are first averaged over a person's templates,
  so the paired t-test (`interp.stats.paired_test`) and the Kolmogorov-Smirnov test count
  people, not paraphrases. The control draw is seeded from the run (`interp.stats.run_seed`), so
  runs of different worlds and seeds draw different controls. Each cell also records its
  per-person differences (for the study's hierarchical interval) and the equivalence bound: the
  largest mean difference its 90% interval excludes (`interp.stats.equivalence_bound`).
- The role-matched control, beside it: the same test against the answer of another person of
  the same subset and the same role (and, on D2N prompts, the same first-name class), so a
  role-to-name association (a role word in the prompt, an answer's role) cannot pass for a
  memory of the fact (`role_matched_answers`). Drawn from a generator of its own, seeded from
  the same run seed, so the random control's draws are the ones they always were. Worlds whose
  people carry no role (the retrieval world, the paper's data) have no such column.
- Decoding: `greedy_generate` (the paper's rule) and `beam_search`, its generalisation to k
  candidates with their length-normalised log-likelihoods (one beam is greedy decoding; the
  answers of selective prediction).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from interp.controls import ROLE_MATCHED_RULE, control_answers, role_matched_answers
from interp.data.dataset import DIRECTIONS, TEMPLATE_KINDS, Example, FactDataset, pad_batch
from interp.data.tokenizer import EOS
from interp.data.world import SUBSETS
from interp.files import write_json, write_npz
from interp.model import RawForward, greedy_decode, raw, raw_forward
from interp.modes import infill_exact_match, masked_decode, prompt_suffixes, stepwise_logprobs
from interp.objectives import get_objective
from interp.objectives.base import CAUSAL, Mode
from interp.objectives.masking import MaskedObjective, bidirectional
from interp.runs import load_run, read_run_config
from interp.stats import equivalence_bound, paired_test, run_seed, wilson_interval

BATCH = 256


MATCH_RULES = ("prefix", "word")


def match_rule(dataset: FactDataset) -> str:
    """'word' on the synthetic world (it has a `world`), the paper's 'prefix' rule otherwise."""
    return "word" if dataset.world is not None else "prefix"


def is_exact_match(generated: str, completion: str, rule: str = "prefix") -> bool:
    """Is `generated` a correct answer for `completion`? Case and outer spaces are ignored.

    rule='prefix' (the paper's): the generated text starts with the completion, character by
    character. rule='word': the generated words start with the completion's words, whole word by
    whole word ('nira haweyu' does not match 'nira hawe').
    """
    g, c = generated.strip().lower(), completion.strip().lower()
    if rule == "prefix":
        return g.startswith(c)
    if rule == "word":
        cw = c.split()
        return g.split()[: len(cw)] == cw
    raise ValueError(f"unknown exact-match rule {rule!r}: use one of {MATCH_RULES}")


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module, prompts: list[tuple[int, ...]], n_new: int, batch_size: int = BATCH
) -> list[list[int]]:
    """Greedy continuation of each prompt by `n_new` tokens (stops adding after <eos>).

    Prompts are bucketed by length so no padding ever enters a prompt: the result is exactly
    what one-prompt-at-a-time decoding gives. Runs through `raw_forward` (no hook dispatch) and,
    for causal models, `interp.model.greedy_decode`'s key-value cache.
    """
    device = next(model.parameters()).device
    fast = raw_forward(model)
    net: Any = fast.net if isinstance(fast, RawForward) else None
    cached = net is not None and all(bool(raw(b.attn).causal) for b in net.layers)
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for _, idxs in sorted(by_len.items()):
        for s in range(0, len(idxs), batch_size):
            chunk = idxs[s : s + batch_size]
            toks = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)
            if cached:
                toks = greedy_decode(net, toks, n_new, EOS)
            else:
                done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
                for _ in range(n_new):
                    nxt = fast(toks)[:, -1].argmax(-1)
                    nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
                    done |= nxt == EOS
                    toks = torch.cat([toks, nxt[:, None]], dim=1)
            for row, i in enumerate(chunk):
                gen = toks[row, len(prompts[i]) :].tolist()
                out[i] = gen[: gen.index(EOS)] if EOS in gen else gen
    return out


@torch.no_grad()
def completion_logprobs(
    model: torch.nn.Module,
    prompts: list[tuple[int, ...]],
    answers: list[tuple[int, ...]],
    batch_size: int = BATCH,
) -> Float[Tensor, " n"]:
    """Summed log p(answer tokens | prompt) for each (prompt, answer) pair."""
    device = next(model.parameters()).device
    model = raw_forward(model)
    out = torch.empty(len(prompts))
    for s in range(0, len(prompts), batch_size):
        seqs = [
            tuple(p) + tuple(a)
            for p, a in zip(prompts[s : s + batch_size], answers[s : s + batch_size], strict=True)
        ]
        toks, _ = pad_batch(seqs, device=device)
        logits = model(toks)
        # every answer token at once: (its row, the position predicting it, the token)
        rows: list[int] = []
        pos: list[int] = []
        tgt: list[int] = []
        for row, (p, a) in enumerate(
            zip(prompts[s : s + batch_size], answers[s : s + batch_size], strict=True)
        ):
            rows += [row] * len(a)
            pos += range(len(p) - 1, len(p) + len(a) - 1)
            tgt += a
        index = torch.tensor(rows, device=device)
        sel = logits[index, torch.tensor(pos, device=device)]
        lp = sel.gather(1, torch.tensor(tgt, device=device)[:, None])[:, 0] - sel.logsumexp(-1)
        summed = torch.zeros(len(seqs), dtype=logits.dtype, device=device)
        out[s : s + len(seqs)] = summed.index_add_(0, index, lp).cpu()
    return out


def logprob_test(correct: np.ndarray, control: np.ndarray) -> dict[str, Any]:
    """Paired t-test and two-sample KS test of log p(correct) vs log p(random), per person.

    `diff_ci95` is the Student-t 95% interval of the mean difference; `equivalence_bound` the
    largest |mean difference| the 90% interval excludes (inf under 2 people); `diffs` the
    per-person differences themselves, in person order.
    """
    diff = correct - control
    t = paired_test(correct, control)
    res: dict[str, Any] = {
        "n": t.n,
        "mean_correct": t.mean,
        "mean_random": t.control_mean,
        "mean_diff": t.diff_mean,
        "t_stat": t.t_stat,
        "t_pvalue": t.p,
        "ks_stat": 0.0,
        "ks_pvalue": 1.0,
        "diff_ci95": [t.diff_low, t.diff_high],
        "equivalence_bound": equivalence_bound(diff),
        "diffs": [float(x) for x in diff],
    }
    if t.n >= 2 and np.ptp(diff) > 0:
        ks = stats.ks_2samp(correct, control)
        res.update(ks_stat=float(ks.statistic), ks_pvalue=float(ks.pvalue))
    return res


# Greedy answers run this many tokens past the longest answer: enough for an answer whose
# tokenisation differs from the reference's (the paper's data), irrelevant on word-token worlds.
EXTRA_TOKENS = 2


def exact_match(
    model: torch.nn.Module,
    dataset: FactDataset,
    prompts: list[Example],
    rule: str | None = None,
    mode: Mode = CAUSAL,
) -> np.ndarray:
    """Whether each prompt's answer in `mode` is right: the one exact match of the kit.

    Greedy decoding (causal, or bidirectional for BICO's mode) runs `EXTRA_TOKENS` past the
    longest answer and is scored by `rule` (default `match_rule`); masked decoding fills the
    answer's own number of masks and is token-exact (`interp.modes`)."""
    if mode.answer_masked:
        suffixes = prompt_suffixes(dataset, prompts)
        pred = masked_decode(
            model, mode, [e.prompt for e in prompts], [len(e.answer) for e in prompts], suffixes
        )
        return np.array([p == tuple(e.answer) for p, e in zip(pred, prompts, strict=True)])
    rule = rule or match_rule(dataset)
    n_new = max(len(e.answer) for e in prompts) + EXTRA_TOKENS
    with bidirectional(model, on=mode.bidirectional):
        gen = greedy_generate(model, [e.prompt for e in prompts], n_new)
    return np.array(
        [
            is_exact_match(dataset.text(g), dataset.text(e.answer), rule)
            for g, e in zip(gen, prompts, strict=True)
        ],
        dtype=bool,
    )


def answer_logprobs(
    model: torch.nn.Module,
    dataset: FactDataset,
    prompts: list[Example],
    answers: list[tuple[int, ...]],
    mode: Mode = CAUSAL,
) -> Float[Tensor, " n"]:
    """Summed log p(answer | prompt) in `mode`: teacher-forced under the causal mask, or by the
    chain rule left to right in a bidirectional mode (`interp.modes.stepwise_logprobs`; in a
    masked mode the answer's own number of masks, then the prompt's suffix)."""
    if mode.is_causal:
        return completion_logprobs(model, [e.prompt for e in prompts], answers)
    suffixes = prompt_suffixes(dataset, prompts) if mode.answer_masked else None
    return stepwise_logprobs(model, mode, [e.prompt for e in prompts], answers, suffixes)


def rates_by_cell(
    prompts: list[Example], hits: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """({subset: {direction: {template kind: rate}}}, the same with counts) of per-prompt hits."""
    em: dict[str, Any] = {}
    em_n: dict[str, Any] = {}
    subsets = [s for s in SUBSETS if any(e.subset == s for e in prompts)]
    subsets += [s for s in dict.fromkeys(e.subset for e in prompts) if s not in SUBSETS]
    for s in subsets:
        for d in DIRECTIONS:
            for k in TEMPLATE_KINDS:
                mask = np.array(
                    [e.subset == s and e.direction == d and e.templates == k for e in prompts]
                )
                if mask.any():
                    em.setdefault(s, {}).setdefault(d, {})[k] = float(hits[mask].mean())
                    em_n.setdefault(s, {}).setdefault(d, {})[k] = int(mask.sum())
    return em, em_n


def _per_person(prompts: list[Example], mask: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Each of `values` (one per prompt) averaged over the templates of each person in `mask`,
    in person order: the log-prob test's unit is a person, not a paraphrase."""
    rank = {
        p: i
        for i, p in enumerate(sorted({e.person for e, m in zip(prompts, mask, strict=True) if m}))
    }
    pidx = np.array([rank[e.person] for e, m in zip(prompts, mask, strict=True) if m])
    cnt = np.bincount(pidx, minlength=len(rank))
    return [np.bincount(pidx, weights=v[mask], minlength=len(rank)) / cnt for v in values]


def evaluate(
    model: torch.nn.Module,
    dataset: FactDataset,
    progress: bool = False,
    seed: int = 0,
    mode: Mode = CAUSAL,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Exact match for every prompt and the log-probability test in `mode`, against the random
    control and, where the world's people have roles, the role-matched one; return (metrics,
    arrays).

    `seed` seeds the control answers; `evaluate_run` passes the run's `run_seed`."""
    prompts = dataset.prompts
    if progress:
        print(f"evaluating {len(prompts)} prompts ({mode.name})")
    rule = match_rule(dataset)
    hits = exact_match(model, dataset, prompts, rule, mode)
    controls = control_answers(dataset, prompts, seed=seed)
    matched = role_matched_answers(dataset, prompts, seed=seed)
    lp_correct = answer_logprobs(model, dataset, prompts, [e.answer for e in prompts], mode).numpy()
    lp_control = answer_logprobs(model, dataset, prompts, controls, mode).numpy()
    lp_matched = None
    if matched is not None:  # NaN where a person has no role-matched other
        lp_matched = np.full(len(prompts), np.nan)
        have = [i for i, m in enumerate(matched) if m is not None]
        if have:
            lp_matched[have] = answer_logprobs(
                model,
                dataset,
                [prompts[i] for i in have],
                [matched[i] for i in have],  # type: ignore[misc]
                mode,
            ).numpy()

    subsets = [s for s in SUBSETS if any(e.subset == s for e in prompts)]
    subsets += [
        s for s in dict.fromkeys(e.subset for e in prompts) if s not in SUBSETS
    ]  # biography, the bridge's pairs
    em, em_n = rates_by_cell(prompts, hits)
    lpt: dict[str, Any] = {}
    lpt_matched: dict[str, Any] = {}
    for s in subsets:
        for d in DIRECTIONS:
            for k in TEMPLATE_KINDS:
                mask = np.array(
                    [e.subset == s and e.direction == d and e.templates == k for e in prompts]
                )
                if not mask.any():
                    continue
                c, r = _per_person(prompts, mask, lp_correct, lp_control)
                lpt.setdefault(s, {}).setdefault(d, {})[k] = logprob_test(c, r)
                if lp_matched is not None:
                    (m,) = _per_person(prompts, mask, lp_matched)
                    ok = np.isfinite(m)  # people with a role-matched other
                    test = logprob_test(c[ok], m[ok])
                    lpt_matched.setdefault(s, {}).setdefault(d, {})[k] = test
    metrics = {
        "exact_match": em,
        "exact_match_n": em_n,
        "logprob_test": lpt,
        "logprob_test_unit": "person (log-probs averaged over templates)",
        "exact_match_rule": "token" if mode.answer_masked else rule,
        "control_seed": seed,
        "mode": mode.name,
    }
    arrays = {
        "correct_logprob": lp_correct,
        "random_logprob": lp_control,
        "exact_match": hits,
        "person": np.array([e.person for e in prompts]),
        "subset": np.array([e.subset for e in prompts]),
        "direction": np.array([e.direction for e in prompts]),
        "templates": np.array([e.templates for e in prompts]),
    }
    if lp_matched is not None:
        metrics["logprob_test_role_matched"] = lpt_matched
        metrics["role_matched_rule"] = ROLE_MATCHED_RULE
        arrays["role_matched_logprob"] = lp_matched
    return metrics, arrays


def quick_exact_match(
    model: torch.nn.Module, dataset: FactDataset, per_cell: int = 48, mode: Mode = CAUSAL
) -> dict[str, float]:
    """Exact match in `mode` on the first `per_cell` training-template prompts per subset x
    direction. For the training log."""
    out = {}
    for s in SUBSETS:
        for d in DIRECTIONS:
            sel = dataset.select(subset=s, direction=d, templates="train")[:per_cell]
            if not sel:
                continue
            out[f"em_{s}_{d}"] = float(exact_match(model, dataset, sel, mode=mode).mean())
    return out


def training_log_metrics(
    model: torch.nn.Module, dataset: FactDataset, objective: str, per_cell: int = 48
) -> dict[str, float]:
    """What the training log records every `eval_every` steps (the learning curves): exact
    match in the objective's own mode (`em_<subset>_<direction>`), causal decoding beside it
    where the objective is asked otherwise but has a causal head (`causal_em_...`), and for a
    masking objective in-document infill of each entity (`infill_<subset>_<direction>`)."""
    obj = get_objective(objective)
    out = quick_exact_match(model, dataset, per_cell, obj.mode)
    if obj.mode != CAUSAL and obj.causal_head:
        causal = quick_exact_match(model, dataset, per_cell)
        out.update({f"causal_{k}": v for k, v in causal.items()})
    if isinstance(obj, MaskedObjective):
        fill = infill_exact_match(model, dataset, obj.infill_mode, per_subset=per_cell)
        out.update(
            {f"infill_{s}_{d}": v["rate"] for s, by_d in fill.items() for d, v in by_d.items()}
        )
    return out


def format_table(metrics: dict[str, Any]) -> str:
    """The exact-match table and the reversed log-probability test, as plain text."""
    lines = [f"exact match, {metrics.get('mode', CAUSAL.name)}:"]
    lines.append(f"{'subset':<6} {'direction':<8} {'train tpl':>10} {'held-out':>10}")
    for s, by_dir in metrics["exact_match"].items():
        for d, by_kind in by_dir.items():
            tr, ho = by_kind.get("train", float("nan")), by_kind.get("heldout", float("nan"))
            lines.append(f"{s:<6} {d:<8} {tr:>10.1%} {ho:>10.1%}")
    if "causal" in metrics:
        lines.append("")
        lines.append("causal decoding, beside the objective's own mode:")
        for s, by_dir in metrics["causal"]["exact_match"].items():
            for d, by_kind in by_dir.items():
                tr, ho = by_kind.get("train", float("nan")), by_kind.get("heldout", float("nan"))
                lines.append(f"{s:<6} {d:<8} {tr:>10.1%} {ho:>10.1%}")
    if "infill" in metrics:
        lines.append("")
        lines.append("in-document infill (one entity masked, the objective's own question):")
        for s, by_dir in metrics["infill"].items():
            cells = "  ".join(f"{d} {v['rate']:.1%} (n={v['n']})" for d, v in by_dir.items())
            lines.append(f"{s:<6} {cells}")
    if "learned" in metrics:
        lr = metrics["learned"]
        lines.append(f"learned its objective: {'yes' if lr['met'] else 'no'} ({lr['criterion']})")
    for key, what in (
        ("logprob_test", "random same-subset completion"),
        ("logprob_test_role_matched", "same-subset completion of the same role"),
    ):
        if key not in metrics:
            continue
        lines.append("")
        lines.append(f"reversed log-prob test (correct vs {what}, per person):")
        for s, by_dir in metrics[key].items():
            for k, r in by_dir.get("reverse", {}).items():
                lines.append(
                    f"  {s:<5} {k:<8} n={r['n']:<4} diff={r['mean_diff']:+.3f} "
                    f"t-test p={r['t_pvalue']:.3g}  KS p={r['ks_pvalue']:.3g}  "
                    f"excludes beyond +-{r.get('equivalence_bound', float('nan')):.2f} nats"
                )
    return "\n".join(lines)


LEARNED_AT = 0.95  # the convergence criterion's bar (issue: reproduce before refuting)


def trained_text(dataset: FactDataset) -> np.ndarray:
    """For each test prompt, whether prompt + answer is the start of a training document: the
    prompts whose exact match measures fit rather than generalisation."""
    starts = {d.tokens[:n] for d in dataset.train_docs for n in range(1, len(d.tokens) + 1)}
    return np.array([tuple(e.tokens) in starts for e in dataset.prompts], dtype=bool)


def learned(
    dataset: FactDataset, hits: np.ndarray, infill: dict[str, Any] | None
) -> dict[str, Any]:
    """Whether the run learned its own objective, the criterion every comparison of objectives
    reads: exact match in the objective's own mode on the forward prompts that are training
    text (`trained_text`) >= `LEARNED_AT` in every subset, and for a masking objective
    in-document infill of both entities >= `LEARNED_AT` in every subset. A masking objective
    whose next-token batches alone satisfy causal decoding has not thereby learned its own
    objective: that is why the forward part is read in its own mode."""
    fit = trained_text(dataset)
    forward: dict[str, float] = {}
    for s in dict.fromkeys(e.subset for e in dataset.prompts):
        m = fit & np.array([e.subset == s and e.direction == "same" for e in dataset.prompts])
        if m.any():
            forward[s] = float(hits[m].mean())
    rates = list(forward.values())
    fill = {f"{s}_{d}": v["rate"] for s, by_d in (infill or {}).items() for d, v in by_d.items()}
    rates += list(fill.values())
    out: dict[str, Any] = {
        "met": bool(rates) and min(rates) >= LEARNED_AT,
        "bar": LEARNED_AT,
        "forward": forward,
        "criterion": "own-mode forward exact match on training text"
        + (" and in-document infill of both entities" if infill is not None else "")
        + f" >= {LEARNED_AT:.0%} in every subset",
    }
    if infill is not None:
        out["infill"] = fill
    return out


def evaluate_model(
    model: torch.nn.Module, dataset: FactDataset, config: Any, progress: bool = False
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metrics, arrays) of a run's model: exact match and the log-probability test in the
    objective's own mode (`metrics["mode"]`); causal decoding beside it for an objective asked
    otherwise that has a causal head (BICO: `metrics["causal"]`); in-document infill for a
    masking objective (`metrics["infill"]`); whether the run learned its objective
    (`metrics["learned"]`); and the identity bridge's shortcut test."""
    model.eval()
    obj = get_objective(config.train.objective)
    metrics, arrays = evaluate(
        model, dataset, progress=progress, seed=run_seed(config), mode=obj.mode
    )
    if obj.mode != CAUSAL and obj.causal_head:  # transfer to causal decoding, beside
        hits = exact_match(model, dataset, dataset.prompts)
        metrics["causal"] = {"exact_match": rates_by_cell(dataset.prompts, hits)[0],
                             "mode": CAUSAL.name}  # fmt: skip
        arrays["causal_exact_match"] = hits
    infill = None
    if isinstance(obj, MaskedObjective):
        infill = metrics["infill"] = infill_exact_match(model, dataset, obj.infill_mode)
    metrics["learned"] = learned(dataset, arrays["exact_match"], infill)
    if dataset.bridge_prompts:  # the identity bridge's shortcut (echo) and trained identities
        metrics["bridge"] = bridge_metrics(model, dataset)
    return metrics, arrays


def write_evaluation(run_dir: Path, metrics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """RUN_DIR/eval_logprobs.npz, then RUN_DIR/metrics.json (its presence marks the run
    evaluated), each atomically."""
    write_npz(run_dir / "eval_logprobs.npz", arrays)
    write_json(run_dir / "metrics.json", metrics)


def evaluate_run(
    run_dir: str | Path,
    *,
    model: torch.nn.Module | None = None,
    dataset: FactDataset | None = None,
    config: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a run (`evaluate_model`) and write metrics.json and eval_logprobs.npz into it."""
    run_dir = Path(run_dir)
    if model is None or dataset is None:
        run = load_run(run_dir)
        model, dataset = run.model, run.dataset
    if config is None:
        config = read_run_config(run_dir)
    metrics, arrays = evaluate_model(model, dataset, config, progress)
    write_evaluation(run_dir, metrics, arrays)
    return metrics


# Beam search: greedy decoding's generalisation to k candidates (selective prediction's answers)


BRIDGE_KINDS = ("shortcut", "bridge", "identity")


def bridge_metrics(model: torch.nn.Module, dataset: FactDataset) -> dict[str, Any]:
    """Per kind of the bridge's own prompts, how often the greedy answer is the prompt's answer
    (word rule), with n and the Wilson 95% interval: 'shortcut' is Ma et al.'s echo (the
    reversal frame answered with B's own name); 'bridge' and 'identity' are the OCR bridge and
    the self-identities asked as trained (did the run learn them). Empty without such prompts."""
    prompts = dataset.bridge_prompts
    if not prompts or dataset.world is None:
        return {}
    hit = exact_match(model, dataset, prompts, "word")
    out: dict[str, Any] = {"condition": dataset.world.config.bridge}
    for kind in BRIDGE_KINDS:
        hits = [bool(h) for h, e in zip(hit, prompts, strict=True) if e.templates == kind]
        if hits:
            rate, lo, hi = wilson_interval(sum(hits), len(hits))
            out[kind] = {"rate": rate, "n": len(hits), "ci95": [lo, hi]}
    return out
