"""Benchmark: training tokens/s of the kit's loop against a plain-PyTorch GPT of the same shape.

The reference is what a practitioner writes today: nanoGPT's model with
`F.scaled_dot_product_attention` (causal flag, no materialised mask) and AdamW with
`fused=True` where the device has the fused kernel (CPU does, from torch 2.4). Both train on the
same preset's documents, same batch size, same learning-rate schedule and AdamW
hyper-parameters, same number of steps, in this one process (interleaved, best of `--repeats`).
The bar (issue 19, item 2): the kit reaches at least 1.0x the reference's tokens/s at the
default and paper_exp1 shapes.

    python experiments/bench_training.py [--preset default paper_exp1] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from interp.config import apply_overrides, load_config
from interp.data.dataset import pad_batch
from interp.model import build_model
from interp.runs import build_dataset
from interp.train import batch_indices, fit, lr_at


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, n_ctx: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        self.fc_in, self.fc_out = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, -1).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))


class PlainGPT(nn.Module):
    """nanoGPT-style reference: learned positions, pre-LN blocks, final LN, untied unembedding."""

    def __init__(
        self, d_vocab: int, n_layers: int, d_model: int, n_heads: int, d_mlp: int, n_ctx: int
    ):
        super().__init__()
        self.embed, self.pos = nn.Embedding(d_vocab, d_model), nn.Embedding(n_ctx, d_model)
        self.blocks = nn.ModuleList(
            [Block(d_model, n_heads, d_mlp, n_ctx) for _ in range(n_layers)]
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, d_vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def fused_adamw(model: nn.Module, cfg) -> torch.optim.AdamW:
    """nanoGPT's optimiser: decay on matrices only, the fused kernel where the device has it."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    except RuntimeError:  # no fused kernel for this device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def plain_loop(
    model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, cfg, steps: int
) -> float:
    opt = fused_adamw(model, cfg)
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        idx = batch_indices(step, len(tokens), cfg.batch_size, cfg.seed)
        b, ln = tokens[idx], lengths[idx]
        b = b[:, : int(ln.max())]
        logits = model(b)
        valid = torch.arange(b.shape[1] - 1)[None] < (ln[:, None] - 1)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            b[:, 1:].masked_fill(~valid, -100).reshape(-1),
            ignore_index=-100,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return time.perf_counter() - t0


def bench(preset: str, steps: int, repeats: int) -> float:
    """Print tokens/s of the kit and of the reference at `preset`'s shape; return the ratio."""
    cfg = apply_overrides(
        load_config(preset),
        [f"train.steps={steps}", "train.eval_every=0", "train.checkpoint_every=0"],
    )
    ds = build_dataset(cfg)
    tokens, lengths = pad_batch([d.tokens for d in ds.train_docs])
    n_tokens = sum(
        int(lengths[batch_indices(s, len(tokens), cfg.train.batch_size, cfg.train.seed)].sum())
        for s in range(steps)
    )
    m = cfg.model
    ours_t, plain_t = [], []
    for _ in range(repeats):
        model = build_model(m, ds.d_vocab, cfg.train.seed)
        t0 = time.perf_counter()
        fit(model, ds.train_docs, cfg.train, progress=False)
        ours_t.append(time.perf_counter() - t0)
        torch.manual_seed(0)
        plain = PlainGPT(ds.d_vocab, m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.n_ctx)
        plain_t.append(plain_loop(plain, tokens, lengths, cfg.train, steps))
    ours, ref = n_tokens / min(ours_t), n_tokens / min(plain_t)
    print(
        f"preset {preset}: d_model {m.d_model}, {m.n_layers} layers, d_vocab {ds.d_vocab}; "
        f"{steps} steps x batch {cfg.train.batch_size}, {n_tokens} tokens, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  interp fit:                            {ours:9,.0f} tokens/s (best of {repeats})")
    print(f"  plain PyTorch GPT (SDPA, fused AdamW): {ref:9,.0f} tokens/s")
    print(f"  ratio interp / plain = {ours / ref:.2f}x (bar: >= 1.0x)")
    return ours / ref


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", nargs="+", default=["default", "paper_exp1"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    for preset in a.preset:
        bench(preset, a.steps, a.repeats)


if __name__ == "__main__":
    main()
