"""The speed work changes no result: the thread policy is applied where it can work and keeps a
user's choice, and the fast decoding path generates exactly what full-logit decoding does."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def _policy_after(code: str, env_set: dict[str, str]) -> tuple[str | None, str | None]:
    """(GOMP_SPINCOUNT, OMP_WAIT_POLICY) in a fresh process that ran `code` with `env_set`."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_set)
    show = "; import os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run(
        [sys.executable, "-c", code + show], env=env, capture_output=True, text=True, check=True
    )
    spin, wait = out.stdout.strip().splitlines()[-1].split()
    return (None if spin == "None" else spin), (None if wait == "None" else wait)


def test_import_interp_sets_the_spin_count_only_where_it_works():
    """Set before torch loads (when interp comes first), never over a user's GOMP_SPINCOUNT or
    OMP_WAIT_POLICY (which the spin count would override), and not at all once torch is
    loaded (OpenMP has read the environment by then: setting it would only mislead)."""
    from interp import SPIN_COUNT

    cases = {
        ("import interp", ()): (SPIN_COUNT, None),
        ("import interp", (("GOMP_SPINCOUNT", "5"),)): ("5", None),
        ("import interp", (("OMP_WAIT_POLICY", "ACTIVE"),)): (None, "ACTIVE"),
        ("import torch; import interp", ()): (None, None),
    }
    got = {k: _policy_after(k[0], dict(k[1])) for k in cases}
    assert got == cases, (
        f"(GOMP_SPINCOUNT, OMP_WAIT_POLICY) after import: expected {cases}, got {got}"
    )


def test_fast_greedy_decoding_equals_full_logit_decoding(tiny_run):
    """`greedy_generate` decodes with a key-value cache, unembeds only the last position and stops
    when every row has <eos>; the reference below runs the bridge (hooks and all) one prompt at
    a time, unembeds every position and always runs all `n_new` steps."""
    from interp.evaluate import EOS, greedy_generate

    model, ds = tiny_run.model, tiny_run.dataset
    prompts = [e.prompt for e in ds.prompts][::4]  # the bridge, one prompt at a time, is slow
    n_new = max(len(e.answer) for e in ds.prompts) + 2
    fast = greedy_generate(model, prompts, n_new)
    slow = []
    with torch.no_grad():
        for p in prompts:
            toks = torch.tensor([p])
            for _ in range(n_new):
                toks = torch.cat([toks, model(toks)[:, -1].argmax(-1, keepdim=True)], dim=1)
            gen = toks[0, len(p) :].tolist()
            slow.append(gen[: gen.index(EOS)] if EOS in gen else gen)
    bad = [i for i, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b]
    assert not bad, (
        f"{len(bad)} of {len(prompts)} generations differ, e.g. prompt {bad[0]}: "
        f"fast {fast[bad[0]]} vs full {slow[bad[0]]}"
    )
