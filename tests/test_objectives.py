"""The mitigation objectives: reverse training, BICO, MLM and MLM-U.

Each objective must (1) train the tiny world, (2) build its inputs without ever showing the model
what it is asked to predict, (3) leave the model causal for test time, and (4) be bitwise
reproducible. Reverse training must keep entities intact, and entity-preserving reversal must lift
reverse exact match above the causal run's.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from interp.config import OBJECTIVE_NAMES, apply_overrides, load_config
from interp.data.dataset import pad_batch
from interp.data.tokenizer import BOS, EOS, MASK, train_tokenizer
from interp.errors import UserError
from interp.objectives import OBJECTIVE_ORDER, OBJECTIVES, get_objective
from interp.objectives.masking import (
    MaskedObjective,
    attention_modules,
    bernoulli_mask,
    bidirectional,
    is_causal,
    masked_loss,
    sample_mask,
)
from interp.objectives.reverse import (
    reverse_entity_preserving,
    reverse_tokens,
    reverse_units,
    token_units,
    word_starts,
)
from interp.train import fit, step_generator

MITIGATIONS = ("reverse_entity", "reverse_token", "bico", "mlm", "mlm_u", "mlm_u_hybrid")


_TRAINED: dict[str, object] = {}
SHORT_STEPS = 120  # enough for the loss to halve; only reverse_entity needs the full 400 (its lift)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """Train an objective on the tiny preset once per module; returns its run directory.

    `reverse_entity` trains the full preset and is evaluated (metrics.json); the others train
    `SHORT_STEPS` steps without evaluation, to keep the suite fast on two cores.
    """
    from interp.train import train_run

    def get(objective: str):
        if objective not in _TRAINED:
            full = objective == "reverse_entity"
            steps = [] if full else [f"train.steps={SHORT_STEPS}"]
            cfg = apply_overrides(tiny_config, [f"train.objective={objective}", *steps])
            out = tmp_path_factory.mktemp("objectives") / objective
            _TRAINED[objective] = train_run(cfg, out, progress=False, evaluate=full)
        return _TRAINED[objective]

    yield get
    _TRAINED.clear()


def _exact_match(run_dir, subset: str, direction: str) -> float:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return metrics["exact_match"][subset][direction]["train"]


# --- training --------------------------------------------------------------------------------


def test_registry_names_every_objective():
    assert set(OBJECTIVES) == {"causal", *MITIGATIONS}
    for name, cls in OBJECTIVES.items():
        assert cls.name == name
        doc = sys.modules[cls.__module__].__doc__ or ""
        assert len(doc) > 150, f"{cls.__module__} must open with a paragraph on its method"


def test_config_knows_exactly_the_registered_objectives():
    """interp.config validates `train.objective` against its own OBJECTIVE_NAMES (it imports no
    objective); the registry asserts at import that the two agree, and its display order is
    config's."""
    assert set(OBJECTIVE_NAMES) == set(OBJECTIVES), (OBJECTIVE_NAMES, sorted(OBJECTIVES))
    assert OBJECTIVE_ORDER == OBJECTIVE_NAMES == tuple(OBJECTIVES), OBJECTIVE_ORDER
    for name in OBJECTIVE_NAMES:
        apply_overrides(load_config("tiny"), [f"train.objective={name}"])
    with pytest.raises(UserError, match=r"train.objective 'telepathy' unknown: use one of \["):
        apply_overrides(load_config("tiny"), ["train.objective=telepathy"])


@pytest.mark.parametrize("objective", [o for o in MITIGATIONS if o not in ("mlm", "mlm_u_hybrid")])
def test_objective_trains_tiny_world(trained, objective):
    run_dir = trained(objective)
    log = [json.loads(ln) for ln in (run_dir / "train_log.jsonl").read_text().splitlines()]
    start, end = log[0]["loss"], sum(r["loss"] for r in log[-5:]) / 5
    assert end < start / 2, f"{objective}: loss {start:.3f} -> {end:.3f} (mean of last 5 logs)"


def test_reverse_entity_lifts_reverse_accuracy(trained, tiny_run_dir):
    """Exact match on reversed N2D questions, and the paper's log-probability test beside it:
    after entity-preserving reverse training the right name beats a random same-subset name by
    nats where the causal run shows no difference (at 400 tiny steps exact match itself rises
    only to ~13-15%: greedy decoding mostly emits a name trained in that template's slot)."""
    run_dir = trained("reverse_entity")
    causal = _exact_match(tiny_run_dir, "n2d", "reverse")
    rev = _exact_match(run_dir, "n2d", "reverse")
    same = _exact_match(run_dir, "n2d", "same")
    assert same > 0.9, f"reverse_entity same-direction exact match {same:.1%}: must learn the facts"
    assert rev >= causal + 0.1, f"n2d reverse EM: reverse_entity {rev:.1%}, causal {causal:.1%}"

    def lp(d):
        metrics = json.loads((d / "metrics.json").read_text())
        return metrics["logprob_test"]["n2d"]["reverse"]["train"]

    c, r = lp(tiny_run_dir), lp(run_dir)
    assert c["t_pvalue"] > 0.01 and abs(c["mean_diff"]) < 1.5, f"causal control: {c}"
    assert r["mean_diff"] > 3.0 and r["t_pvalue"] < 1e-3, f"reverse_entity: {r}"


@pytest.mark.parametrize("objective", ["bico", "mlm_u"])
def test_trained_masking_model_is_causal_at_test_time(trained, objective, tiny_dataset):
    """After training, attention is causal again: a prompt's logits ignore any answer appended."""
    from interp.runs import load_run

    run = load_run(trained(objective))
    assert is_causal(run.model), "the model must be causal after training"
    prompts = tiny_dataset.select(subset="n2d", direction="reverse", templates="train")[:8]
    with torch.no_grad():
        for e in prompts:
            other = tuple(reversed(e.answer))  # any other continuation
            a = run.model(torch.tensor([e.tokens]))[0, : e.prompt_len]
            b = run.model(torch.tensor([e.prompt + other]))[0, : e.prompt_len]
            assert torch.equal(a, b), "prompt positions changed with the answer: test-time leak"


@pytest.mark.parametrize("objective", ["bico", "mlm_u"])
def test_masking_objective_is_bitwise_deterministic(objective, tiny_config, tiny_dataset):
    from interp.model import build_model

    cfg = apply_overrides(
        tiny_config, [f"train.objective={objective}", "train.steps=12", "train.checkpoint_every=0"]
    )
    masked_steps = sum(
        get_objective(objective).is_masked_step(step_generator(cfg.train.seed, s))
        for s in range(cfg.train.steps)
    )
    if objective == "bico":  # half next-token batches, as Lv et al.
        assert 0 < masked_steps < cfg.train.steps, f"{masked_steps} masked steps of 12"
    else:  # MLM-U: every batch masked, as Kitouni et al.
        assert masked_steps == cfg.train.steps, f"{masked_steps} masked steps of 12"

    def train(seed: int):
        c = apply_overrides(cfg, [f"train.seed={seed}"])
        model = build_model(c.model, tiny_dataset.d_vocab, seed=0)  # same init: only masks differ
        fit(model, tiny_dataset.train_docs, c.train, dataset=tiny_dataset, progress=False)
        assert is_causal(model), "fit must leave the model causal"
        return model.state_dict()

    a, b, c = train(0), train(0), train(1)
    assert all(torch.equal(a[k], b[k]) for k in a), "same seed, different weights"
    assert not all(torch.equal(a[k], c[k]) for k in a), "another seed (other masks), same weights"


# --- bidirectional attention -----------------------------------------------------------------


def test_bidirectional_lets_early_positions_see_later_tokens(fresh_model, tiny_dataset):
    net = fresh_model.original_model
    doc = tiny_dataset.train_docs[0].tokens
    x = torch.tensor([doc])
    y = x.clone()
    y[0, -2] = doc[1]  # change a late token
    with torch.no_grad():
        causal_diff = (net(x) - net(y))[0, :-2].abs().max().item()
        with bidirectional(net):
            bidir_diff = (net(x) - net(y))[0, 0].abs().max().item()
        restored_diff = (net(x) - net(y))[0, :-2].abs().max().item()
    assert causal_diff == 0.0, f"causal mode: earlier positions moved by {causal_diff}"
    assert bidir_diff > 1e-3, f"bidirectional: position 0 moved by only {bidir_diff}"
    assert restored_diff == 0.0, "causal mask not restored after the context manager"


def test_bidirectional_attention_pattern(fresh_model, tiny_dataset):
    """On the bridge's own hook: weight on the future is zero causally, positive bidirectionally."""
    x = torch.tensor([tiny_dataset.train_docs[0].tokens])
    future = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), diagonal=1)
    with torch.no_grad():
        _, cache = fresh_model.run_with_cache(x)
        with bidirectional(fresh_model):
            _, bcache = fresh_model.run_with_cache(x)
    for layer in range(fresh_model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_pattern"
        causal_future = cache[name][..., future].abs().max().item()
        bidir_future = bcache[name][..., future].sum(-1).min().item()
        assert causal_future == 0.0, f"layer {layer}: causal pattern puts {causal_future} on future"
        assert bidir_future > 0.05, f"layer {layer}: bidirectional future mass only {bidir_future}"


def test_bidirectional_restores_flags_on_exception(fresh_model):
    net = fresh_model.original_model
    mods = attention_modules(net)
    assert len(mods) == fresh_model.cfg.n_layers, f"found {len(mods)} attention flags"
    with pytest.raises(RuntimeError), bidirectional(net):
        assert not any(m.causal for m in mods)
        raise RuntimeError("boom")
    assert is_causal(net), "causal flag not restored after an exception"


def test_bidirectional_padding_is_invisible(fresh_model, tiny_dataset):
    """With the padding mask, real positions ignore whatever sits in the padded tail."""
    net = fresh_model.original_model
    docs = (
        sorted(tiny_dataset.train_docs, key=lambda d: len(d.tokens))[:1]
        + sorted(tiny_dataset.train_docs, key=lambda d: -len(d.tokens))[:1]
    )
    toks, lens = pad_batch([d.tokens for d in docs])
    short = int(lens.min())
    assert short < toks.shape[1]
    other = toks.clone()
    other[0, short:] = BOS  # junk instead of <pad>
    keep = (torch.arange(toks.shape[1])[None] < lens[:, None]).long()
    with torch.no_grad(), bidirectional(net):
        a = net(toks, attention_mask=keep)[0, :short]
        b = net(other, attention_mask=keep)[0, :short]
        alone = net(toks[:1, :short])[0]
    assert torch.allclose(a, b, atol=1e-5), "padding leaked into real positions"
    assert torch.allclose(a, alone, atol=1e-4), "padded row differs from the unpadded sequence"
    mask = torch.zeros_like(toks, dtype=torch.bool)
    mask[:, 1] = True
    for shift in (0, 1):
        loss = masked_loss(net, toks, lens, mask, shift=shift, masks_attended=False,
                           per_sequence=True)  # fmt: skip
        assert torch.isfinite(loss), (shift, loss)


# --- masks and targets -----------------------------------------------------------------------


def test_sample_mask_respects_bos_padding_and_rate():
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([21, 12, 7, 2])
    rates = torch.tensor([0.15, 0.5, 1.0, 0.0])
    mask = sample_mask(lengths, 21, rates, g)
    assert not mask[:, 0].any(), "<bos> was masked"
    for i, n in enumerate(lengths.tolist()):
        assert not mask[i, n:].any(), f"row {i}: padding masked"
    counts = mask.sum(1).tolist()
    assert counts == [3, 6, 6, 1], f"masked counts {counts}: round(rate*(len-1)), at least 1"


def test_bernoulli_mask_is_a_coin_per_maskable_token():
    """BICO's sampling (Lv et al.): a coin of probability 0.15 per token, never <bos> or padding,
    so some sequences draw no mask at all."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([12] * 400 + [3] * 400)
    mask = bernoulli_mask(lengths, 12, 0.15, g)
    assert not mask[:, 0].any() and not mask[400:, 3:].any(), "<bos> or padding masked"
    rate = mask[:400].sum() / (400 * 11)
    assert 0.12 < rate < 0.18, f"coin rate {rate:.3f}, expected 0.15"
    assert (mask[400:].sum(1) == 0).any(), "short sequences never went without a mask"


def test_masked_loss_scores_only_masked_tokens_where_the_objective_reads_them(tiny_dataset):
    """Changing a visible token's target changes nothing; the loss reads token t at t - shift:
    a model whose logits name each token at t scores ~0 with shift 0 and high with shift 1."""

    class Namer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = torch.nn.Linear(1, 1)
            self.attn.causal = True
            self.truth: torch.Tensor | None = None

        def forward(self, x, attention_mask=None, position_ids=None):
            assert self.truth is not None
            return F.one_hot(self.truth, tiny_dataset.d_vocab).float() * 50.0

    toks, lens = pad_batch([d.tokens for d in tiny_dataset.train_docs[:32]])
    mask = sample_mask(
        lens, toks.shape[1], torch.full((32,), 0.3), torch.Generator().manual_seed(1)
    )
    namer = Namer()
    namer.truth = toks
    here = masked_loss(namer, toks, lens, mask, shift=0, masks_attended=False, per_sequence=True)
    before = masked_loss(namer, toks, lens, mask, shift=1, masks_attended=False, per_sequence=True)
    assert here < 1e-3 < 1.0 < before, (here, before)
    other = toks.masked_fill(~mask, 7)  # visible tokens changed: not targets
    namer.truth = other
    assert masked_loss(namer, other, lens, mask, shift=0, masks_attended=False,
                       per_sequence=True) < 1e-3  # fmt: skip


def test_masked_steps_use_bidirectional_masked_inputs(tiny_dataset, fresh_model):
    """A spy around the model records the attention mode, the inputs and the key mask of every
    call: BICO has next-token batches (about half) beside masked ones, MLM-U none; a masked
    batch hides its masks from attention; the rates are BICO's 15% and MLM-U's U(0, 1)."""

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net
            self.calls: list[tuple[bool, torch.Tensor, torch.Tensor | None]] = []

        def forward(self, x, attention_mask=None, position_ids=None):
            self.calls.append((is_causal(self.net), x.clone(), attention_mask))
            if attention_mask is None:
                return self.net(x)
            return self.net(x, attention_mask=attention_mask, position_ids=position_ids)

    toks, lens = pad_batch([d.tokens for d in tiny_dataset.train_docs[:16]])
    for name, masked_share in (("bico", (10, 30)), ("mlm_u", (40, 40))):
        obj = get_objective(name)
        assert isinstance(obj, MaskedObjective)
        spy = Spy(fresh_model.original_model)
        kinds = Counter()
        rates = []
        for step in range(40):
            masked = obj.is_masked_step(step_generator(0, step))
            with torch.no_grad():
                obj.loss(spy, toks, lens, step_generator(0, step))
            causal, x, keep = spy.calls[-1]
            assert causal == (not masked), f"{name} step {step}: causal={causal}, masked={masked}"
            assert is_causal(spy.net), "flags not restored after the loss"
            if masked:
                assert keep is not None, "bidirectional batch without a key mask"
                assert not keep[x == MASK].any(), f"{name}: a masked position is attended"
                assert not (x[:, 0] == MASK).any()
                real = torch.arange(x.shape[1])[None] < lens[:, None]
                rates.append(((x == MASK) & real).sum(1).float() / (lens - 1).float())
            else:
                assert torch.equal(x, toks), "a next-token batch must see the plain tokens"
            kinds[masked] += 1
        lo, hi = masked_share
        assert lo <= kinds[True] <= hi, f"{name}: {kinds[True]} masked steps of 40"
        r = torch.cat(rates)
        if name == "bico":
            assert 0.08 < r.mean() < 0.22, f"bico mean masking rate {r.mean():.2f}, expected ~0.15"
        else:
            assert r.min() < 0.2 and r.max() > 0.8, f"mlm_u rates span {r.min():.2f}..{r.max():.2f}"


# --- reversal --------------------------------------------------------------------------------


def test_entity_preserving_reversal_keeps_entities_in_order(tiny_dataset):
    tok = tiny_dataset.tokenizer
    for d in tiny_dataset.train_docs:
        r = reverse_entity_preserving(d, tok)
        assert r.tokens[0] == BOS and r.tokens[-1] == EOS and len(r.tokens) == len(d.tokens)
        assert Counter(r.tokens) == Counter(d.tokens)
        assert r.tokens[slice(*r.a_span)] == d.tokens[slice(*d.a_span)], "A's tokens out of order"
        assert r.tokens[slice(*r.b_span)] == d.tokens[slice(*d.b_span)], "B's tokens out of order"
        assert (r.a_span[0] < r.b_span[0]) != (d.a_span[0] < d.b_span[0]), "A and B did not swap"
        assert r.order != d.order and r.prompt_len == max(r.a_span[0], r.b_span[0])
        # outside the entities, the words run backwards
        outside = [
            t
            for i, t in enumerate(d.tokens[1:-1], 1)
            if not (d.a_span[0] <= i < d.a_span[1] or d.b_span[0] <= i < d.b_span[1])
        ]
        r_outside = [
            t
            for i, t in enumerate(r.tokens[1:-1], 1)
            if not (r.a_span[0] <= i < r.a_span[1] or r.b_span[0] <= i < r.b_span[1])
        ]
        assert r_outside == outside[::-1]
        assert reverse_entity_preserving(r, tok) == d, "reversing twice must give the document back"
    docs = get_objective("reverse_entity").documents(tiny_dataset.train_docs, tiny_dataset)
    n = len(tiny_dataset.train_docs)
    assert len(docs) == 2 * n and docs[:n] == tiny_dataset.train_docs


def test_token_reversal_reverses_entities_too(tiny_dataset):
    for d in tiny_dataset.train_docs:
        r = reverse_tokens(d)
        assert r.tokens == (BOS, *d.tokens[1:-1][::-1], EOS)
        assert r.tokens[slice(*r.a_span)] == d.tokens[slice(*d.a_span)][::-1]
        assert r.tokens[slice(*r.b_span)] == d.tokens[slice(*d.b_span)][::-1]
    docs = get_objective("reverse_token").documents(tiny_dataset.train_docs, tiny_dataset)
    assert len(docs) == 2 * len(tiny_dataset.train_docs)


def test_reversal_is_word_by_word_with_subword_tokens():
    """With byte-level BPE (the paper's data) a word's pieces move together, in order."""
    from interp.data.dataset import Example
    from interp.objectives.reverse import entity_units

    texts = ["Daphne Barrington is the director of A Journey Through Time ."] * 3 + [
        "the unforgettable bartholomew ."
    ] * 3
    tok = train_tokenizer(texts, vocab_size=300)
    ids = tok.encode("the unforgettable bartholomew .", add_special_tokens=False).ids
    starts = word_starts(tok, ids)
    assert sum(starts) == 4 and len(ids) > 4, f"{len(ids)} pieces, {sum(starts)} word starts"
    words: list[list[int]] = []
    for t, s in zip(ids, starts, strict=True):
        words.append([t]) if s else words[-1].append(t)
    ex = Example((BOS, *ids, EOS), 0, (-1, -1), (-1, -1), 0, "n2d", "doc", "n2d")
    r = reverse_units(ex, entity_units(ex, tok))
    assert r.tokens == (BOS, *[t for w in reversed(words) for t in w], EOS)
    expected = [".", "bartholomew", "unforgettable", "the"]
    assert [tok.decode(w).strip() for w in reversed(words)] == expected
    assert len(token_units(ex)) == len(ids)
