"""`interp export`: a trained run as a Hugging Face transformers model directory.

    interp export runs/default --out hf/default

writes a GPT-2 model directory: `config.json` (model type `gpt2`), `model.safetensors` (GPT-2's
parameter names and layout), the tokenizer (`tokenizer.json`, `tokenizer_config.json`; it
prepends <bos> as the kit does) and a `README.md` saying what the model is. Then

    model = AutoModelForCausalLM.from_pretrained(DIR)
    tok = AutoTokenizer.from_pretrained(DIR)

and `TransformerBridge.boot_transformers(DIR)` (TransformerLens's GPT-2 adapter) load it.

The kit's models are GPT-2 in every respect: learned positions, pre-LayerNorm, biased attention
and MLP, the same attention scale, an untied unembedding. TransformerLens's state dict carries an
unembed bias `unembed.bias` (b_U), but the native model's head has none: the bridge fills it with
zeros and training never moves it. The export checks that it is zero (GPT-2's `lm_head` has no
bias) and refuses a run where it is not.

give the run's log-probabilities: the export loads the directory back through transformers
before it is put in place and refuses it (nothing written) if any log-prob over the run's first
prompts differs from the kit's model by more than `TOLERANCE`.

Only what GPT-2 can express is exported: LayerNorm, learned positions, a gelu / gelu_new / relu /
silu MLP and n_heads x d_head = d_model. Anything else (RMSNorm, rotary positions) is refused in
one line naming the field.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors
from torch import Tensor

from interp.config import ModelConfig
from interp.data.tokenizer import BOS, EOS, MASK, PAD, SPECIALS, UNK
from interp.errors import UserError
from interp.files import DIR_MODE, FILE_MODE, write_text
from interp.runs import Run, load_run

TOLERANCE = 1e-3  # the largest |log p| difference between the kit and transformers accepted
ACT_FNS = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "silu": "silu"}


def check_exportable(path: str | Path, m: ModelConfig, state: Mapping[str, Tensor]) -> None:
    """Refuse, in one line, a model (config `m`, weights `state`) GPT-2's layout cannot
    express."""
    problems = []
    if m.normalization != "LN":
        problems.append(f"model.normalization={m.normalization!r} (GPT-2 has LayerNorm, 'LN')")
    if m.positional_embedding != "standard":
        problems.append(
            f"model.positional_embedding={m.positional_embedding!r} (GPT-2 learns positions, "
            "'standard')"
        )
    if m.query_layers:
        problems.append(
            f"model.query_layers={m.query_layers} (the encoder-decoder; GPT-2 is one causal stack)"
        )
    if m.act_fn not in ACT_FNS:
        problems.append(f"model.act_fn={m.act_fn!r} (GPT-2 takes {', '.join(ACT_FNS)})")
    if m.resolved_d_head * m.n_heads != m.d_model:
        problems.append(
            f"n_heads x d_head = {m.n_heads} x {m.resolved_d_head} != d_model={m.d_model}"
        )
    b_u = state.get("unembed.bias")
    if b_u is not None and bool(b_u.abs().max() > 0):
        problems.append("its unembed bias b_U is not zero (GPT-2's lm_head has no bias)")
    if problems:
        raise UserError(
            f"{path} cannot be exported as a GPT-2 layout: {'; '.join(problems)}. "
            "Train with those fields at their defaults to export"
        )


def gpt2_state_dict(state: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """TransformerLens-native parameter names (nn.Linear, [out, in]) to GPT-2's (Conv1D,
    [in, out]; q, k and v fused into `c_attn`)."""

    def t(name: str) -> Tensor:
        return state[name].detach().cpu().float().T.contiguous()

    out = {
        "transformer.wte.weight": state["embed.weight"],
        "transformer.wpe.weight": state["pos_embed.weight"],
        "transformer.ln_f.weight": state["ln_final.weight"],
        "transformer.ln_f.bias": state["ln_final.bias"],
        "lm_head.weight": state["unembed.weight"],
    }
    for i in range(n_layers):
        b, h = f"blocks.{i}.", f"transformer.h.{i}."
        qkv = [f"{b}attn.{x}" for x in ("q", "k", "v")]
        out |= {
            f"{h}ln_1.weight": state[f"{b}ln1.weight"],
            f"{h}ln_1.bias": state[f"{b}ln1.bias"],
            f"{h}attn.c_attn.weight": torch.cat([t(f"{n}.weight") for n in qkv], dim=1),
            f"{h}attn.c_attn.bias": torch.cat([state[f"{n}.bias"] for n in qkv]),
            f"{h}attn.c_proj.weight": t(f"{b}attn.o.weight"),
            f"{h}attn.c_proj.bias": state[f"{b}attn.o.bias"],
            f"{h}ln_2.weight": state[f"{b}ln2.weight"],
            f"{h}ln_2.bias": state[f"{b}ln2.bias"],
            f"{h}mlp.c_fc.weight": t(f"{b}mlp.in.weight"),
            f"{h}mlp.c_fc.bias": state[f"{b}mlp.in.bias"],
            f"{h}mlp.c_proj.weight": t(f"{b}mlp.out.weight"),
            f"{h}mlp.c_proj.bias": state[f"{b}mlp.out.bias"],
        }
    return {k: v.detach().cpu().float().contiguous() for k, v in out.items()}


def hf_config(run: Run) -> Any:
    """GPT-2's config for the run's shape (no dropout, untied unembedding)."""
    from transformers import GPT2Config

    m = run.config.model
    return GPT2Config(
        vocab_size=run.dataset.d_vocab,
        n_positions=m.n_ctx,
        n_embd=m.d_model,
        n_layer=m.n_layers,
        n_head=m.n_heads,
        n_inner=m.d_mlp,
        activation_function=ACT_FNS[m.act_fn],
        layer_norm_epsilon=1e-5,  # TransformerLens's default, as the kit's models use
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        tie_word_embeddings=False,
        architectures=["GPT2LMHeadModel"],
    )


def hf_tokenizer_for_export(tok: Tokenizer) -> Any:
    """The run's tokenizer as a plain `PreTrainedTokenizerFast` whose `tokenizer.json` prepends
    <bos> itself (a template post-processor), so `AutoTokenizer` encodes a text to the ids the
    kit's `model.to_tokens` gives, with no class of the kit's."""
    from transformers import PreTrainedTokenizerFast

    copy = Tokenizer.from_str(tok.to_str())
    copy.post_processor = processors.TemplateProcessing(
        single=f"{SPECIALS[BOS]} $A",
        pair=f"{SPECIALS[BOS]} $A $B",
        special_tokens=[(SPECIALS[BOS], BOS)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=copy,
        bos_token=SPECIALS[BOS],
        eos_token=SPECIALS[EOS],
        pad_token=SPECIALS[PAD],
        mask_token=SPECIALS[MASK],
        unk_token=SPECIALS[UNK],
        model_max_length=0,  # set by the caller to n_ctx
    )


def model_card(run: Run, max_diff: float, n_prompts: int) -> str:
    c = run.config
    return f"""# {run.path.name}, exported by interp

A small GPT trained from scratch by the `interp` kit ({c.train.objective} objective, seed
{c.train.seed}, {c.train.steps} steps) on its world `{c.world.source}`: {c.model.n_layers}
layers, d_model {c.model.d_model}, {c.model.n_heads} heads, d_mlp {c.model.d_mlp}, context
{c.model.n_ctx} tokens, {run.dataset.d_vocab} tokens in its vocabulary.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(THIS_DIR)   # GPT-2's architecture
tok = AutoTokenizer.from_pretrained(THIS_DIR)   # prepends <bos>, as training did
```

Checked at export: the largest
log-probability difference from the kit's model over {n_prompts} prompts was {max_diff:.2e}.
The vocabulary is the world's lower-case words; a full stop is a word of its own.
"""


def prompts_for_check(run: Run, n: int = 16) -> list[list[int]]:
    """Token ids of the run's first `n` prompts with their answers (<bos> first)."""
    return [list(p.tokens[: run.config.model.n_ctx]) for p in run.dataset.prompts[:n]]


def max_logprob_diff(run: Run, directory: Path, ids: list[list[int]]) -> float:
    """Load `directory` through transformers and compare its log-probs with the kit's model."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar, for 50 tensors, is noise here
    try:
        hf = AutoModelForCausalLM.from_pretrained(str(directory))
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    hf.eval()
    worst = 0.0
    device = next(run.model.parameters()).device
    with torch.no_grad():
        for seq in ids:
            x = torch.tensor([seq])
            ours = run.model(x.to(device)).float().log_softmax(-1).cpu()
            theirs = hf(input_ids=x).logits.float().log_softmax(-1)
            worst = max(worst, float((ours - theirs).abs().max()))
    return worst


def export_run(run_dir: str | Path, out: str | Path, device: str = "cpu") -> tuple[Path, float]:
    """Write the run at `run_dir` as a transformers model directory `out`; return (out, the
    largest |log p| difference measured). `out` must not exist (nothing is overwritten): the
    directory is written beside it under a temporary name, checked, then renamed into place."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out} already exists: choose another --out (nothing is overwritten)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} does not exist: create it or choose another --out")
    run = load_run(run_dir, device=device)
    check_exportable(run.path, run.config.model, run.model.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        cfg = hf_config(run)
        cfg.save_pretrained(str(tmp))
        state = gpt2_state_dict(run.model.state_dict(), run.config.model.n_layers)
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok = hf_tokenizer_for_export(run.dataset.tokenizer)
        tok.model_max_length = run.config.model.n_ctx
        tok.save_pretrained(str(tmp))
        ids = prompts_for_check(run)
        diff = max_logprob_diff(run, tmp, ids)
        if not diff <= TOLERANCE:
            raise UserError(
                f"the exported model's log-probs differ from the run's by {diff:.2e} "
                f"(> {TOLERANCE}): nothing written; report this with the run's config.json"
            )
        write_text(tmp / "README.md", model_card(run, diff, len(ids)))
        for p in tmp.iterdir():
            os.chmod(p, FILE_MODE)
        os.chmod(tmp, DIR_MODE)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, diff
