"""Kitouni et al.'s two-stream encoder-decoder (interp.encoder_decoder, model.query_layers > 0):
masks never attended, TransformerLens hook points that work, W_Q / W_K that are the attention's
own, reproducible training and checkpoints, and clear refusals where it does not belong."""

from __future__ import annotations

import math

import pytest
import torch

from interp.config import apply_overrides
from interp.data.tokenizer import MASK
from interp.errors import UserError
from interp.model import build_model, load_weights, save_weights
from interp.runs import Run, build_dataset

ED = ["model.query_layers=2", "model.positional_embedding=rotary", "train.objective=mlm_u"]


@pytest.fixture(scope="module")
def ed_config(tiny_config):
    return apply_overrides(tiny_config, ["world.source=retrieval", "train.eval_every=0", *ED])


@pytest.fixture(scope="module")
def ds(ed_config):
    return build_dataset(ed_config)


@pytest.fixture(scope="module")
def model(ed_config, ds):
    m = build_model(ed_config.model, ds.d_vocab, seed=0)
    m.eval()
    return m


def _doc(ds, i=0):
    return torch.tensor([ds.train_docs[i].tokens])


def test_same_seed_same_weights_and_the_global_rng_left_alone(ed_config, ds):
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(ed_config.model, ds.d_vocab, seed=4)
    after = torch.rand(3)
    b = build_model(ed_config.model, ds.d_vocab, seed=4)
    c = build_model(ed_config.model, ds.d_vocab, seed=5)
    assert torch.equal(before, after), "building the model moved torch's global RNG"
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["embed.weight"], sc["embed.weight"])


def test_the_token_under_a_mask_changes_no_output(model, ds):
    """Masks are never attended: what sits at a masked position is invisible to every output,
    so the model cannot read the answer it is asked for."""
    x = _doc(ds)
    keep = torch.ones_like(x)
    keep[0, 2] = 0  # position 2 hidden
    y = x.clone()
    y[0, 2] = (int(x[0, 2]) + 7) % ds.d_vocab
    with torch.no_grad():
        a, b = model(x, attention_mask=keep), model(y, attention_mask=keep)
    assert torch.equal(a, b), (a - b).abs().max().item()
    with torch.no_grad():  # the control: attended, the same change does change the outputs
        every = torch.ones_like(x)
        c, d = model(x, attention_mask=every), model(y, attention_mask=every)
    assert (c - d).abs().max().item() > 1e-3
    with torch.no_grad():  # without an attention mask, <mask> tokens are the hidden ones
        masked = x.clone()
        masked[0, 2] = MASK
        assert torch.equal(model(masked), model(masked, attention_mask=(masked != MASK).long()))


def test_hook_points_cache_and_intervene(model, ds):
    x = _doc(ds)
    logits, cache = model.run_with_cache(x)
    for name in ("hook_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_attn_scores",
                 "blocks.0.attn.hook_pattern", "blocks.1.hook_mlp_out", "hook_memory",
                 "query_blocks.1.hook_resid_post", "query_blocks.0.attn.hook_pattern",
                 "hook_final"):  # fmt: skip
        assert name in cache, sorted(cache.keys())[:12]
    assert torch.allclose(model.unembed(cache["hook_final"]), logits, atol=1e-6)

    def zero(t, hook):
        return torch.zeros_like(t)

    ablated = model.run_with_hooks(x, fwd_hooks=[("hook_memory", zero)])
    same = model.run_with_hooks(x, fwd_hooks=[("hook_memory", lambda t, hook: t)])
    assert torch.equal(same, logits)
    assert (ablated - logits).abs().max().item() > 1e-3


def test_w_q_and_w_k_are_the_attentions_own(model, ds):
    """At position 0 everywhere (rotary is then the identity), layer 0's cached scores equal
    (LN(x) W_Q + b_Q)(LN(x) W_K + b_K)^T / sqrt(d_head), head by head."""
    x = _doc(ds)
    pos = torch.zeros_like(x)
    _, cache = model.run_with_cache(x, position_ids=pos)
    h = model.blocks[0].ln1(cache["blocks.0.hook_resid_pre"])[0]
    d = model.cfg.d_model
    b_q = model.blocks[0].attn.q.bias.view(model.cfg.n_heads, -1)
    b_k = model.blocks[0].attn.kv.bias[:d].view(model.cfg.n_heads, -1)
    q = torch.einsum("pd,hde->hpe", h, model.W_Q[0]) + b_q[:, None]
    k = torch.einsum("pd,hde->hpe", h, model.W_K[0]) + b_k[:, None]
    want = q @ k.transpose(-1, -2) / math.sqrt(model.cfg.d_head)
    got = cache["blocks.0.attn.hook_attn_scores"][0]
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max().item()
    assert model.W_Q.shape == (model.cfg.n_layers, model.cfg.n_heads, d, model.cfg.d_head)


def test_training_is_reproducible_and_weights_round_trip(ed_config, ds, tmp_path):
    from interp.train import fit

    cfg = apply_overrides(ed_config, ["train.steps=12", "train.checkpoint_every=0"]).train
    runs = []
    for _ in range(2):
        m = build_model(ed_config.model, ds.d_vocab, seed=0)
        log = fit(m, ds.train_docs, cfg, progress=False)
        runs.append((m, log))
    (a, _), (b, _) = runs
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same seed, different weights"
    save_weights(a, tmp_path / "model.safetensors")
    c = build_model(ed_config.model, ds.d_vocab, seed=9)
    load_weights(c, tmp_path / "model.safetensors")
    a.eval()
    c.eval()
    x = _doc(ds)
    assert torch.equal(a(x), c(x))
    single = apply_overrides(ed_config, ["model.query_layers=0"])
    with pytest.raises(UserError, match="does not match the run's config"):
        load_weights(build_model(single.model, ds.d_vocab, seed=0), tmp_path / "model.safetensors")


def test_configs_it_cannot_serve_are_refused_in_one_line(tiny_config):
    with pytest.raises(UserError, match="no causal head.*mlm_u"):
        apply_overrides(tiny_config, ["model.query_layers=2", "model.positional_embedding=rotary"])
    with pytest.raises(UserError, match="rotary"):
        apply_overrides(tiny_config, ["model.query_layers=2", "train.objective=mlm_u"])


def test_a_field_at_its_default_renames_no_run(tiny_config):
    """query_layers was added after runs were named by their config hash: at 0 it is left out
    of the hash, so every earlier run keeps its name; set, it names a different run."""
    import hashlib
    import json

    d = tiny_config.to_dict()
    assert d["model"].pop("query_layers") == 0
    d["train"].pop("device")
    old = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert tiny_config.hash() == old
    assert apply_overrides(tiny_config, ED).hash() != apply_overrides(tiny_config, ED[1:]).hash()


def test_instruments_for_a_causal_stack_refuse_it(tiny_config, tmp_path):
    from interp.analysis import INSTRUMENTS

    cfg = apply_overrides(tiny_config, ED)  # the fact world, which lens and probes read
    data = build_dataset(cfg)
    run = Run(tmp_path, cfg, build_model(cfg.model, data.d_vocab, seed=0), data)
    for name in ("lens", "probing"):
        with pytest.raises(UserError, match=f"`{name}` reads a single causal stack"):
            INSTRUMENTS[name].run(run, write=False, progress=False)


def test_export_refuses_it_by_name(ed_config, model, tmp_path):
    from interp.export import check_exportable

    with pytest.raises(UserError, match=r"model.query_layers=2 \(the encoder-decoder"):
        check_exportable(tmp_path, ed_config.model, model.state_dict())
