"""The TransformerLens idioms on the kit's models: a loaded run (and a freshly built model) takes
strings, with <bos> exactly where the training data has it, and building a model leaves torch's
global RNG alone."""

from __future__ import annotations

import shutil
import warnings
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from interp.data.tokenizer import BOS, TruncatedTextWarning, UnknownWordWarning
from interp.errors import UserError
from interp.evaluate import greedy_generate
from interp.model import build_model, load_cache, save_cache
from interp.runs import load_run


def _some_examples(ds, n=6):
    """A few documents and prompts of every subset (prompt parts only)."""
    picked = []
    for subset in ("n2d", "d2n", "both"):
        picked += [e for e in ds.train_docs if e.subset == subset][:n]
        picked += ds.select(subset=subset, direction="reverse")[:n]
    return picked


def test_to_tokens_gives_the_training_ids(tiny_run):
    """to_tokens(text) is the dataset's ids for that text: <bos> first, no <eos>."""
    model, ds = tiny_run.model, tiny_run.dataset
    for ex in _some_examples(ds):
        ids = list(ex.prompt) if ex.kind == "prompt" else list(ex.tokens[:-1])  # doc: drop <eos>
        text = ds.text(ids)
        got = model.to_tokens(text)[0].tolist()
        assert got == ids, f"to_tokens({text!r}) = {got}, dataset has {ids}"
        no_bos = model.to_tokens(text, prepend_bos=False)[0].tolist()
        assert no_bos == ids[1:], f"prepend_bos=False gave {no_bos}, expected {ids[1:]}"


def test_to_str_tokens_and_to_string(tiny_run):
    model, ds = tiny_run.model, tiny_run.dataset
    ex = ds.select(direction="same")[0]
    text = ds.text(ex.prompt)
    strs = model.to_str_tokens(text)
    assert strs == ["<bos>", *text.split()], f"to_str_tokens({text!r}) = {strs}"
    round_trip = model.to_string(model.to_tokens(text, prepend_bos=False)[0])
    assert round_trip == text, f"to_string(to_tokens(x)) = {round_trip!r}, x = {text!r}"
    assert model.to_string(torch.tensor([BOS])) == "<bos>"


def test_generate_greedy_completes_trained_facts(tiny_run):
    """Greedy `generate` on a prompt string equals the kit's own greedy decoding, and completes
    the trained facts the kit's evaluation counts as right."""
    model, ds = tiny_run.model, tiny_run.dataset
    prompts = ds.select(direction="same", templates="train")[:24]
    n_new = max(len(e.answer) for e in prompts)
    ours = greedy_generate(model, [e.prompt for e in prompts], n_new)
    right = 0
    for ex, gen in zip(prompts, ours, strict=True):
        text = ds.text(ex.prompt)
        out = model.generate(text, max_new_tokens=n_new, do_sample=False, verbose=False)
        expected = ds.text([*ex.prompt, *gen])
        assert out == expected, f"generate({text!r}) = {out!r}, kit's greedy decoding {expected!r}"
        right += out.startswith(ds.text(ex.tokens))
    assert right >= len(prompts) // 2, (
        f"only {right}/{len(prompts)} trained-order facts completed by generate"
    )


def test_generate_sampled_is_seeded(tiny_run):
    model, ds = tiny_run.model, tiny_run.dataset
    text = ds.text(ds.select(direction="reverse")[0].prompt)
    outs = []
    for seed in (0, 0, 1, 2, 3):
        torch.manual_seed(seed)
        outs.append(
            model.generate(text, max_new_tokens=4, do_sample=True, temperature=2.0, verbose=False)
        )
    assert all(o.startswith(text) for o in outs), outs
    assert outs[0] == outs[1], f"same seed, different samples: {outs[:2]}"
    assert len(set(outs)) > 1, f"sampling at temperature 2 never varied: {outs}"


def test_run_with_cache_on_a_string(tiny_run):
    """run_with_cache(text) runs on the training ids: the same logits as the token call."""
    model, ds = tiny_run.model, tiny_run.dataset
    ex = ds.select(direction="same")[0]
    logits, cache = model.run_with_cache(ds.text(ex.prompt))
    ref = model(torch.tensor([ex.prompt]))
    assert logits.shape == (1, len(ex.prompt), ds.d_vocab)
    assert torch.equal(logits, ref), f"max |diff| {(logits - ref).abs().max().item():.3g}"
    resid = cache["blocks.0.hook_resid_pre"]
    assert resid.shape == (1, len(ex.prompt), tiny_run.config.model.d_model)


def test_fresh_model_takes_strings(tiny_config, tiny_run):
    ds = tiny_run.dataset
    model = build_model(tiny_config.model, ds.d_vocab, seed=0, tokenizer=ds.tokenizer)
    ex = ds.train_docs[0]
    assert model.to_tokens(ds.text(ex.tokens))[0].tolist() == list(ex.tokens[:-1])
    bare = build_model(tiny_config.model, ds.d_vocab, seed=0)
    assert bare.tokenizer is None
    for a, b in zip(model.parameters(), bare.parameters(), strict=True):
        assert torch.equal(a, b), "attaching a tokenizer changed the initial weights"


def test_build_model_leaves_the_global_rng_alone(tiny_config, tiny_run, tiny_run_dir):
    d_vocab = tiny_run.dataset.d_vocab
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = build_model(tiny_config.model, d_vocab, seed=7)
    assert torch.equal(torch.get_rng_state(), before), "build_model moved torch's global RNG"
    load_run(tiny_run_dir)
    assert torch.equal(torch.get_rng_state(), before), "load_run moved torch's global RNG"
    torch.manual_seed(99)  # another global state: the weights must not depend on it
    again = build_model(tiny_config.model, d_vocab, seed=7)
    other = build_model(tiny_config.model, d_vocab, seed=8)
    w = dict(first.named_parameters())
    for name, p in again.named_parameters():
        assert torch.equal(w[name], p), f"{name} differs between two builds with seed 7"
    diff = sum(not torch.equal(w[n], p) for n, p in other.named_parameters())
    assert diff > 0, "seeds 7 and 8 gave the same weights"


def test_attention_shapes_are_checked(tiny_config):
    """The jaxtyping shapes on the raw attention are enforced under pytest: a call with keys of
    another length than their values, or a mask that does not fit, is refused at the call."""
    from jaxtyping import TypeCheckError

    from interp.model import attend, qkv, raw

    model = build_model(tiny_config.model, 40, seed=0)
    att = raw(model.original_model.layers[0].attn)
    x = torch.randn(2, 5, tiny_config.model.d_model)
    q, k, v = qkv(att, x, torch.arange(5)[None])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    assert attend(att, q, k, v, causal).shape == x.shape
    padding = torch.zeros(2, 1, 1, 5, dtype=torch.bool)
    assert attend(att, q, k, v, padding).shape == x.shape
    with pytest.raises(TypeCheckError):
        attend(att, q, k, v[:, :, :4], causal)  # 5 keys, 4 values
    with pytest.raises(TypeCheckError):
        attend(att, q, k, v, causal[:, :4])  # mask over 4 keys


def test_every_shape_annotation_is_checked_under_pytest(pytestconfig):
    """The session's jaxtyping hook (pyproject.toml's addopts) covers every interp module that
    holds a shape annotation (`Float[...]`, `Int[...]`, ...): a new module with one, left off the
    list, would have its shapes go unchecked."""
    import re

    value = pytestconfig.getoption("jaxtyping_packages") or ""
    hooked = value.split(",")[:-1]  # the last element is the type checker
    root = Path(__file__).resolve().parents[1]
    shaped = re.compile(r"\b(Float|Int|Bool|Shaped|Num|Integer|Real)\[")
    modules = {
        ".".join(f.relative_to(root).with_suffix("").parts)
        for f in (root / "interp").rglob("*.py")
        if shaped.search(f.read_text())
    }
    assert len(modules) > 10, sorted(modules)  # the scan finds the kit's shaped modules
    uncovered = sorted(
        m for m in modules if not any(m == h or m.startswith(h + ".") for h in hooked)
    )
    assert not uncovered, (
        f"shape annotations outside pytest's jaxtyping hook ({value}): {uncovered}"
    )


def test_notebook_entry_points_from_the_package(tiny_run):
    """`from interp import load_run` (the first line a notebook user types) loads the same run
    with the tokenizer attached, and importing `interp` alone does not load torch's runtime
    before the thread policy is set (checked in a fresh interpreter)."""
    import subprocess
    import sys

    import interp

    run = interp.load_run(tiny_run.path)
    text = tiny_run.dataset.text(tiny_run.dataset.select(direction="same")[0].prompt)
    assert run.model.to_str_tokens(text)[0] == "<bos>"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        interp.nope  # noqa: B018
    code = "import sys, interp; print('torch' in sys.modules, interp.load_run.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "interp.runs"], out.stdout + out.stderr


def _hand_forward(model, tokens: torch.Tensor, knock: tuple[int, int, int, int] | None = None):
    """The model's logits computed by hand from its weights (TL's conventions: pre-LN blocks,
    learned positions, causal softmax attention), with score [layer, head, query, key] set to
    -inf before the softmax where `knock` says."""
    x = model.embed.W_E[tokens] + model.pos_embed.W_pos[: tokens.shape[1]]
    seq = tokens.shape[1]
    causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    for layer, block in enumerate(model.blocks):
        ln1 = block.ln1.original_component
        h = ln1(x)
        att = block.attn
        q = torch.einsum("bpd,hdk->bhpk", h, att.W_Q) + att.b_Q[None, :, None]
        k = torch.einsum("bpd,hdk->bhpk", h, att.W_K) + att.b_K[None, :, None]
        v = torch.einsum("bpd,hdk->bhpk", h, att.W_V) + att.b_V[None, :, None]
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        scores = scores.masked_fill(causal, float("-inf"))
        if knock is not None and knock[0] == layer:
            scores[:, knock[1], knock[2], knock[3]] = float("-inf")
        z = scores.softmax(-1) @ v
        x = x + torch.einsum("bhpk,hkd->bpd", z, att.W_O) + att.b_O
        x = x + block.mlp.original_component(block.ln2.original_component(x))
    return model.unembed.original_component(model.ln_final.original_component(x))


def test_attention_knockout_at_hook_attn_scores_takes_effect(tiny_run):
    """A -inf written at hook_attn_scores (before the softmax, as in HookedTransformer) removes
    that key from the query's attention: the output equals a hand-computed forward with that
    score masked, and differs from the clean one; hook_pattern and the cache hold the scores
    and the pattern apart; without a hook the logits are the model's own."""
    model = tiny_run.model
    tokens = model.to_tokens("the composer of", prepend_bos=True)
    query = tokens.shape[1] - 1
    knock = (0, 1, query, 0)  # layer 0, head 1: the last position stops attending to <bos>

    def knockout(scores, hook):
        scores[:, knock[1], knock[2], knock[3]] = float("-inf")
        return scores

    with torch.no_grad():
        clean = model(tokens)
        hand_clean = _hand_forward(model, tokens)
        hooked = model.run_with_hooks(
            tokens, fwd_hooks=[("blocks.0.attn.hook_attn_scores", knockout)]
        )
        hand = _hand_forward(model, tokens, knock)
        _, cache = model.run_with_cache(tokens)
    assert (clean - hand_clean).abs().max() < 1e-4, (clean - hand_clean).abs().max()
    assert (hooked - hand).abs().max() < 1e-4, (hooked - hand).abs().max()
    assert (hooked - clean).abs().max() > 1e-3, "the knockout changed nothing"
    scores, pattern = cache["blocks.0.attn.hook_attn_scores"], cache["blocks.0.attn.hook_pattern"]
    assert torch.isinf(scores[0, 0, 0, 1]) and scores[0, 0, 0, 1] < 0, (
        "scores are pre-softmax, masked"
    )
    assert torch.allclose(scores.softmax(-1), pattern, atol=1e-6), "pattern is the scores' softmax"


def test_blocks_have_their_ov_and_qk_circuits(tiny_run):
    model = tiny_run.model
    for layer, block in enumerate(model.blocks):
        assert torch.allclose(block.attn.OV.AB, model.OV[layer].AB, atol=1e-6)
        assert torch.allclose(block.attn.QK.AB, model.QK[layer].AB, atol=1e-6)


def test_load_run_by_objective_and_seed_from_a_study(tiny_run_dir, tmp_path):
    runs = tmp_path / "study" / "runs"
    shutil.copytree(tiny_run_dir, runs / "causal_s0_0123456789ab")
    run = load_run(tmp_path / "study", objective="causal", seed=0)
    assert run.path == runs / "causal_s0_0123456789ab"
    with pytest.raises(UserError, match="no run mlm_u_s0_.*it holds causal_s0"):
        load_run(tmp_path / "study", objective="mlm_u", seed=0)
    shutil.copytree(tiny_run_dir, runs / "causal_s0_ba9876543210")
    with pytest.raises(UserError, match="2 runs match causal_s0_"):
        load_run(tmp_path / "study", objective="causal", seed=0)


# ---- docs/transformer_lens.md: each point of the guide for TransformerLens users -------------


def test_guide_tl_version_and_where_utils_went():
    assert int(metadata.version("transformer-lens").split(".")[0]) >= 4
    assert find_spec("transformer_lens.utils") is None  # TL 4: gone
    assert find_spec("transformer_lens.utilities") is not None


def test_guide_hook_normalized_is_before_the_affine_step(tiny_run):
    """`ln_final.hook_normalized` is x - mean over its std, before the weight and bias; the
    unembed reads `ln_final.hook_out`."""
    model = tiny_run.model
    tokens = model.to_tokens("the composer of")
    logits, cache = model.run_with_cache(tokens)
    unembed = model.unembed.original_component
    with torch.no_grad():
        out = unembed(cache["ln_final.hook_out"])
        normalized = unembed(cache["ln_final.hook_normalized"])
    assert (out - logits).abs().max() < 1e-5
    assert (normalized - logits).abs().max() > 0.1


def test_guide_hook_name_inside_a_hook_is_the_canonical_name(tiny_run):
    """A hook registered on an alias (`blocks.0.attn.hook_z`) is called with the canonical
    hook point, whose `name` differs: filter by the name you registered, not by `hook.name`."""
    model = tiny_run.model
    seen = []
    model.run_with_hooks(
        model.to_tokens("the composer of"),
        fwd_hooks=[("blocks.0.attn.hook_z", lambda x, hook: seen.append(hook.name))],
    )
    assert seen == ["blocks.0.attn.o.hook_in"], seen


def test_guide_head_results_from_hook_z_and_w_o(tiny_run):
    """No `hook_result` on native models (`set_use_attn_result` raises); each head's write to
    the residual stream is `hook_z[..., h, :] @ W_O[h]`, and their sum plus b_O is the
    attention's output."""
    model = tiny_run.model
    with pytest.raises(NotImplementedError):
        model.set_use_attn_result(True)
    _, cache = model.run_with_cache(model.to_tokens("the composer of"))
    att = model.blocks[1].attn
    z = cache["blocks.1.attn.hook_z"]  # [batch, pos, head, d_head]
    per_head = torch.einsum("bphk,hkd->bphd", z, att.W_O)
    total = per_head.sum(2) + att.b_O
    assert (total - cache["blocks.1.attn.hook_out"]).abs().max() < 1e-5


def test_guide_a_cache_saves_and_loads_with_its_aliases(tiny_run, tmp_path):
    model = tiny_run.model
    _, cache = model.run_with_cache(model.to_tokens("the composer of"))
    with pytest.raises(RuntimeError, match="share memory"):
        save_file(cache.cache_dict, str(tmp_path / "raw.safetensors"))
    save_cache(cache, tmp_path / "cache.safetensors")
    back = load_cache(tmp_path / "cache.safetensors")
    assert set(back) == set(cache.cache_dict)
    bad = [k for k, v in cache.cache_dict.items() if not torch.equal(v, back[k])]
    assert not bad, bad


def test_a_run_displays_in_one_line(tiny_run):
    """A notebook that displays `run` shows one line, not the model and the dataset."""
    text = repr(tiny_run)
    assert len(text) < 300 and "\n" not in text and "parameters" in text, text[:400]


def test_unknown_words_are_named_not_silently_unk(tiny_run):
    """The world's words are lower-case: a capitalised word or a full stop attached to a word
    becomes <unk>; the run's tokenizer says which words, in one warning, and stays quiet on
    known text."""
    model = tiny_run.model
    with pytest.warns(UnknownWordWarning, match=r"'Hello'"):
        model.to_tokens("Hello the")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.to_tokens("the composer of")


def test_an_unknown_word_is_not_a_single_token(tiny_run):
    """`to_single_token` of a word the vocabulary lacks raises (TransformerLens returns <unk>'s
    id, which reads as if it were the word's); a known word and <unk> itself give their ids."""
    model = tiny_run.model
    assert model.to_single_token("the") == tiny_run.dataset.tokenizer.token_to_id("the")
    assert model.to_single_token("<unk>") == 4
    with (
        pytest.raises(ValueError, match="'hello' is not in the run's vocabulary"),
        pytest.warns(UnknownWordWarning),
    ):
        model.to_single_token("hello")


def test_a_prompt_cut_at_n_ctx_says_so(tiny_run):
    """`to_tokens` cuts a text at the model's n_ctx; the run's tokenizer warns with both
    lengths. A text that fits, or an explicit truncate=False, stays quiet."""
    model = tiny_run.model
    n_ctx = model.cfg.n_ctx
    long = " ".join(["the"] * (n_ctx + 5))
    with pytest.warns(TruncatedTextWarning, match=f"of {n_ctx + 6} tokens was cut to {n_ctx}"):
        assert model.to_tokens(long).shape[-1] == n_ctx
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.to_tokens(" ".join(["the"] * (n_ctx - 1)))
        assert model.to_tokens(long, truncate=False).shape[-1] == n_ctx + 6
