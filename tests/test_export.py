"""`interp export` (issue 27): a run leaves the kit as a Hugging Face transformers model that
AutoModelForCausalLM, AutoTokenizer and TransformerLens's boot_transformers load with the run's
log-probs; what GPT-2's layout cannot express, an existing --out, or an export whose log-probs
disagree is refused in one line with nothing written."""

from __future__ import annotations

import stat

import pytest
import torch

from interp import export
from interp.config import ModelConfig
from interp.errors import UserError


@pytest.fixture(scope="module")
def exported(tiny_run_dir, tmp_path_factory):
    from interp.cli import main

    out = tmp_path_factory.mktemp("hf") / "tiny_hf"
    assert main(["export", str(tiny_run_dir), "--out", str(out)]) == 0
    return out


def _batch(run):
    ids = [list(p.tokens) for p in run.dataset.prompts[:64]]
    n = max(map(len, ids))
    same = [s for s in ids if len(s) == n]
    return torch.tensor(same)


def test_transformers_loads_the_run_with_its_log_probs(exported, tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(exported)).eval()
    x = _batch(tiny_run)
    with torch.no_grad():
        ours = tiny_run.model(x).log_softmax(-1)
        theirs = hf(input_ids=x).logits.log_softmax(-1)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-3, f"largest |log p| difference {diff:.2e} over {len(x)} prompts"
    assert type(hf).__name__ == "GPT2LMHeadModel", type(hf)

    tok = AutoTokenizer.from_pretrained(str(exported))
    text = tiny_run.model.to_string(x[0, 1 : tiny_run.dataset.prompts[0].prompt_len])
    assert tok(text)["input_ids"] == tiny_run.model.to_tokens(text)[0].tolist(), text
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in exported.iterdir()}
    assert len(set(modes.values())) == 1, f"files of mixed modes: {modes}"


def test_transformer_lens_boots_the_export(exported, tiny_run):
    from transformer_lens.model_bridge import TransformerBridge

    tl = TransformerBridge.boot_transformers(str(exported))
    x = _batch(tiny_run)[:8]
    with torch.no_grad():
        diff = (tiny_run.model(x).log_softmax(-1) - tl(x).log_softmax(-1)).abs().max().item()
    assert diff <= 1e-3, f"boot_transformers log-probs differ by {diff:.2e}"


def test_existing_out_is_refused_and_kept(exported, tiny_run_dir, refused):
    before = sorted(p.name for p in exported.iterdir())
    refused(["export", str(tiny_run_dir), "--out", str(exported)], "already exists")
    assert sorted(p.name for p in exported.iterdir()) == before


def test_what_gpt2_cannot_express_is_refused_by_field():
    zero = {"unembed.bias": torch.zeros(5)}
    with pytest.raises(UserError, match="model.normalization='RMS'"):
        export.check_exportable("runs/x", ModelConfig(normalization="RMS"), zero)
    with pytest.raises(UserError) as e:
        export.check_exportable(
            "runs/x", ModelConfig(positional_embedding="rotary", d_head=8), zero
        )
    assert "positional_embedding='rotary'" in str(e.value) and "n_heads x d_head" in str(e.value)
    export.check_exportable("runs/x", ModelConfig(), zero)  # the defaults export
    biased = {"unembed.bias": torch.tensor([0.0, 0.0, 0.3, 0.0, 0.0])}
    with pytest.raises(UserError, match="unembed bias b_U is not zero"):
        export.check_exportable("runs/x", ModelConfig(), biased)


def test_an_export_that_disagrees_is_refused_with_nothing_written(
    tiny_run_dir, tmp_path, monkeypatch, refused
):
    mapped = export.gpt2_state_dict

    def broken(state, n_layers):
        out = mapped(state, n_layers)
        out["transformer.ln_f.bias"] = out["transformer.ln_f.bias"] + 0.1
        return out

    monkeypatch.setattr(export, "gpt2_state_dict", broken)
    refused(["export", str(tiny_run_dir), "--out", str(tmp_path / "hf")], "differ from the run")
    assert list(tmp_path.iterdir()) == [], f"left behind: {list(tmp_path.iterdir())}"
