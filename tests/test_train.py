"""Training: the reversal curse appears on the tiny world; same seed, same bits; a killed run
resumes to the bitwise-same weights."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import interp.train as T
from interp.config import apply_overrides, load_config
from interp.train import train_run


def test_tiny_world_shows_reversal_curse(tiny_run_dir):
    m = json.loads((tiny_run_dir / "metrics.json").read_text())["exact_match"]
    for s in ("n2d", "d2n"):
        same, rev = m[s]["same"]["train"], m[s]["reverse"]["train"]
        assert same >= 0.9 and rev <= 0.1, f"{s}: same {same:.2f}, reverse {rev:.2f}"
    assert m["both"]["reverse"]["train"] >= 0.9, f"both reverse {m['both']['reverse']['train']}"
    log = [json.loads(x) for x in (tiny_run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], f"loss {log[0]['loss']} -> {log[-1]['loss']}"


def test_reversed_logprob_test_not_significant_for_one_direction_facts(tiny_run_dir):
    lpt = json.loads((tiny_run_dir / "metrics.json").read_text())["logprob_test"]
    for s in ("n2d", "d2n"):
        p = lpt[s]["reverse"]["train"]["t_pvalue"]
        assert p > 0.01, f"{s} reversed log-prob t-test p={p}: the model should not know reverse"
    assert lpt["both"]["reverse"]["train"]["t_pvalue"] < 1e-3, "positive control: both subset"


def _small(seed: int = 0):
    return apply_overrides(
        load_config("tiny"), ["train.steps=60", "train.checkpoint_every=20", f"train.seed={seed}"]
    )


def _weights(run):
    return load_file(str(run / "model.safetensors"))


def test_same_seed_same_bits(tmp_path):
    a = train_run(_small(), tmp_path / "a", progress=False)
    b = train_run(_small(), tmp_path / "b", progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all((wa[k] == wb[k]).all() for k in wa), "same seed gave different weights"
    assert (a / "metrics.json").read_text() == (b / "metrics.json").read_text()
    c = train_run(_small(seed=1), tmp_path / "c", progress=False)
    assert any(not (wa[k] == _weights(c)[k]).all() for k in wa), "seed does not change weights"


def test_killed_run_resumes_to_same_weights(tmp_path, monkeypatch):
    full = train_run(_small(), tmp_path / "full", progress=False)

    real = T.save_checkpoint

    def killed_after_40(run_dir, step, model, opt):
        real(run_dir, step, model, opt)
        if step == 40:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(T, "save_checkpoint", killed_after_40)
    with pytest.raises(KeyboardInterrupt):
        train_run(_small(), tmp_path / "killed", progress=False)
    monkeypatch.setattr(T, "save_checkpoint", real)
    assert not (tmp_path / "killed" / "model.safetensors").exists()
    resumed = train_run(None, tmp_path / "killed", resume=True, progress=False)
    wf, wr = _weights(full), _weights(resumed)
    diffs = {k: float((wf[k] - wr[k]).abs().max()) for k in wf if not (wf[k] == wr[k]).all()}
    assert not diffs, f"resumed run differs from uninterrupted: {diffs}"
    assert (full / "metrics.json").read_text() == (resumed / "metrics.json").read_text()
    steps = [json.loads(x)["step"] for x in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "log has duplicated steps after resume"


def test_raw_forward_equals_the_bridge_with_masks_bidirectional_and_gradients(tiny_run):
    """Training runs through `raw_forward` (no hook dispatch): it must compute the bridge's
    logits, with a padding mask, under bidirectional attention, and give the same gradients."""
    import torch

    from interp.data.dataset import pad_batch
    from interp.model import RawForward, raw_forward
    from interp.objectives.masking import bidirectional

    model = tiny_run.model
    fast = raw_forward(model)
    assert isinstance(fast, RawForward), "the tiny model must take the raw path"
    toks, lens = pad_batch([e.tokens for e in tiny_run.dataset.train_docs[:24]])
    keep = (torch.arange(toks.shape[1])[None] < lens[:, None]).long()
    net = model.original_model
    with torch.no_grad():
        diffs = {
            "plain": (fast(toks) - model(toks)).abs().max().item(),
            "mask": (fast(toks, attention_mask=keep) - net(toks, attention_mask=keep))
            .abs()
            .max()
            .item(),
        }
        with bidirectional(fast):
            bi = fast(toks, attention_mask=keep)
            diffs["bidirectional"] = (bi - net(toks, attention_mask=keep)).abs().max().item()
        causal_gap = (bi - fast(toks)).abs().max().item()
    assert all(v < 1e-4 for v in diffs.values()), diffs
    assert causal_gap > 1e-2, (
        f"bidirectional attention changed the logits by only {causal_gap:.2e}: the mask is not "
        "being lifted, so the comparison above proves nothing about it"
    )
    params = [p for p in model.parameters() if p.requires_grad]
    g_fast = torch.autograd.grad(fast(toks).logsumexp(-1).mean(), params)
    g_ref = torch.autograd.grad(net(toks).logsumexp(-1).mean(), params)
    worst = max((a - b).abs().max().item() for a, b in zip(g_fast, g_ref, strict=True))
    assert worst < 1e-5, f"raw_forward gradients differ from the native model's by {worst:.2e}"


def test_packed_loss_equals_the_padded_loss_and_gradients(tiny_run):
    """Training's causal loss skips the padding (`RawForward.next_token_loss`): on a batch of
    documents of different lengths it must give the padded forward's loss and gradients."""
    import torch

    from interp.data.dataset import pad_batch
    from interp.model import raw_forward
    from interp.objectives.base import causal_loss, next_token_loss

    model = tiny_run.model
    fast = raw_forward(model)
    assert fast.packs(), "the tiny model must take the packed path"
    docs = tiny_run.dataset.train_docs
    toks, lens = pad_batch([e.tokens for e in docs[:: max(1, len(docs) // 48)][:48]])
    pad = 1 - float(lens.sum()) / toks.numel()
    assert pad > 0.05, f"the batch is {pad:.0%} padding: too little to test skipping it"
    params = [p for p in model.parameters() if p.requires_grad]
    packed = causal_loss(fast, toks, lens)
    padded = next_token_loss(fast(toks), toks, lens)
    g_packed = torch.autograd.grad(packed, params)
    g_padded = torch.autograd.grad(padded, params)
    loss_gap = abs(packed.item() - padded.item())
    worst = max((a - b).abs().max().item() for a, b in zip(g_packed, g_padded, strict=True))
    assert loss_gap < 1e-5 and worst < 1e-6, (
        f"packed loss {packed.item():.7f} vs padded {padded.item():.7f}; gradients differ by "
        f"up to {worst:.2e}"
    )


@pytest.fixture(scope="module")
def tiny_dataset():
    from interp.runs import build_dataset

    return build_dataset(load_config("tiny"))


@pytest.mark.parametrize("objective", ["reverse_entity", "reverse_token"])
def test_fit_refuses_to_drop_the_objectives_documents(objective, tiny_dataset):
    """Without a dataset, `fit` cannot build the reversed documents reverse training adds: it
    must refuse, not quietly train on the forward documents alone; nothing is trained."""
    import torch

    from interp.errors import UserError
    from interp.model import build_model
    from interp.objectives import get_objective

    cfg = apply_overrides(load_config("tiny"), [f"train.objective={objective}", "train.steps=2"])
    model = build_model(cfg.model, tiny_dataset.d_vocab, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="pass dataset="):
        T.fit(model, tiny_dataset.train_docs, cfg.train, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    added = get_objective(objective).documents(tiny_dataset.train_docs, tiny_dataset)
    assert len(added) == 2 * len(tiny_dataset.train_docs), "reverse training adds one copy each"


def test_fit_without_dataset_runs_objectives_that_add_nothing(tiny_dataset):
    from interp.model import build_model
    from interp.objectives import OBJECTIVES

    adds = {name: cls().adds_documents for name, cls in OBJECTIVES.items()}
    assert adds == {n: n.startswith("reverse") for n in OBJECTIVES}, adds
    cfg = apply_overrides(load_config("tiny"), ["train.steps=10"])
    model = build_model(cfg.model, tiny_dataset.d_vocab, seed=0)
    log = T.fit(model, tiny_dataset.train_docs, cfg.train, progress=False)
    assert log and log[-1]["step"] == 10, log
