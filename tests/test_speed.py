"""The speed work changes no result: the thread policy is applied where it can work and keeps a
user's choice, and the fast decoding path generates exactly what full-logit decoding does."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def _policy_after(code: str, env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run(
        [sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_import_interp_sets_passive_wait_policy_only_where_it_works():
    """Set before torch loads (when interp comes first), never over a user's value, and not at
    all once torch is loaded (OpenMP has read the environment by then: setting it would only
    mislead)."""
    cases = {
        ("import interp", None): "PASSIVE",
        ("import interp", "ACTIVE"): "ACTIVE",
        ("import torch; import interp", None): "None",
    }
    got = {k: _policy_after(*k) for k in cases}
    assert got == cases, f"OMP_WAIT_POLICY after import, expected {cases}, got {got}"


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
