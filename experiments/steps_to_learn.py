"""Steps to learn an objective: train each objective at a few step budgets and report, for the
finished run, whether it learned its own objective (`interp.evaluate.learned`: own-mode forward
exact match on training text and, for a masking objective, in-document infill of both entities,
each >= 95%), the numbers behind it, and reversed exact match in its own mode. The objectives
are compared only once each has learned (reproduce before refuting).

The learning-rate schedule depends on `train.steps`, so a budget is measured by training to that
budget, not read off a longer run's curve.

    python experiments/steps_to_learn.py --objectives bico mlm_u --steps 4000 8000 --seeds 0 \
        --set train.weight_decay=0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from interp.config import apply_overrides, load_config
from interp.data.world import SUBSETS
from interp.train import train_run


def forward_train_em(metrics: dict) -> dict[str, float]:
    """Forward exact match on training templates, per subset that has forward prompts."""
    em = metrics["exact_match"]
    return {s: em[s]["same"]["train"] for s in SUBSETS if "same" in em.get(s, {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--objectives", nargs="+", default=["bico", "mlm_u"])
    ap.add_argument("--steps", nargs="+", type=int, default=[4000, 8000])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides (key=value)")
    ap.add_argument("--out", default="runs/steps_to_learn")
    a = ap.parse_args()
    rows = []
    for o in a.objectives:
        for n in a.steps:
            for s in a.seeds:
                cfg = apply_overrides(
                    load_config(a.preset),
                    [
                        f"world.seed={s}",
                        f"train.seed={s}",
                        f"train.objective={o}",
                        f"train.steps={n}",
                        "train.eval_every=0",
                        *a.set,
                    ],
                )
                tag = "".join(f"_{x.split('.')[-1]}" for x in a.set)
                out = Path(a.out) / f"{o}_n{n}_s{s}{tag}"
                t0 = time.perf_counter()
                if not (out / "metrics.json").is_file():
                    train_run(cfg, out, overwrite=True, progress=False)
                m = json.loads((out / "metrics.json").read_text())
                fw = forward_train_em(m)
                rev = {
                    k: m["exact_match"][k]["reverse"]["train"]
                    for k in m["exact_match"]
                    if "reverse" in m["exact_match"][k]
                }
                row = {
                    "objective": o,
                    "steps": n,
                    "seed": s,
                    "mode": m.get("mode"),
                    "learned": m.get("learned", {}).get("met"),
                    "forward_train": fw,
                    "min_forward": min(fw.values()),
                    "infill": m.get("learned", {}).get("infill", {}),
                    "reverse_train": rev,
                    "causal_reverse_train": {
                        k: v["reverse"]["train"]
                        for k, v in m.get("causal", {}).get("exact_match", {}).items()
                    },
                    "overrides": a.set,
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    with (Path(a.out) / "summary.jsonl").open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
