"""Time our activation patching against TransformerLens's loops, same model, same inputs.

The model has the default preset's shape (untrained: `interp.model.build_model` on the default
world's dataset; timing does not depend on the weights) and the prompts are real forward (n2d,
"same" direction, training-template) prompts, each corrupted by an entity swap. Every side
patches resid_pre, attn_out and mlp_out at every layer x position and includes its clean cache
and baselines in the time:

- ours: `interp.analysis.patching.trace_swap` on `interp.analysis.activation_patching`'s engine
  (every cell of every prompt in batches; each cell starts at its patched layer and position
  from the corrupted run's stored stream, keys and values; no hook dispatch);
- TL, per prompt: `transformer_lens.patching.get_act_patch_{resid_pre,attn_out,mlp_out}` on each
  prompt with a scalar metric (its ordinary use: one forward pass per cell);
- TL, batched over prompts: the same functions on all prompts of one template at once with
  `reduce="none"` (TL's best case: one forward pass per cell for the whole template).

All three run in this process, each warmed up once, each timed `--repeats` times (the best
time counts, for every side alike). It checks that the grids agree (raw scores, max abs
difference over every cell) and prints timings and both ratios against the issue's bars:
>= 30x TL's per-prompt loop and >= 10x its template-batched loop at max |diff| <= 1e-5. Exit
status 1 when the grids disagree beyond 1e-5.

    python experiments/bench_patching.py [--prompts 8] [--batch-size 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict

import torch
from transformer_lens import patching as tl_patching

from interp.analysis.patching import ACTS, answer_score, swap_partner, template_pools, trace_swap
from interp.config import load_config
from interp.data.dataset import build_synthetic
from interp.model import build_model

TL_FUNCS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
}


def choose_prompts(ds, n: int, seed: int):  # type: ignore[no-untyped-def]
    """`n` forward n2d training-template prompts spread over templates, with swap partners."""
    rng = random.Random(seed)
    pools = template_pools(ds)
    by_template = defaultdict(list)
    for e in ds.select(subset="n2d", direction="same", templates="train"):
        by_template[e.template].append(e)
    prompts = []
    while len(prompts) < n:
        for t in sorted(by_template):
            if len(prompts) < n:
                prompts.append(by_template[t].pop(rng.randrange(len(by_template[t]))))
    partners = [
        swap_partner(e, pools[(e.subset, e.direction, e.templates, e.template)], rng)
        for e in prompts
    ]
    return prompts, partners


def tl_per_prompt(model, prompts, partners, device):  # type: ignore[no-untyped-def]
    """TL's loop, one prompt at a time; raw scores [prompt][act] -> [n_layers, pos]."""
    out = []
    for e, q in zip(prompts, partners, strict=True):
        clean = torch.tensor([e.prompt], device=device)
        corrupted = torch.tensor([q.prompt], device=device)
        final = torch.tensor([e.prompt_len - 1], device=device)
        right = torch.tensor([e.answer[0]], device=device)
        wrong = torch.tensor([[q.answer[0]]], device=device)
        _, cache = model.run_with_cache(clean)

        def metric(logits, final=final, right=right, wrong=wrong):  # type: ignore[no-untyped-def]
            return answer_score(logits, final, right, wrong)[0]

        out.append({a: TL_FUNCS[a](model, corrupted, cache, metric) for a in ACTS})
    return out


def tl_batched(model, prompts, partners, device):  # type: ignore[no-untyped-def]
    """TL's loop on all prompts of one template at once (reduce='none')."""
    groups = defaultdict(list)
    for i, e in enumerate(prompts):
        groups[e.template].append(i)
    out: list[dict] = [{} for _ in prompts]
    for idx in groups.values():
        clean = torch.tensor([prompts[i].prompt for i in idx], device=device)
        corrupted = torch.tensor([partners[i].prompt for i in idx], device=device)
        final = torch.tensor([prompts[i].prompt_len - 1 for i in idx], device=device)
        right = torch.tensor([prompts[i].answer[0] for i in idx], device=device)
        wrong = torch.tensor([[partners[i].answer[0]] for i in idx], device=device)
        _, cache = model.run_with_cache(clean)

        def metric(logits, final=final, right=right, wrong=wrong):  # type: ignore[no-untyped-def]
            return answer_score(logits, final, right, wrong)

        for a in ACTS:
            res = TL_FUNCS[a](model, corrupted, cache, metric, reduce="none")
            for k, i in enumerate(idx):
                out[i][a] = res.values[..., k]  # layer pos
    return out


def max_diff(ours, tl, prompts) -> float:  # type: ignore[no-untyped-def]
    return max(
        float((ours.patched[i, j, :, : e.prompt_len].cpu() - tl[i][a].cpu()).abs().max())
        for i, e in enumerate(prompts)
        for j, a in enumerate(ACTS)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--prompts", type=int, default=8, help="real prompts to patch (default 8)")
    p.add_argument("--batch-size", type=int, default=512, help="our rows per forward pass")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timings per side; the best counts")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tl_patching.tqdm = lambda it, **kw: it  # TL draws a bar per call: keep the output short

    cfg = load_config("default")
    ds = build_synthetic(cfg.world)
    model = build_model(cfg.model, ds.d_vocab, cfg.train.seed, args.device)
    model.eval()
    prompts, partners = choose_prompts(ds, args.prompts, args.seed)
    n_cells = sum(len(ACTS) * cfg.model.n_layers * e.prompt_len for e in prompts)
    print(
        f"model: default preset shape (n_layers={cfg.model.n_layers}, d_model="
        f"{cfg.model.d_model}, d_vocab={ds.d_vocab}), untrained; {len(prompts)} prompts, "
        f"{n_cells} cells (3 activations x layers x positions); device {args.device}, "
        f"{torch.get_num_threads()} threads"
    )

    def timed(fn):  # type: ignore[no-untyped-def]
        best, out = float("inf"), None
        for _ in range(max(1, args.repeats)):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return out, best

    # Warm-up every path once so none pays first-call costs in the timing.
    trace_swap(model, prompts[:1], partners[:1], batch_size=args.batch_size)
    tl_per_prompt(model, prompts[:1], partners[:1], args.device)
    tl_batched(model, prompts[:1], partners[:1], args.device)

    ours, t_ours = timed(lambda: trace_swap(model, prompts, partners, batch_size=args.batch_size))
    tl_loop, t_tl = timed(lambda: tl_per_prompt(model, prompts, partners, args.device))
    tl_batch, t_tlb = timed(lambda: tl_batched(model, prompts, partners, args.device))
    d_loop, d_batch = max_diff(ours, tl_loop, prompts), max_diff(ours, tl_batch, prompts)
    r_loop, r_batch = t_tl / t_ours, t_tlb / t_ours
    print(f"ours (batched cells, batch {args.batch_size}):     {t_ours:8.3f} s")
    print(
        f"TL loop, one prompt at a time:        {t_tl:8.3f} s   ratio {r_loop:6.1f}x   "
        f"max |diff| {d_loop:.2e}"
    )
    print(
        f"TL loop, batched over each template:  {t_tlb:8.3f} s   ratio {r_batch:6.1f}x   "
        f"max |diff| {d_batch:.2e}"
    )
    equal = max(d_loop, d_batch) <= 1e-5
    for name, ratio, bar in (("per-prompt", r_loop, 30), ("template-batched", r_batch, 10)):
        verdict = "met" if ratio >= bar and equal else "NOT met"
        print(f"speed bar (>= {bar}x TL's {name} loop at max |diff| <= 1e-5): {verdict}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
