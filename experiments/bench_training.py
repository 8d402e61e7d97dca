"""Benchmark: training tokens/s of the kit's loop against a plain-PyTorch GPT of the same shape.

Both train on the same default-preset documents, same batch size, same AdamW settings, same
number of steps, in this one process (interleaved, best of `--repeats`). The bar: the kit's loop
reaches at least 0.9x the plain loop's tokens/s.

    python experiments/bench_training.py [--preset default] [--steps 60] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from interp.config import apply_overrides, load_config
from interp.data.dataset import pad_batch
from interp.model import build_model
from interp.runs import build_dataset
from interp.train import batch_indices, fit, lr_at, make_optimizer


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, n_ctx: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.o = nn.Linear(d_model, d_model)
        self.fc_in, self.fc_out = nn.Linear(d_model, d_mlp), nn.Linear(d_mlp, d_model)
        self.n_heads = n_heads
        self.register_buffer("mask", torch.triu(torch.ones(n_ctx, n_ctx, dtype=torch.bool), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, -1).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(self.mask[:t, :t], float("-inf")).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
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


def plain_loop(
    model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, cfg, steps: int
) -> float:
    opt = make_optimizer(model, cfg)
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    cfg = apply_overrides(
        load_config(a.preset),
        [f"train.steps={a.steps}", "train.eval_every=0", "train.checkpoint_every=0"],
    )
    ds = build_dataset(cfg)
    tokens, lengths = pad_batch([d.tokens for d in ds.train_docs])
    n_tokens = sum(
        int(lengths[batch_indices(s, len(tokens), cfg.train.batch_size, cfg.train.seed)].sum())
        for s in range(a.steps)
    )
    m = cfg.model
    ours_t, plain_t = [], []
    for _ in range(a.repeats):
        model = build_model(m, ds.d_vocab, cfg.train.seed)
        t0 = time.perf_counter()
        fit(model, ds.train_docs, cfg.train, progress=False)
        ours_t.append(time.perf_counter() - t0)
        torch.manual_seed(0)
        plain = PlainGPT(ds.d_vocab, m.n_layers, m.d_model, m.n_heads, m.d_mlp, m.n_ctx)
        plain_t.append(plain_loop(plain, tokens, lengths, cfg.train, a.steps))
    ours, ref = n_tokens / min(ours_t), n_tokens / min(plain_t)
    print(
        f"preset {a.preset}: {a.steps} steps x batch {cfg.train.batch_size}, {n_tokens} tokens, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  interp fit (raw_forward of the bridge): {ours:,.0f} tokens/s (best of {a.repeats})")
    print(f"  plain PyTorch GPT, same shape and batch:       {ref:,.0f} tokens/s")
    print(f"  ratio interp / plain = {ours / ref:.2f}x (bar: >= 0.9x)")


if __name__ == "__main__":
    main()
