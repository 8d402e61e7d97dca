"""Benchmark: the kit's thread policy, alone and with two trainings at once on the same cores.

Each training is a child process with a clean thread environment (no OMP_NUM_THREADS, no
OMP_WAIT_POLICY, no INTERP_TURNS: what a user's shell has), so torch uses one thread per core.
Policies:

- `torch`: torch's default, OpenMP threads busy-wait between parallel regions (the child
  imports torch before interp, so the kit's spin count is not applied) and no turns;
- `kit`: whatever `import interp` applies (see interp/__init__.py) and turns (interp.turns);
- `kit-noturns`: the kit's spin count without turns (INTERP_TURNS=0): two kit processes that
  do not take turns, as a kit training beside a CPU-bound process that is not the kit's;
- `torch-turns`: torch's default spin with turns;
- `passive`: OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once);
- `spin` / `spin-turns`: GOMP_SPINCOUNT=N for each N of `--spin` (idle threads spin that many
  times, then sleep), without / with turns (reported as `spinN`, `spinN-turns`);
- `one`: OMP_NUM_THREADS=1 (no thread pool at all).

Each case trains the same default-preset model for `--steps` steps (no evaluation, no
checkpoints); the two trainings of a pair finish their set-up first and start their loops
together. The time of a pair is its slower training. The bars (issue 19, item 4): two at once
take at most 2.5x one alone under the kit's policy, and the policy loses at most 10% alone
against torch's default. The final weights of `torch` and `kit` are compared: at the same
thread count the policy must not change a bit (`one` runs another thread count).

    python experiments/bench_threads.py [--preset default] [--steps 60] [--repeats 2]
        [--policies torch kit]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CLEAN = (
    "INTERP_TURNS",
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)


POLICY_ENV = {
    "torch": {"INTERP_TURNS": "0"},
    "kit": {},
    "kit-noturns": {"INTERP_TURNS": "0"},
    "torch-turns": {},
    "spin-turns": {"GOMP_SPINCOUNT": "{spin}"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin": {"GOMP_SPINCOUNT": "{spin}"},
    "one": {"OMP_NUM_THREADS": "1"},
}


def child(policy: str, preset: str, steps: int) -> None:
    """One training, timed from after set-up; waits for a line on stdin before starting."""
    if policy.startswith("torch"):
        import torch  # noqa: F401  (loaded before interp: torch's OpenMP default stays)
    else:
        import interp  # noqa: F401  (loaded first: its thread policy applies)
    import hashlib
    import time

    import torch

    from interp.config import apply_overrides, load_config
    from interp.model import build_model
    from interp.runs import build_dataset
    from interp.train import fit

    cfg = apply_overrides(
        load_config(preset),
        [f"train.steps={steps}", "train.eval_every=0", "train.checkpoint_every=0"],
    )
    ds = build_dataset(cfg)
    model = build_model(cfg.model, ds.d_vocab, cfg.train.seed)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    fit(model, ds.train_docs, cfg.train, progress=False)
    seconds = time.perf_counter() - t0
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().contiguous().numpy().tobytes())
    out = {
        "seconds": seconds,
        "weights": h.hexdigest()[:16],
        "threads": torch.get_num_threads(),
        "wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }
    print(json.dumps(out), flush=True)


def run_together(case: str, n: int, preset: str, steps: int) -> list[dict]:
    """Start `n` trainings under `case` (a policy, or spinN), release them at once, return
    their reports."""
    policy, spin = case, ""
    if case.startswith("spin"):
        policy, spin = ("spin-turns", case[4:-6]) if case.endswith("-turns") else ("spin", case[4:])
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update({k: v.format(spin=spin) for k, v in POLICY_ENV[policy].items()})
    cmd = [sys.executable, __file__, "--child", policy, "--preset", preset, "--steps", str(steps)]
    procs = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"a {policy} training failed during set-up")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    reports = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a {policy} training failed (exit {p.returncode})")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many per case")
    ap.add_argument("--policies", nargs="+", default=["torch", "kit"], choices=list(POLICY_ENV))
    ap.add_argument(
        "--spin", type=int, nargs="+", default=[10000], help="GOMP_SPINCOUNT(s) of the spin policy"
    )
    ap.add_argument("--child", choices=list(POLICY_ENV), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.preset, a.steps)
        return 0
    cases = [p for p in a.policies if p not in ("spin", "spin-turns")]
    if "spin" in a.policies:
        cases += [f"spin{n}" for n in a.spin]
    if "spin-turns" in a.policies:
        cases += [f"spin{n}-turns" for n in a.spin]
    policies = list(dict.fromkeys(["torch", "kit", *cases]))
    best: dict[tuple[str, int], float] = {}
    weights: dict[str, set[str]] = {p: set() for p in policies}
    threads: dict[str, int] = {}
    for _ in range(a.repeats):
        for policy in policies:
            for n in (1, 2):
                reps = run_together(policy, n, a.preset, a.steps)
                slowest = max(r["seconds"] for r in reps)
                best[policy, n] = min(best.get((policy, n), float("inf")), slowest)
                weights[policy] |= {r["weights"] for r in reps}
                threads[policy] = reps[0]["threads"]
    per = {k: v / a.steps for k, v in best.items()}
    print(
        f"thread policy, preset {a.preset}: {a.steps} steps per training on {os.cpu_count()} "
        f"cores, best of {a.repeats}"
    )
    print(
        f"  {'policy':<17} {'threads':>7} {'alone s/step':>12} {'two at once':>12} {'ratio':>7} "
        f"{'alone vs torch':>14}"
    )
    for p in policies:
        one, two = per[p, 1], per[p, 2]
        print(
            f"  {p:<17} {threads[p]:7d} {one:12.4f} {two:12.4f} {two / one:6.2f}x "
            f"{one / per['torch', 1]:13.2f}x"
        )
    alone_cost = per["kit", 1] / per["torch", 1]
    pair = per["kit", 2] / per["kit", 1]
    same = len(weights["torch"] | weights["kit"]) == 1
    print(f"  kit alone / torch alone = {alone_cost:.2f}x (bar: <= 1.10x)")
    print(f"  kit two at once / kit alone = {pair:.2f}x (bar: <= 2.5x)")
    print(f"  final weights of torch and kit bitwise the same: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
