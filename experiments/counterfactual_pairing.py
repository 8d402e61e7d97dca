"""Is the reversed N2D preference (+0.48 nats over a random name, default study) knowledge of the
pair, or something the name carries whatever it was paired with? (issue 26 item 2)

The counterfactual-pairing control. For each world seed, two worlds identical in every person,
name, description, template, document order and initial weight but one thing: the N2D subset's
name-description pairing, rotated by one person in the second (person i's description goes to
person i + 1). Two models are trained, one per world, with the default preset's config. On the
first world's reversed N2D prompts ("the B is called") each model scores the first world's
partner A and the second world's partner A':

    d(M) = log p_M(A | B-prompt) - log p_M(A' | B-prompt)

A preference that is knowledge of the pair follows the pairing: d(M1) > 0 and d(M2) < 0, so the
double difference D = d(M1) - d(M2) > 0. A preference for A that the name carries whatever its
pairing (its tokens, its frequency, its position in training) is the same in both models: D
about 0, d(M1) = d(M2) > 0. Per world, per person (the mean over their prompts); per token of A
(first name, then last name given the first) and per template; the study's estimate is the mean
over worlds with a t-interval over worlds (people nested in worlds).

    python experiments/counterfactual_pairing.py --worlds 5 --out figures/counterfactual_pairing.md
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from interp.config import apply_overrides, load_config
from interp.data.dataset import FactDataset, dataset_of_world
from interp.data.world import World, make_world
from interp.evaluate import completion_logprobs
from interp.files import write_text
from interp.model import build_model
from interp.stats import mean_ci
from interp.train import fit


def rotate_n2d(world: World, shift: int = 1) -> World:
    """The same world with each N2D person's description (role and title) moved `shift` people
    on, within the N2D subset: names, first-name classes and everyone else unchanged."""
    n2d = [p for p in world.people if p.subset == "n2d"]
    moved = {p.id: n2d[(i - shift) % len(n2d)] for i, p in enumerate(n2d)}
    people = tuple(
        replace(p, role=moved[p.id].role, title=moved[p.id].title) if p.id in moved else p
        for p in world.people
    )
    return replace(world, people=people)


def train(cfg, ds: FactDataset) -> torch.nn.Module:
    model = build_model(cfg.model, ds.d_vocab, cfg.train.seed, tokenizer=ds.tokenizer)
    fit(model, ds.train_docs, cfg.train, dataset=ds, progress=False)
    return model.eval()


def per_token(model, prompts, answers) -> np.ndarray:
    """[prompt, 2]: log p(first name | prompt), log p(last name | prompt, first name)."""
    first = completion_logprobs(model, prompts, [a[:1] for a in answers]).double().numpy()
    both = completion_logprobs(model, prompts, answers).double().numpy()
    return np.stack([first, both - first], 1)


def one_world(seed: int, extra: tuple[str, ...] = ()) -> dict:
    cfg = apply_overrides(
        load_config("default"),
        [f"world.seed={seed}", f"train.seed={seed}", "train.eval_every=0", *extra],
    )
    w1 = make_world(cfg.world)
    w2 = rotate_n2d(w1)
    d1, d2 = dataset_of_world(w1), dataset_of_world(w2)
    assert d1.tokenizer.get_vocab() == d2.tokenizer.get_vocab()
    t0 = time.perf_counter()
    m1, m2 = train(cfg, d1), train(cfg, d2)
    seconds = time.perf_counter() - t0
    # the second world's partner of each N2D description: who holds it there
    holder = {(p.role, p.title): p for p in w2.people if p.subset == "n2d"}
    names = {p.id: p.name for p in w1.people}
    prompts = [
        e
        for e in d1.prompts
        if e.subset == "n2d" and e.direction == "reverse" and e.templates == "train"
    ]
    by_id = {p.id: p for p in w1.people}
    other = [holder[(by_id[e.person].role, by_id[e.person].title)] for e in prompts]
    tok = d1.tokenizer
    a = [tuple(e.answer) for e in prompts]
    a2 = [tuple(tok.encode(o.name, add_special_tokens=False).ids) for o in other]
    assert all(len(x) == 2 for x in a + a2), "names are two tokens"
    assert all(names[e.person] != o.name for e, o in zip(prompts, other, strict=True))
    p = [tuple(e.prompt) for e in prompts]
    with torch.no_grad():
        d = {
            m: per_token(model, p, a) - per_token(model, p, a2)
            for m, model in (("M1", m1), ("M2", m2))
        }
    person = np.array([e.person for e in prompts])
    template = np.array([e.template for e in prompts])

    def by_person(x: np.ndarray) -> np.ndarray:
        return np.array([x[person == q].mean() for q in np.unique(person)])

    out = {"seed": seed, "train_seconds": seconds, "n_people": len(np.unique(person))}
    for label, sel in (("A", slice(None)), ("first", 0), ("last", 1)):
        for m in ("M1", "M2"):
            x = d[m].sum(1) if label == "A" else d[m][:, sel]
            out[f"d_{m}_{label}"] = float(by_person(x).mean())
        out[f"D_{label}"] = out[f"d_M1_{label}"] - out[f"d_M2_{label}"]
    for t in np.unique(template):
        m = template == t
        out[f"d_M1_template{t}"] = float(d["M1"][m].sum(1).mean())
        out[f"D_template{t}"] = float((d["M1"][m].sum(1) - d["M2"][m].sum(1)).mean())
    return out


def table(per_world: list[dict]) -> str:
    keys = [k for k in per_world[0] if k.startswith(("d_", "D_"))]
    lines = [
        "| quantity (nats) | mean over worlds [95% t-interval] | per world |",
        "|---|---|---|",
    ]
    for k in keys:
        v = [w[k] for w in per_world]
        m, lo, hi, n = mean_ci(v)
        lines.append(f"| `{k}` | {m:+.2f} [{lo:+.2f}, {hi:+.2f}] (n={n}) | "
                     + ", ".join(f"{x:+.2f}" for x in v) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", type=int, default=5)
    p.add_argument("--out", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--set", nargs="*", default=[], help="config overrides (a smoke run: train.steps=20)"
    )
    args = p.parse_args()
    torch.set_num_threads(2)
    per_world = []
    for s in range(args.worlds):
        per_world.append(one_world(s, tuple(args.set)))
        print(json.dumps(per_world[-1]), flush=True)
    text = (
        "# The counterfactual-pairing control (issue 26 item 2)\n\n"
        "Written by `experiments/counterfactual_pairing.py`: per world seed, a model trained on "
        "the world (M1) and one on the same world with the N2D name-description pairing rotated "
        "by one person (M2), default preset. d(M) = log p_M(A | B-prompt) - log p_M(A' | "
        "B-prompt) on the first world's reversed N2D prompts (training templates), A the first "
        "world's partner, A' the second's; per person (mean over prompts), mean over people, then "
        "over worlds. D = d(M1) - d(M2): above 0 where the preference follows the pairing. "
        "`first`: the first-name token; `last`: the last name given the first; `templateK`: "
        "training template K alone.\n\n" + table(per_world) + "\n"
    )
    if args.out:
        write_text(args.out, text)
    if args.json:
        write_text(args.json, json.dumps(per_world, indent=1))
    print(text)


if __name__ == "__main__":
    main()
