"""Training from scratch: AdamW, linear warm-up then cosine decay, gradient clipping.

Determinism is the design constraint. Everything random is a function of (seed, step):
initialisation from `train.seed`, the batch order from a permutation per epoch seeded by
(seed, epoch), and any masking from a generator seeded by (seed, step). A checkpoint therefore
needs only the weights, the AdamW moments and the step, and `--resume` from the latest
checkpoint reproduces an uninterrupted run bitwise on the CPU.

The loop calls `interp.model.raw_forward(model)`: the TL-native model's arithmetic on the same
parameters without the bridge's hook dispatch; the instruments use the bridge.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from interp.config import RunConfig, TrainConfig
from interp.data.dataset import Example, FactDataset, pad_batch
from interp.data.tokenizer import save_tokenizer
from interp.errors import UserError
from interp.model import build_model, load_weights, raw_forward, resolve_device, save_weights
from interp.objectives import get_objective
from interp.runs import (
    build_dataset,
    check_fits,
    prepare_run_dir,
    read_json,
    remove_run_dir,
    versions,
    write_json,
)

LOG_EVERY = 10


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: linear warm-up to `lr`, cosine decay to `lr * min_lr_ratio`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not biases, norms), as in nanoGPT."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


def batch_indices(step: int, n_docs: int, batch_size: int, seed: int) -> torch.Tensor:
    """Document indices of batch `step`: a fresh permutation per epoch, from (seed, epoch)."""
    per_epoch = max(1, n_docs // batch_size)
    epoch, i = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n_docs, generator=g)
    if batch_size >= n_docs:
        return perm
    return perm[i * batch_size : (i + 1) * batch_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 7_919 + step * 104_729 + 1)


def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    tensors = {}
    for idx, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"{idx}.{k}"] = (
                v.detach().cpu().contiguous() if torch.is_tensor(v) else torch.tensor(v)
            )
    save_file(tensors, str(path))


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = load_file(str(path))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    sd = opt.state_dict()
    sd["state"] = state
    opt.load_state_dict(sd)


def save_checkpoint(
    run_dir: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> None:
    """Write checkpoints/step_N atomically (temp dir, then rename); AdamW state in the latest."""
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(exist_ok=True)
    final = ckdir / f"step_{step:06d}"
    tmp = ckdir / f".tmp_step_{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model, tmp / "model.safetensors")
    _save_optimizer(opt, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in ckdir.glob("step_*"):
        if old != final and (old / "optimizer.safetensors").exists():
            (old / "optimizer.safetensors").unlink()
            (old / "state.json").unlink(missing_ok=True)


def latest_resumable(run_dir: Path) -> int | None:
    ckdir = run_dir / "checkpoints"
    steps = (
        sorted(
            int(p.name.split("_")[1])
            for p in ckdir.glob("step_*")
            if (p / "optimizer.safetensors").exists()
        )
        if ckdir.is_dir()
        else []
    )
    return steps[-1] if steps else None


def fit(
    model: TransformerBridge,
    docs: list[Example],
    cfg: TrainConfig,
    *,
    run_dir: Path | None = None,
    start_step: int = 0,
    dataset: FactDataset | None = None,
    progress: bool = True,
    optimizer_state: Path | None = None,
) -> list[dict[str, int | float]]:
    """Train `model` in place on `docs` from `start_step` to `cfg.steps`; return the log lines.

    `docs` are the dataset's documents; the objective adds its own (reverse training adds the
    reversed copies) from `dataset`, which an objective that adds documents therefore needs:
    without it `fit` refuses rather than quietly training on the forward documents alone.
    With `run_dir`, writes checkpoints every `cfg.checkpoint_every` steps and appends to
    `train_log.jsonl`. With `dataset`, logs greedy exact match every `cfg.eval_every` steps.
    """
    objective = get_objective(cfg.objective)
    if dataset is not None:
        docs = objective.documents(docs, dataset)
    elif objective.adds_documents:
        raise UserError(
            f"objective {cfg.objective!r} trains on documents it builds from the dataset: "
            "pass dataset= to fit"
        )
    device = next(model.parameters()).device
    tokens, lengths = pad_batch([d.tokens for d in docs], device=device)
    net = raw_forward(model)  # same parameters and function, no hook dispatch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(model, cfg)
    if optimizer_state is not None:
        _load_optimizer(opt, optimizer_state)
    model.train()
    log: list[dict[str, Any]] = []
    log_file = open(run_dir / "train_log.jsonl", "a") if run_dir else None  # noqa: SIM115
    bar = tqdm(
        range(start_step, cfg.steps),
        initial=start_step,
        total=cfg.steps,
        desc=f"train {cfg.objective}",
        disable=not progress,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    try:
        for step in bar:
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = batch_indices(step, len(docs), cfg.batch_size, cfg.seed)
            b_tokens, b_lengths = tokens[idx.to(device)], lengths[idx.to(device)]
            width = int(b_lengths.max())
            loss = objective.loss(
                net, b_tokens[:, :width], b_lengths, step_generator(cfg.seed, step)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            done = step + 1
            if done % LOG_EVERY == 0 or done == cfg.steps:
                line: dict[str, Any] = {
                    "step": done,
                    "loss": loss.item(),
                    "lr": lr,
                    "elapsed_s": round(time.perf_counter() - t0, 3),
                }
                if dataset is not None and cfg.eval_every and done % cfg.eval_every == 0:
                    from interp.evaluate import quick_exact_match

                    model.eval()
                    line.update(quick_exact_match(model, dataset))
                    model.train()
                log.append(line)
                bar.set_postfix(loss=f"{line['loss']:.3f}")
                if log_file:
                    log_file.write(json.dumps(line) + "\n")
                    log_file.flush()
            if run_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save_checkpoint(run_dir, done, model, opt)
    finally:
        if log_file:
            log_file.close()
        model.eval()
    return log


def _truncate_log(run_dir: Path, step: int) -> None:
    path = run_dir / "train_log.jsonl"
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(k + "\n" for k in keep))


def train_run(
    cfg: RunConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
) -> Path:
    """Train a run into directory `out` (see interp.runs for its layout) and evaluate it.

    Every check on the input happens before anything is written. With `resume`, the config is
    the run's own config.json and training continues from the latest checkpoint.
    """
    out = Path(out)
    mode = prepare_run_dir(out, resume, overwrite)
    if mode == "resume":
        from interp.config import config_from_json

        saved = config_from_json(read_json(out / "config.json"))
        if cfg is not None and cfg.hash() != saved.hash():
            raise UserError(
                f"the config given differs from {out}/config.json: resume with "
                "no --preset/--config/--set, or train a new run"
            )
        cfg = saved
    if cfg is None:
        raise UserError("a new run needs a config: pass --preset or --config")
    dataset = build_dataset(cfg)
    check_fits(cfg, dataset)
    device = resolve_device(cfg.train.device)
    model = build_model(cfg.model, dataset.d_vocab, cfg.train.seed, device, dataset.tokenizer)

    start, opt_state = 0, None
    if mode == "resume":
        if (out / "model.safetensors").is_file():
            print(f"{out} is already finished")
            return out
        step = latest_resumable(out)
        if step is not None:
            ck = out / "checkpoints" / f"step_{step:06d}"
            load_weights(model, ck / "model.safetensors")
            start, opt_state = step, ck / "optimizer.safetensors"
        _truncate_log(out, start)
    else:
        if mode == "overwrite":
            remove_run_dir(out)
        tmp = out.with_name(out.name + ".tmp-init")
        remove_run_dir(tmp)
        tmp.mkdir(parents=True)
        write_json(tmp / "config.json", cfg.to_dict())
        write_json(tmp / "versions.json", versions())
        save_tokenizer(dataset.tokenizer, tmp / "tokenizer.json")
        if out.exists():
            out.rmdir()  # an empty directory the user made
        os.replace(tmp, out)

    fit(
        model,
        dataset.train_docs,
        cfg.train,
        run_dir=out,
        start_step=start,
        dataset=dataset,
        progress=progress,
        optimizer_state=opt_state,
    )
    save_weights(model, out / "model.safetensors")
    if evaluate:
        from interp.evaluate import evaluate_run

        evaluate_run(out, model=model, dataset=dataset, config=cfg, progress=progress)
    return out
