"""Allen-Zhu & Li's own Q-probe beside the kit's linear one: a low-rank update of the embedding,
then a linear head on the last layer (Physics of Language Models Part 3.1, arXiv 2309.14316).

The storage study's Q-probe (`interp.analysis.storage`) is a logistic regression on the frozen
residual stream at the name's last token, per layer. Allen-Zhu & Li's Q-probe is stronger: the
model stays frozen but the probe may also move the input embedding by a rank-r update
(E + U V, U: [d_vocab, r], V: [r, d_model]) and reads the last layer through a linear head,
all trained together by gradient descent. A rank-r update lets the probe re-weight how the name
enters the network; the model still has to carry the attribute from the name to the last layer.
If the kit's linear Q-probe were capped by probe power, this one would read more.

Protocol, per run and attribute: the same people the storage probes read (the `qa_test` half,
never questioned in training), input "<bos> A" (the name alone), read at its last token after
the model's own final LayerNorm; person-level folds stratified by label (`person_folds`, 3
folds), each person tested once; AdamW, lr 1e-2, weight decay 1e-3, `--steps` full-batch steps
(U starts at 0, so step 0 is the linear probe on the last layer). Ranks 0 (the linear head
alone, on the last layer) and 16 (theirs). The control: the same probe on the run's own
initial weights (`build_bridge` with its training seed), where nothing was stored: what the
probe learns there by memorising name tokens bounds what it can invent. Chance: the majority
class of each label. Accuracy pools the held-out predictions; the interval is Wilson's over
people (one run) or, with several runs of one cell, the hierarchical bootstrap over runs then
people (`interp.stats.rate_estimate`).

    python experiments/q_probe_lowrank.py --out figures/storage/q_probe_lowrank.json \\
        --runs STUDY/runs/plain_causal_s* STUDY/runs/augmented_causal_s*
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from interp.analysis.linear_probe import majority_rate, person_folds
from interp.analysis.storage import name_inputs
from interp.data.biography import LABELS, BiographyWorld
from interp.data.dataset import pad_batch
from interp.files import write_json
from interp.model import RawForward, build_bridge, raw, supports_raw
from interp.runs import load_run
from interp.stats import rate_estimate

RANKS = (0, 16)  # the linear head alone on the last layer; Allen-Zhu & Li's rank 16
FOLDS = 3


def last_states(net, tokens, last, delta):
    """The final-LayerNorm state at each sequence's last token (`RawForward.final_state`: the
    native model's forward on its raw modules, stopped before the unembedding; right padding is
    invisible to the causal attention at a real token), with `delta` ([d_vocab, d_model] or
    None) added to the embedding of every input token."""
    h = raw(net.tok_embed)(tokens)
    if delta is not None:
        h = h + delta[tokens]
    return RawForward(net).final_state(inputs_embeds=h)[torch.arange(len(last)), last]


def probe_correct(model, tokens, last, y, people, n_classes, rank, steps, seed):
    """Held-out correctness of every person (each tested once over the folds)."""
    correct = np.zeros(len(y), dtype=bool)
    net = model.original_model
    assert supports_raw(net), "the probe runs the native model's raw forward"
    d_model = model.cfg.d_model
    d_vocab = raw(net.tok_embed).weight.shape[0]
    yt = torch.tensor(y)
    for f, (train, test) in enumerate(person_folds(people, FOLDS, seed, strata=y)):
        g = torch.Generator().manual_seed(seed * 100 + f)
        head = torch.nn.Linear(d_model, n_classes)
        with torch.no_grad():
            head.weight.copy_(torch.randn(n_classes, d_model, generator=g) * 0.01)
            head.bias.zero_()
        params = list(head.parameters())
        u = v = None
        if rank:
            u = torch.zeros(d_vocab, rank, requires_grad=True)
            v = (torch.randn(rank, d_model, generator=g) * 0.02).requires_grad_(True)
            params += [u, v]
        opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-3)
        tr = torch.tensor(train)
        fixed = None if rank else last_states(net, tokens[tr], last[tr], None).detach()
        for _ in range(steps):
            delta = u @ v if rank else None
            h = fixed if fixed is not None else last_states(net, tokens[tr], last[tr], delta)
            loss = F.cross_entropy(head(h), yt[tr])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            te = torch.tensor(test)
            h = last_states(net, tokens[te], last[te], u @ v if rank else None)
            correct[test] = (head(h).argmax(-1) == yt[te]).numpy()
    return correct


def run_one(path: Path, steps: int, seed: int) -> dict:
    run = load_run(path)
    world = run.dataset.world
    assert isinstance(world, BiographyWorld), f"{path} is not a biography-world run"
    people = [p for p in world.people if p.subset == "qa_test"]
    seqs = name_inputs(run.dataset, people)
    tokens, _ = pad_batch(seqs)
    last = torch.tensor([len(s) - 1 for s in seqs])
    pid = np.array([p.id for p in people])
    init = build_bridge(run.config.model, run.dataset.d_vocab, run.config.train.seed).eval()
    out: dict = {"run": path.name, "n_people": len(people), "steps": steps, "probes": {}}
    t0 = time.perf_counter()
    for model_name, model in (("trained", run.model), ("random_init", init)):
        for p in model.parameters():
            p.requires_grad_(False)
        for lab in LABELS:
            y = np.array([p.label(lab) for p in people], dtype=np.int64)
            for rank in RANKS:
                c = probe_correct(
                    model, tokens, last, y, pid, world.n_classes(lab), rank, steps, seed
                )
                out["probes"][f"{model_name}/{lab}/r{rank}"] = c.astype(int).tolist()
            out.setdefault("chance", {})[lab] = majority_rate(y)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def cell_of(name: str) -> str:
    """A run's cell: its directory name without seed and hash."""
    return re.sub(r"_s\d+_[0-9a-f]{12}$", "", name)


def summarise(runs: list[dict]) -> dict:
    """Per cell, model, rank: the mean over the four attributes of the held-out accuracy, with
    its interval (runs then people), and each attribute's."""
    cells: dict[str, list[dict]] = {}
    for r in runs:
        cells.setdefault(cell_of(r["run"]), []).append(r)
    out: dict = {}
    for cell, rs in cells.items():
        for model_name in ("trained", "random_init"):
            for rank in RANKS:
                per_attr = {}
                for lab in LABELS:
                    e = rate_estimate([r["probes"][f"{model_name}/{lab}/r{rank}"] for r in rs])
                    per_attr[lab] = [100 * e.estimate, 100 * e.low, 100 * e.high]
                mean = [
                    [float(np.mean([r["probes"][f"{model_name}/{lab}/r{rank}"][i]
                                    for lab in LABELS]))  # fmt: skip
                     for i in range(r["n_people"])]
                    for r in rs
                ]  # fmt: skip
                e = rate_estimate(mean)
                out[f"{cell}/{model_name}/r{rank}"] = {
                    "mean": [100 * e.estimate, 100 * e.low, 100 * e.high],
                    "attributes": per_attr,
                    "n_runs": len(rs),
                    "n_people": sum(r["n_people"] for r in rs),
                }
        out[f"{cell}/chance"] = 100 * float(np.mean([rs[0]["chance"][lab] for lab in LABELS]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="biography-world run directories")
    ap.add_argument("--steps", type=int, default=200, help="full-batch AdamW steps per fold")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    runs = []
    for p in a.runs:
        r = run_one(Path(p), a.steps, a.seed)
        runs.append(r)
        print(f"{r['run']}: {r['seconds']} s", flush=True)
    summary = summarise(runs)
    for k, v in summary.items():
        if k.endswith("/chance"):
            print(f"{k:60s} {v:5.1f}%")
        else:
            each = " ".join(f"{lab} {x[0]:.0f}" for lab, x in v["attributes"].items())
            m = v["mean"]
            print(f"{k:60s} {m[0]:5.1f}% [{m[1]:5.1f}, {m[2]:5.1f}] {each}")
    write_json(Path(a.out), {"ranks": list(RANKS), "folds": FOLDS, "steps": a.steps,
                             "summary": summary, "runs": runs})  # fmt: skip
    print(json.dumps({"wrote": a.out}))


if __name__ == "__main__":
    main()
