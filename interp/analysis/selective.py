"""Selective prediction: does anything inside the model know when its answer is wrong?

Method (ASPIRE, Chen et al., Findings of EMNLP 2023, adapted to small from-scratch models). For
each test question the model answers by beam search (k beams, as many tokens as the answer
entity has); every beam is a candidate answer with its length-normalised log-likelihood, and it
is labelled correct or not by the paper's exact-match rule. A selective predictor answers only
when a score says it is confident; sweeping the threshold traces the accuracy-coverage curve.
ASPIRE's score comes from *self-evaluation*: a few learned soft-prompt vectors (the model itself
frozen) are placed after "question + answer", and trained so that the model's next-token
distribution at the last soft position prefers a "correct" token over an "incorrect" token when
the answer is right. The final selector is (1 - alpha) * likelihood + alpha * log P(correct),
with alpha chosen on a validation split.

Here the question is sharp: under the reversal curse the model answers reversed questions
wrongly; does its likelihood know it, does a learned self-evaluation, does a linear probe on its
hidden state? Scores compared (higher = more confident):
- `likelihood`: length-normalised log-likelihood of the chosen (top) beam;
- `entropy`: minus the entropy of the beams' probabilities renormalised over the k beams
  (constant, so uninformative, with 1 beam);
- `probe`: logistic regression on the last layer's residual stream (`blocks.{L-1}.hook_resid_post`)
  at the LAST ANSWER TOKEN of "question + candidate": the position that has read both the
  question and the whole answer, the same information the self-evaluation sees;
- `self_eval`: log P(correct) from the learned soft prompt, where P(correct) is the softmax over
  just two logits at the last soft position: the correct token (default ".", a statement) and
  the incorrect token (default "?", a doubt). Both exist in every tokenizer the kit builds and
  are predicted often in training, so their unembedding rows are well trained; any two tokens
  would do, since only the learned prompt gives them meaning;
- `aspire`: (1 - alpha) * likelihood + alpha * self_eval.
Controls: `oracle` (the correctness itself: the best possible curve), the chance selector (a
random score has AUROC 0.5 and AUACC equal to plain accuracy, reported as `accuracy_<set>`), and
`probe_shuffled` / `self_eval_shuffled`, the same learners trained on shuffled labels (they should
sit near chance; if they do not, the learner is reading something other than correctness).

Data: the test prompts of the run (training templates by default), forward = direction "same",
reverse = "reverse", all three subsets mixed (for the `both` subset reversed questions are
answerable, so the reverse set usually has both classes). People are split, within each subset,
into train / validation / test (seeded, disjoint): the probe and self-evaluation learn on all k
candidates of the training people's questions, early stopping and alpha use the validation
people, and every metric is on the test people's chosen answers. No score sees the direction or
subset labels. Metrics per question set (mixed, forward, reverse): AUROC (the probability that a
correct answer outscores a wrong one; NaN, with a reason, when a set has one class only) and
AUACC, the mean of the accuracy-coverage curve over coverages 1/n, ..., n/n (ties broken at
random in expectation, so a constant score gives a flat curve at plain accuracy).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from scipy.stats import rankdata
from torch import Tensor
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.data.dataset import Example, FactDataset, pad_batch
from interp.data.tokenizer import EOS, encode
from interp.errors import UserError
from interp.evaluate import is_exact_match, match_rule
from interp.model import attend, embed_positions, mlp, qkv, raw, raw_forward, supports_raw
from interp.runs import Run, write_json
from interp.stats import run_seed

NAME = "selective"
SETS = ("mixed", "forward", "reverse")
SCORES = ("likelihood", "entropy", "probe", "self_eval", "aspire")
CONTROLS = ("oracle", "probe_shuffled", "self_eval_shuffled")
SPLITS = ("train", "val", "test")
BATCH = 256


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SelectiveOptions:
    """Options of the selective-prediction analysis (each help line is also the CLI's --help)."""

    beams: int = _f(4, "beams of the beam search; every beam is a candidate answer")
    templates: str = _f("train", "question templates: train, heldout or all")
    n_soft: int = _f(4, "learned soft-prompt vectors placed after question + answer")
    correct_token: str = _f(".", "vocabulary token whose logit means 'my answer is correct'")
    incorrect_token: str = _f("?", "vocabulary token whose logit means 'my answer is wrong'")
    val_fraction: float = _f(0.25, "fraction of each subset's people in the validation split")
    test_fraction: float = _f(0.25, "fraction of each subset's people in the test split")
    seed: int = _f(
        0, "offset on the run seed (stats.run_seed) of the people split, soft prompts, controls"
    )
    lr: float = _f(0.01, "Adam learning rate of the soft prompt")
    batch_size: int = _f(64, "candidates per self-evaluation training batch")
    max_epochs: int = _f(15, "most epochs of self-evaluation training")
    patience: int = _f(3, "stop after this many epochs without a better validation loss")
    controls: bool = _f(True, "also train the shuffled-label probe and self-evaluation")

    def validate(self, d_vocab: int) -> None:
        if not 1 <= self.beams <= d_vocab:
            raise UserError(f"--beams must be in 1..{d_vocab} (the vocabulary), got {self.beams}")
        if self.templates not in ("train", "heldout", "all"):
            raise UserError(f"--templates must be train, heldout or all, got {self.templates!r}")
        if self.n_soft < 1:
            raise UserError(f"--n-soft must be at least 1, got {self.n_soft}")
        if not (
            0 < self.val_fraction < 1
            and 0 < self.test_fraction < 1
            and self.val_fraction + self.test_fraction < 1
        ):
            raise UserError("--val-fraction and --test-fraction must be in (0, 1) and sum below 1")
        if self.lr <= 0 or self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise UserError("--lr, --batch-size, --max-epochs and --patience must be positive")


# ---------------------------------------------------------------------------------------------
# Metrics


def auroc(score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]) -> float:
    """P(score of a correct answer > score of a wrong one), ties counting 1/2 (Mann-Whitney U).

    NaN when one class is empty: no ranking can be judged then.
    """
    n_pos = int(correct.sum())
    n_neg = len(correct) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)  # average ranks for ties
    u = ranks[correct].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def accuracy_coverage(
    score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]
) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " n"]]:
    """The accuracy-coverage curve: keep the i most confident answers, i = 1..n.

    Returns (coverage i/n, accuracy of the kept answers). Tied scores are broken at random in
    expectation: inside a group of equal scores every answer counts with the group's accuracy,
    so the curve does not depend on the order the data came in.
    """
    n = len(score)
    if n == 0:
        raise UserError("accuracy-coverage curve of an empty set: the set has no questions")
    uniq, inverse = np.unique(-score, return_inverse=True)  # groups in descending score
    group_n = np.bincount(inverse, minlength=len(uniq)).astype(float)
    group_c = np.bincount(inverse, weights=correct.astype(float), minlength=len(uniq))
    n_before = np.concatenate([[0.0], np.cumsum(group_n)[:-1]])
    c_before = np.concatenate([[0.0], np.cumsum(group_c)[:-1]])
    kept = np.arange(1, n + 1, dtype=float)
    g = np.searchsorted(np.cumsum(group_n), kept, side="left")  # group holding the i-th answer
    hits = c_before[g] + (kept - n_before[g]) * group_c[g] / group_n[g]
    return kept / n, hits / kept


def auacc(score: Float[np.ndarray, " n"], correct: Bool[np.ndarray, " n"]) -> float:
    """Area under the accuracy-coverage curve (its mean over coverages 1/n .. n/n)."""
    return float(accuracy_coverage(score, correct)[1].mean())


# ---------------------------------------------------------------------------------------------
# Answers by beam search


@dataclass(frozen=True)
class Candidate:
    """One beam: its tokens (up to, not including, <eos>), summed log-prob and scored length."""

    tokens: tuple[int, ...]
    logprob: float
    length: int  # generated tokens scored, <eos> included when the beam stopped early

    @property
    def normalized(self) -> float:
        """Length-normalised log-likelihood (mean log-prob per generated token)."""
        return self.logprob / max(1, self.length)


@torch.no_grad()
def beam_search(
    model: Callable[[Tensor], Tensor],
    prompts: list[tuple[int, ...]],
    n_new: list[int],
    beams: int,
    batch_size: int = BATCH,
    progress: bool = False,
) -> list[list[Candidate]]:
    """Beam search of `n_new[i]` tokens after each prompt: `beams` candidates each, best first.

    Beams are ranked by summed log-probability (all candidates of one question have the same
    number of steps). A beam that emits <eos> is finished: it continues with <eos> at no cost,
    the convention of `interp.evaluate.greedy_generate`, so one beam is greedy decoding. Prompts
    are grouped by (prompt length, n_new) so no padding enters a prompt.
    """
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (p, n) in enumerate(zip(prompts, n_new, strict=True)):
        groups[(len(p), n)].append(i)
    out: list[list[Candidate]] = [[] for _ in prompts]
    chunks = [
        (n, idxs[s : s + batch_size])
        for (_, n), idxs in sorted(groups.items())
        for s in range(0, len(idxs), batch_size)
    ]
    for n, chunk in tqdm(chunks, desc="beam search", disable=not progress):
        seqs = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)[:, None]
        b, p_len = seqs.shape[0], seqs.shape[2]
        score = torch.zeros(b, 1, device=device)
        done = torch.zeros(b, 1, dtype=torch.bool, device=device)
        length = torch.zeros(b, 1, dtype=torch.long, device=device)
        for _ in range(n):
            nb, t = seqs.shape[1], seqs.shape[2]
            logp = model(seqs.reshape(b * nb, t))[:, -1].log_softmax(-1).float()
            v = logp.shape[-1]
            logp = logp.reshape(b, nb, v)
            finished = torch.full_like(logp, -math.inf)
            finished[..., EOS] = 0.0
            logp = torch.where(done[..., None], finished, logp)
            total = (score[..., None] + logp).reshape(b, nb * v)  # (batch, beams x vocab)
            top, flat = total.topk(min(beams, nb * v), dim=-1)
            parent, tok = flat // v, flat % v
            kept = seqs.gather(1, parent[..., None].expand(-1, -1, t))
            seqs = torch.cat([kept, tok[..., None]], dim=2)
            length = length.gather(1, parent) + (~done.gather(1, parent)).long()
            done = done.gather(1, parent) | (tok == EOS)
            score = top
        gen = seqs[:, :, p_len:].tolist()
        for row, i in enumerate(chunk):
            for k in range(seqs.shape[1]):
                g = gen[row][k]
                g = g[: g.index(EOS)] if EOS in g else g
                out[i].append(Candidate(tuple(g), float(score[row, k]), int(length[row, k])))
    return out


# ---------------------------------------------------------------------------------------------
# Self-evaluation with a learned soft prompt


def _token_embedding(net: torch.nn.Module) -> Any:
    """The token embedding of the TL-native model (`model.original_model.tok_embed`, wrapped by
    the bridge as an EmbeddingBridge): called on ids it embeds them; `.weight` is the table."""
    return net.tok_embed


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Turn off gradients of `module`'s parameters inside the block, restoring them after."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def soft_prompt_logits(
    net: torch.nn.Module,
    soft: Float[Tensor, "n_soft d_model"],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at the last soft position of "tokens[:length] + soft prompt", per row.

    `net` is the TL-native model (`model.original_model`): its `forward(inputs_embeds=...)` adds
    the positional embeddings itself (or applies rotary in attention), so the soft vectors sit
    at positions length .. length + n_soft - 1 exactly as token embeddings would. Rows are
    right-padded; under the causal mask the padding after the soft prompt is never read.
    """
    n_soft = soft.shape[0]
    b, t = tokens.shape
    width = int(lengths.max()) + n_soft
    ids = torch.zeros(b, width, dtype=torch.long, device=tokens.device)
    ids[:, : min(t, width)] = tokens[:, :width]
    rel = torch.arange(width, device=tokens.device)[None] - lengths[:, None]  # (batch, width)
    is_soft = (rel >= 0) & (rel < n_soft)
    tok_embeds = _token_embedding(net)(ids)
    embeds = torch.where(is_soft[..., None], soft[rel.clamp(0, n_soft - 1)], tok_embeds)
    logits = net(inputs_embeds=embeds)  # (batch, width, d_vocab)
    return logits[torch.arange(b, device=tokens.device), lengths + n_soft - 1]


def self_eval_margin(
    net: torch.nn.Module,
    soft: Float[Tensor, "n_soft d_model"],
    tokens: Int[Tensor, "batch pos"],
    lengths: Int[Tensor, " batch"],
    token_ids: tuple[int, int],
) -> Float[Tensor, " batch"]:
    """logit(correct token) - logit(incorrect token) at the last soft position.

    log P(correct) = logsigmoid(margin): the softmax over the two tokens only.
    """
    last = soft_prompt_logits(net, soft, tokens, lengths)
    return last[:, token_ids[0]] - last[:, token_ids[1]]


# Prefix caching. Under the causal mask "question + answer" never reads the soft prompt that
# follows it, so its keys and values at every layer are the same in every training step. They
# are computed once; each step then runs only the n_soft soft positions through the model (about
# a fifth of the work of the whole sequence). Written against the TL-native model's own modules
# (`interp.model`'s raw-module helpers); `tests/test_selective.py` checks it against the plain
# forward pass, and models those helpers do not cover fall back to that pass.


@dataclass(frozen=True)
class PrefixCache:
    """Per-layer keys and values of right-padded "question + answer" rows (no gradient)."""

    keys: list[Float[Tensor, "n kv_heads pos d_head"]]
    values: list[Float[Tensor, "n kv_heads pos d_head"]]
    lengths: Int[Tensor, " n"]


@torch.no_grad()
def prefix_cache(net: Any, seqs: list[tuple[int, ...]], batch_size: int = BATCH) -> PrefixCache:
    """Keys and values of every row at every layer, padded to the longest row."""
    device = next(net.parameters()).device
    width = max(len(s) for s in seqs)
    keys: list[list[Tensor]] = [[] for _ in net.layers]
    values: list[list[Tensor]] = [[] for _ in net.layers]
    causal = torch.triu(torch.ones(width, width, dtype=torch.bool, device=device), diagonal=1)
    for s in range(0, len(seqs), batch_size):
        toks, _ = pad_batch(
            [tuple(x) + (0,) * (width - len(x)) for x in seqs[s : s + batch_size]], device=device
        )
        positions = torch.arange(width, device=device).expand(toks.shape[0], -1)
        h = embed_positions(net, raw(net.tok_embed)(toks), positions)
        for i, block in enumerate(net.layers):
            att = raw(block.attn)
            q, k, v = qkv(att, raw(block.ln1)(h), positions)
            keys[i].append(k)
            values[i].append(v)
            h = h + attend(att, q, k, v, causal, empty_rows=False)
            h = h + mlp(block, h)
    lengths = torch.tensor([len(x) for x in seqs], device=device)
    return PrefixCache([torch.cat(k) for k in keys], [torch.cat(v) for v in values], lengths)


def cached_soft_logits(
    net: Any,
    soft: Float[Tensor, "n_soft d_model"],
    cache: PrefixCache,
    rows: Int[Tensor, " batch"],
) -> Float[Tensor, "batch d_vocab"]:
    """`soft_prompt_logits` for cached rows: only the soft positions are computed."""
    n_soft, device = soft.shape[0], soft.device
    lengths = cache.lengths[rows]
    b, width = len(rows), cache.keys[0].shape[2]
    positions = lengths[:, None] + torch.arange(n_soft, device=device)[None]
    h = embed_positions(net, soft[None].expand(b, -1, -1), positions)
    pad = torch.arange(width, device=device)[None] >= lengths[:, None]  # (batch, width)
    later = torch.triu(torch.ones(n_soft, n_soft, dtype=torch.bool, device=device), diagonal=1)
    blocked = torch.cat(
        [pad[:, None, None, :].expand(b, 1, n_soft, width), later.expand(b, 1, n_soft, n_soft)],
        dim=-1,
    )
    for i, block in enumerate(net.layers):
        att = raw(block.attn)
        q, k, v = qkv(att, raw(block.ln1)(h), positions)
        k = torch.cat([cache.keys[i][rows], k], dim=2)
        v = torch.cat([cache.values[i][rows], v], dim=2)
        h = h + attend(att, q, k, v, blocked)
        h = h + mlp(block, h)
    return raw(net.head)(raw(net.ln_out)(h[:, -1]))


def _balanced_loss(
    margin: Float[Tensor, " batch"], label: Bool[Tensor, " batch"], w_pos: float
) -> Tensor:
    """Cross-entropy of P(correct) = sigmoid(margin), classes weighted to count equally."""
    weight = torch.where(label, torch.full_like(margin, w_pos), torch.full_like(margin, 1 - w_pos))
    loss = F.binary_cross_entropy_with_logits(margin, label.float(), reduction="none")
    return (weight * loss).sum() / weight.sum()


@dataclass(frozen=True)
class SelfEvalFit:
    """A trained soft prompt and how its training went (losses are class-balanced)."""

    soft: Float[Tensor, "n_soft d_model"]
    train_loss: list[float]  # [0] before any step, then the mean batch loss of each epoch
    val_loss: list[float]  # per epoch, [0] before any step
    best_epoch: int


class _Margins:
    """Self-evaluation margins of a fixed list of rows, through the prefix cache when it applies
    (computed on first use) and the plain forward pass otherwise."""

    def __init__(
        self, net: torch.nn.Module, seqs: list[tuple[int, ...]], token_ids: tuple[int, int]
    ) -> None:
        self.net, self.seqs, self.token_ids = net, seqs, token_ids
        self.cache: PrefixCache | None = None
        self.use_cache = supports_raw(net) and len(seqs) > 0

    def __call__(self, soft: Tensor, rows: list[int] | None = None) -> Float[Tensor, " n"]:
        rows = list(range(len(self.seqs))) if rows is None else rows
        device = soft.device
        if self.use_cache:
            if self.cache is None:
                self.cache = prefix_cache(self.net, self.seqs)
            out = [
                cached_soft_logits(
                    self.net, soft, self.cache, torch.tensor(rows[s : s + BATCH], device=device)
                )
                for s in range(0, len(rows), BATCH)
            ]
            logits = torch.cat(out) if out else torch.zeros(0, 2, device=device)
            return logits[:, self.token_ids[0]] - logits[:, self.token_ids[1]]
        margins = []
        for s in range(0, len(rows), BATCH):
            toks, lens = pad_batch([self.seqs[i] for i in rows[s : s + BATCH]], device=device)
            margins.append(self_eval_margin(self.net, soft, toks, lens, self.token_ids))
        return torch.cat(margins) if margins else torch.zeros(0, device=device)


def _margins(
    net: torch.nn.Module, soft: Tensor, seqs: list[tuple[int, ...]], token_ids: tuple[int, int]
) -> Float[Tensor, " n"]:
    return _Margins(net, seqs, token_ids)(soft)


def train_self_eval(
    net: torch.nn.Module,
    train: tuple[list[tuple[int, ...]], np.ndarray],
    val: tuple[list[tuple[int, ...]], np.ndarray],
    token_ids: tuple[int, int],
    opts: SelectiveOptions,
    seed: int,
    progress: bool = False,
    margins: tuple[_Margins, _Margins] | None = None,
) -> SelfEvalFit:
    """Learn `opts.n_soft` soft-prompt vectors (model frozen) on labelled "question + answer" rows.

    Adam on the class-balanced cross-entropy; early stopping on the validation loss, keeping
    the best soft prompt. The soft prompt starts as the embeddings of random vocabulary tokens.
    `margins` (train, validation) lets fits on the same rows share one prefix cache.
    """
    seqs, labels = train
    vseqs, vlabels = val
    if labels.all() or not labels.any():
        raise UserError(
            "the training split's candidates are all correct or all wrong: the self-"
            "evaluation has nothing to learn; use more --beams or another --seed"
        )
    device = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    table = _token_embedding(net).weight
    init_ids = torch.randint(5, table.shape[0], (opts.n_soft,), generator=g)
    soft = table[init_ids.to(device)].detach().clone().requires_grad_(True)
    y = torch.tensor(labels, dtype=torch.bool, device=device)
    vy = torch.tensor(vlabels, dtype=torch.bool, device=device)
    w_pos = float(1 - labels.mean())  # each class carries half of the weight
    vw_pos = float(1 - vlabels.mean()) if 0 < vlabels.mean() < 1 else 0.5
    opt = torch.optim.Adam([soft], lr=opts.lr)
    train_m, val_m = margins or (_Margins(net, seqs, token_ids), _Margins(net, vseqs, token_ids))

    def validate() -> float:
        with torch.no_grad():
            return float(_balanced_loss(val_m(soft), vy, vw_pos))

    with frozen(net):
        with torch.no_grad():
            tr = float(_balanced_loss(train_m(soft), y, w_pos))
        va = validate()
        train_loss, val_loss = [tr], [va]
        best, best_soft, best_epoch = va, soft.detach().clone(), 0
        bar = tqdm(range(1, opts.max_epochs + 1), desc="self-evaluation", disable=not progress)
        for epoch in bar:
            perm = torch.randperm(len(seqs), generator=g).tolist()
            total = 0.0  # the epoch's training loss, weighted by batch size (no second pass)
            for s in range(0, len(perm), opts.batch_size):
                idx = perm[s : s + opts.batch_size]
                loss = _balanced_loss(train_m(soft, idx), y[idx], w_pos)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            tr, va = total / len(perm), validate()
            train_loss.append(tr)
            val_loss.append(va)
            bar.set_postfix(train=f"{tr:.3f}", val=f"{va:.3f}")
            if va < best - 1e-6:
                best, best_soft, best_epoch = va, soft.detach().clone(), epoch
            elif epoch - best_epoch >= opts.patience:
                break
    return SelfEvalFit(best_soft, train_loss, val_loss, best_epoch)


# ---------------------------------------------------------------------------------------------
# Linear probe on the final hidden state


@torch.no_grad()
def final_hidden(
    model: TransformerBridge, seqs: list[tuple[int, ...]], batch_size: int = BATCH
) -> Float[np.ndarray, "n d_model"]:
    """The last block's resid_post at the last token of each sequence (the last answer token)."""
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(seqs), batch_size):
        toks, lens = pad_batch(seqs[s : s + batch_size], device=device)
        _, cache = model.run_with_cache(toks, names_filter=name)
        out.append(cache[name][torch.arange(len(lens), device=device), lens - 1].float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def fit_probe(
    x: Float[np.ndarray, "n d"],
    y: Bool[np.ndarray, " n"],
    xv: Float[np.ndarray, "m d"],
    yv: Bool[np.ndarray, " m"],
) -> tuple[Any, float]:
    """Standardised, class-balanced logistic regression; C picked on validation log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best: tuple[float, Any, float] | None = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        )
        clf.fit(x, y)
        loss = log_loss(yv, clf.predict_proba(xv)[:, 1], labels=[False, True]) if len(yv) else 0.0
        if best is None or loss < best[0]:
            best = (loss, clf, c)
    assert best is not None
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------
# The analysis


def split_people(
    prompts: list[Example], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Seeded split of the people into train / val / test, within each subset (disjoint)."""
    by_subset: dict[str, list[int]] = defaultdict(list)
    for pid, subset in sorted({(e.person, e.subset) for e in prompts}):
        by_subset[subset].append(pid)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for subset, people in sorted(by_subset.items()):
        people = list(rng.permutation(people))
        n_val = max(1, round(len(people) * val_fraction))
        n_test = max(1, round(len(people) * test_fraction))
        if len(people) - n_val - n_test < 1:
            raise UserError(
                f"subset {subset} has {len(people)} people, too few to split into "
                "train / val / test: use a world with more people"
            )
        out["test"] += people[:n_test]
        out["val"] += people[n_test : n_test + n_val]
        out["train"] += people[n_test + n_val :]
    return {k: sorted(int(p) for p in v) for k, v in out.items()}


def _vocab_id(ds: FactDataset, text: str, flag: str) -> int:
    ids = encode(ds.tokenizer, text)
    if len(ids) != 1 or ids[0] == ds.tokenizer.token_to_id("<unk>"):
        raise UserError(
            f"{flag} {text!r} is not one vocabulary token: pick a word of the world, "
            "e.g. '.' or '?'"
        )
    return ids[0]


def _set_masks(questions: list[Example]) -> dict[str, np.ndarray]:
    d = np.array([e.direction for e in questions])
    return {"mixed": np.ones(len(d), dtype=bool), "forward": d == "same", "reverse": d == "reverse"}


def _metrics(
    scores: dict[str, np.ndarray], correct: np.ndarray, masks: dict[str, np.ndarray]
) -> tuple[dict[str, float], dict[str, str], dict[str, np.ndarray]]:
    """Summary numbers, reasons for NaNs, and the curves, for every score on every set."""
    summary: dict[str, float] = {}
    undefined: dict[str, str] = {}
    curves: dict[str, np.ndarray] = {}
    for set_name, mask in masks.items():
        c = correct[mask]
        summary[f"n_{set_name}"] = float(mask.sum())
        summary[f"accuracy_{set_name}"] = float(c.mean()) if mask.any() else float("nan")
        if not mask.any():
            undefined[f"{set_name}"] = "no test questions in this set"
            continue
        curves[f"coverage_{set_name}"] = accuracy_coverage(np.zeros(int(mask.sum())), c)[0]
        for name, s in scores.items():
            summary[f"auroc_{name}_{set_name}"] = auroc(s[mask], c)
            summary[f"auacc_{name}_{set_name}"] = auacc(s[mask], c)
            curves[f"accuracy_{set_name}_{name}"] = accuracy_coverage(s[mask], c)[1]
            if math.isnan(summary[f"auroc_{name}_{set_name}"]):
                undefined[f"auroc_{name}_{set_name}"] = (
                    f"all {int(mask.sum())} {set_name} answers are "
                    f"{'correct' if c.all() else 'wrong'}: no ranking to judge"
                )
    return summary, undefined, curves


@dataclass(frozen=True)
class Rows:
    """Labelled "question + candidate answer" token rows of one split."""

    seqs: list[tuple[int, ...]]
    correct: Bool[np.ndarray, " n"]
    question: list[int]  # index of each row's question


@dataclass(frozen=True)
class Answers:
    """Every question with its beam candidates (best first) and their exact-match labels."""

    questions: list[Example]
    candidates: list[list[Candidate]]
    correct: list[list[bool]]

    def rows(self, people: list[int], top_only: bool) -> Rows:
        """Rows of the questions about `people`: all candidates, or only the chosen (top) one."""
        keep = set(people)
        seqs, ys, qs = [], [], []
        for q, (e, cs, ls) in enumerate(
            zip(self.questions, self.candidates, self.correct, strict=True)
        ):
            if e.person in keep:
                for c, y in list(zip(cs, ls, strict=True))[: 1 if top_only else None]:
                    seqs.append(tuple(e.prompt) + c.tokens)
                    ys.append(y)
                    qs.append(q)
        return Rows(seqs, np.array(ys, dtype=bool), qs)


def answer_questions(
    net: torch.nn.Module,
    ds: FactDataset,
    questions: list[Example],
    beams: int,
    progress: bool = False,
) -> Answers:
    """Beam-search each question for as many tokens as its answer has; label by exact match."""
    cands = beam_search(
        raw_forward(net),
        [e.prompt for e in questions],
        [len(e.answer) for e in questions],
        beams,
        progress=progress,
    )
    label = [
        [is_exact_match(ds.text(c.tokens), ds.text(e.answer), match_rule(ds)) for c in cs]
        for cs, e in zip(cands, questions, strict=True)
    ]
    return Answers(questions, cands, label)


def beam_scores(candidates: list[list[Candidate]]) -> dict[str, np.ndarray]:
    """`likelihood` (top beam, length-normalised) and `entropy` (minus the beams' entropy)."""
    ll = np.array([cs[0].normalized for cs in candidates], dtype=float)
    neg_entropy = []
    for cs in candidates:
        lp = np.array([c.logprob for c in cs])
        p = np.exp(lp - lp.max())
        p /= p.sum()  # beam probabilities renormalised over the k beams
        neg_entropy.append(float((p * np.log(np.clip(p, 1e-300, None))).sum()))
    return {"likelihood": ll, "entropy": np.array(neg_entropy)}


def choose_alpha(
    likelihood: Float[np.ndarray, " n"],
    self_eval: Float[np.ndarray, " n"],
    correct: Bool[np.ndarray, " n"],
) -> tuple[float, list[float | None], str]:
    """ASPIRE's alpha: the grid value with the best validation AUROC (smallest on ties).

    Returns (alpha, AUROC per grid value, reason when undefined); 0.5 when validation has one class.
    """
    grid = np.linspace(0, 1, 21)
    val = np.array([auroc((1 - a) * likelihood + a * self_eval, correct) for a in grid])
    curve = [None if math.isnan(v) else float(v) for v in val]
    if np.isnan(val).all():
        return 0.5, curve, "validation answers are all correct or all wrong: alpha left at 0.5"
    return float(grid[np.nanargmax(val)]), curve, ""


def run_analysis(run: Run, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Selective prediction on `run`: write analysis/selective.json and .npz; return the JSON.

    `options` are the fields of `SelectiveOptions` (beams=4, templates="train", ...).
    """
    unknown = set(options) - set(SelectiveOptions.__dataclass_fields__)
    if unknown:
        raise UserError(
            f"unknown selective option(s) {sorted(unknown)}: see `interp selective --help`"
        )
    opts = SelectiveOptions(**options)
    asked_seed = opts.seed
    opts = replace(opts, seed=run_seed(run.config, opts.seed))  # item draws differ per run
    ds, model = run.dataset, run.model
    opts.validate(ds.d_vocab)
    model.eval()
    net = model.original_model  # same parameters, no hook dispatch
    token_ids = (
        _vocab_id(ds, opts.correct_token, "--correct-token"),
        _vocab_id(ds, opts.incorrect_token, "--incorrect-token"),
    )
    if token_ids[0] == token_ids[1]:
        raise UserError("--correct-token and --incorrect-token must differ")
    questions = [e for e in ds.prompts if opts.templates in ("all", e.templates)]
    if not questions:
        raise UserError(f"the run has no test prompts with --templates {opts.templates}")
    longest = max(len(e.tokens) for e in questions) + opts.n_soft
    if longest > model.cfg.n_ctx:
        raise UserError(
            f"question + answer + {opts.n_soft} soft tokens need {longest} positions "
            f"but the model has n_ctx={model.cfg.n_ctx}: lower --n-soft"
        )
    people = split_people(questions, opts.val_fraction, opts.test_fraction, opts.seed)

    # 1. Answers: k beams per question, each labelled by exact match.
    answers = answer_questions(net, ds, questions, opts.beams, progress)
    train, val = answers.rows(people["train"], False), answers.rows(people["val"], False)
    val_top, test = answers.rows(people["val"], True), answers.rows(people["test"], True)
    shuffled = np.random.default_rng(opts.seed + 1).permutation(train.correct)

    # 2. Self-evaluation, and the linear probe on the final hidden state.
    margins = (_Margins(net, train.seqs, token_ids), _Margins(net, val.seqs, token_ids))
    x_train, x_val, x_test = (final_hidden(model, r.seqs) for r in (train, val, test))
    # the real labels, and the shuffled-label controls: same training, same validation labels
    variants = {"": train.correct, **({"_shuffled": shuffled} if opts.controls else {})}
    fits, probes = {}, {}
    for suffix, y in variants.items():
        fits[f"self_eval{suffix}"] = train_self_eval(
            net, (train.seqs, y), (val.seqs, val.correct), token_ids, opts, opts.seed, progress,
            margins,
        )  # fmt: skip
        probes[f"probe{suffix}"] = fit_probe(x_train, y, x_val, val.correct)

    def log_p_correct(fit: SelfEvalFit, seqs: list[tuple[int, ...]]) -> np.ndarray:
        with torch.no_grad():
            margin = _margins(net, fit.soft, seqs, token_ids)
        return F.logsigmoid(margin).double().cpu().numpy()

    # 3. Scores of the chosen answers; alpha on validation.
    alpha, val_auroc, alpha_reason = choose_alpha(
        beam_scores([answers.candidates[q] for q in val_top.question])["likelihood"],
        log_p_correct(fits["self_eval"], val_top.seqs),
        val_top.correct,
    )
    scores = beam_scores([answers.candidates[q] for q in test.question])
    scores["probe"] = probes["probe"][0].decision_function(x_test)
    scores["self_eval"] = log_p_correct(fits["self_eval"], test.seqs)
    scores["aspire"] = (1 - alpha) * scores["likelihood"] + alpha * scores["self_eval"]
    scores["oracle"] = test.correct.astype(float)
    if opts.controls:
        scores["probe_shuffled"] = probes["probe_shuffled"][0].decision_function(x_test)
        scores["self_eval_shuffled"] = log_p_correct(fits["self_eval_shuffled"], test.seqs)

    # 4. Metrics per question set.
    test_q = [questions[q] for q in test.question]
    summary, undefined, curves = _metrics(scores, test.correct, _set_masks(test_q))
    summary["alpha"] = alpha
    if alpha_reason:
        undefined["alpha"] = alpha_reason
    fit = fits["self_eval"]
    summary["self_eval_train_loss_start"] = fit.train_loss[0]
    summary["self_eval_train_loss_best"] = fit.train_loss[fit.best_epoch]
    summary["self_eval_val_loss_start"] = fit.val_loss[0]
    summary["self_eval_val_loss_best"] = fit.val_loss[fit.best_epoch]
    cells = sorted({(e.subset, e.direction) for e in test_q})
    result: dict[str, Any] = {
        "summary": summary,
        "options": asdict(opts) | {"seed": asked_seed},  # as asked: an offset on the run seed
        "method": "ASPIRE-style selective prediction (Chen et al. 2023): beam answers, "
        "learned soft-prompt self-evaluation, likelihood/entropy/probe baselines",
        "scores": list(SCORES),
        "controls": [c for c in CONTROLS if c in scores],
        "sets": {
            "mixed": "all test questions",
            "forward": "direction 'same'",
            "reverse": "direction 'reverse'",
        },
        "undefined": undefined,
        "tokens": {
            "correct": [opts.correct_token, token_ids[0]],
            "incorrect": [opts.incorrect_token, token_ids[1]],
            "score": "log softmax over the two logits at the last soft position",
        },
        "splits": {
            "people": people,
            "n_questions": {s: len(answers.rows(people[s], True).seqs) for s in SPLITS},
            "n_train_candidates": len(train.seqs),
            "train_candidate_accuracy": float(train.correct.mean()),
        },
        "test_accuracy_by_subset_direction": {
            f"{s}_{d}": float(
                test.correct[[(e.subset, e.direction) == (s, d) for e in test_q]].mean()
            )
            for s, d in cells
        },
        "alpha": {
            "chosen": alpha,
            "grid": np.linspace(0, 1, 21).tolist(),
            "val_auroc": val_auroc,
            "rule": "largest validation AUROC (mixed), smallest alpha on ties",
        },
        "self_eval": {
            k: {"train_loss": f.train_loss, "val_loss": f.val_loss, "best_epoch": f.best_epoch}
            for k, f in fits.items()
        },
        "probe": {
            "hook": f"blocks.{model.cfg.n_layers - 1}.hook_resid_post",
            "position": "last answer token",
            "C": probes["probe"][1],
        },
    }
    arrays = {
        **curves,
        "correct": test.correct,
        "direction": np.array([e.direction for e in test_q]),
        "subset": np.array([e.subset for e in test_q]),
        "person": np.array([e.person for e in test_q]),
        **{f"score_{k}": v for k, v in scores.items()},
    }
    out = run.analysis_dir()
    tmp = out / f"{NAME}.tmp.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(out / f"{NAME}.npz")
    write_json(out / f"{NAME}.json", result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The AUROC / AUACC table (scores x question sets), with accuracy and the controls."""
    s = result["summary"]
    names = [*result["scores"], *result["controls"]]
    lines = [f"{'score':<20}" + "".join(f"{st + ' AUROC':>15}{st + ' AUACC':>15}" for st in SETS)]
    lines.append(
        f"{'accuracy (n)':<20}"
        + "".join(
            f"{'':>15}{s[f'accuracy_{st}']:>9.3f} ({int(s[f'n_{st}'])})".ljust(30) for st in SETS
        )
    )
    for name in names:
        lines.append(
            f"{name:<20}"
            + "".join(
                f"{s.get(f'auroc_{name}_{st}', float('nan')):>15.3f}"
                f"{s.get(f'auacc_{name}_{st}', float('nan')):>15.3f}"
                for st in SETS
            )
        )
    lines.append(
        f"chance: AUROC 0.5, AUACC = accuracy. ASPIRE alpha (validation) = {s['alpha']:.2f}"
    )
    for why in sorted(set(result["undefined"].values())):
        lines.append(f"nan: {why}")
    return "\n".join(lines)
