"""Training from scratch: AdamW, linear warm-up then cosine decay, gradient clipping.

Determinism is the design constraint. Everything random is a function of (seed, step):
initialisation from `train.seed`, the batch order from a permutation per epoch seeded by
(seed, epoch), and any masking from a generator seeded by (seed, step). A checkpoint therefore
needs only the weights, the AdamW moments and the step, and `--resume` from the latest
checkpoint reproduces an uninterrupted run bitwise on the CPU.

Bitwise holds at a fixed number of torch threads (CPU kernels split their sums by thread, so 1
and 2 threads differ in the last bits). A run records the count it was started with in its
marker (`interp_run.json`, with the config hash), and `--resume` trains and evaluates with that
count whatever the resuming process has; it refuses a config.json edited after the start.

Resume checks the whole run folder before it changes anything, then finishes whatever stage was
interrupted: training from the latest checkpoint, the final weights (rebuilt when truncated),
the evaluation (when the weights exist without metrics), a missing tokenizer.json.

The loop calls `interp.model.raw_forward(model)`: the TL-native model's arithmetic on the same
parameters without the bridge's hook dispatch; the instruments use the bridge.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

import interp.evaluate as evaluation  # as a module: tests stand in for its functions
from interp.config import RunConfig, TrainConfig, check_device, config_from_json
from interp.data.dataset import Example, FactDataset, pad_batch
from interp.data.tokenizer import load_tokenizer, save_tokenizer
from interp.encoder_decoder import EncoderDecoder
from interp.errors import UserError
from interp.files import DIR_MODE, read_json, write_json, write_text
from interp.model import build_model, load_weights, raw_forward, save_weights
from interp.objectives import get_objective
from interp.runs import (
    MARKER,
    build_dataset,
    check_fits,
    checkpoint_steps,
    prepare_run_dir,
    read_marker,
    remove_run_dir,
    run_lock,
    versions,
    write_marker,
)
from interp.turns import Turns

LOG_EVERY = 10


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at `step`: linear warm-up to `lr`, cosine decay to `lr * min_lr_ratio`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not biases, norms), as in nanoGPT.

    The fused kernel (`fused=True`: the whole update in one call per parameter group) where the
    device has it (CUDA, and the CPU since torch 2.4), else `foreach=True` (one call per update
    operation over all tensors). torch's CPU default is neither but a Python loop over the ~70
    tensors: 3.2 ms of a ~30 ms default-preset step, against 1.1 ms fused. The fused kernel
    rounds differently from the loop (the same update to float rounding); like every kernel
    here it is deterministic, so the same seed gives the same weights bitwise."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)


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
    """Load AdamW state saved by `_save_optimizer`, or name the file in one line when it is
    truncated, corrupt or made for other parameters."""
    broken = f"{path} is truncated or corrupt"
    fix = (
        f"restore it, or delete {path.parent.parent} to retrain from step 0 "
        "(the same weights, bitwise)"
    )
    try:
        flat = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{broken} ({e}): {fix}") from None
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        idx, _, name = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(params):
            raise UserError(f"{broken} (unexpected entry {key!r}): {fix}")
        if name in ("exp_avg", "exp_avg_sq") and v.shape != params[int(idx)].shape:
            raise UserError(f"{broken} ({key} has shape {tuple(v.shape)}): {fix}")
        state.setdefault(int(idx), {})[name] = v
    if len(state) != len(params):
        raise UserError(f"{broken} (state for {len(state)} of {len(params)} tensors): {fix}")
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
    try:
        save_weights(model, tmp / "model.safetensors")
        _save_optimizer(opt, tmp / "optimizer.safetensors")
        (tmp / "state.json").write_text(json.dumps({"step": step}))
    except BaseException:  # a full disk, a kill: no half-written checkpoint stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in ckdir.glob("step_*"):
        if old != final and (old / "optimizer.safetensors").exists():
            (old / "optimizer.safetensors").unlink()
            (old / "state.json").unlink(missing_ok=True)


def latest_resumable(run_dir: Path) -> int | None:
    """The step of the latest checkpoint with optimizer state (folders named exactly step_N)."""
    ck = run_dir / "checkpoints"
    steps = [
        s
        for s in checkpoint_steps(run_dir)
        if (ck / f"step_{s:06d}" / "optimizer.safetensors").exists()
    ]
    return steps[-1] if steps else None


def fit(
    model: TransformerBridge | EncoderDecoder,
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
    turns = Turns(device)  # kit processes sharing the CPU take turns per step (interp.turns)
    t0 = time.perf_counter()
    try:
        for step in bar:
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = batch_indices(step, len(docs), cfg.batch_size, cfg.seed)
            b_tokens, b_lengths = tokens[idx.to(device)], lengths[idx.to(device)]
            width = int(b_lengths.max())
            with turns.turn():
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
                    model.eval()
                    line.update(evaluation.training_log_metrics(model, dataset, cfg.objective))
                    model.train()
                log.append(line)
                bar.set_postfix(loss=f"{line['loss']:.3f}")
                if log_file:
                    log_file.write(json.dumps(line) + "\n")
                    log_file.flush()
            if run_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                save_checkpoint(run_dir, done, model, opt)
    finally:
        turns.close()
        if log_file:
            log_file.close()
        model.eval()
    return log


def _log_until(run_dir: Path, step: int) -> str | None:
    """train_log.jsonl cut to the lines up to `step` (the text to write back), or None when there
    is no log. A half-written last line (a kill mid-write) is dropped; a damaged line before it
    is named, since the log cannot be rebuilt without retraining."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return None
    lines = path.read_text(errors="replace").splitlines()
    keep = []
    for i, ln in enumerate(lines):
        try:
            entry = json.loads(ln)
            ok = isinstance(entry, dict) and isinstance(entry.get("step"), int)
        except ValueError:
            ok = False
        if not ok:
            if i == len(lines) - 1:
                break  # half-written by a kill: the step it logged is retrained anyway
            raise UserError(
                f"{path} line {i + 1} is damaged: repair or delete that line, then --resume"
            )
        if entry["step"] <= step:
            keep.append(ln)
    return "".join(k + "\n" for k in keep)


MAX_THREADS = 4096  # a thread count above it in a run's marker is damage, not a machine


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch threads, then restore the caller's count."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


def train_run(
    cfg: RunConfig | None,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    evaluate: bool = True,
    device: str | None = None,
) -> Path:
    """Train a run into directory `out` (see interp.runs for its layout) and evaluate it.

    Every check on the input happens before anything is written. With `resume`, the config is
    the run's own config.json (a `cfg` given must have the same hash) and the run is finished
    from wherever it stopped. `device` overrides train.device; it is not part of the science,
    so it may differ on resume.
    """
    if not str(out).strip():
        raise UserError("--out is empty: name a run directory, e.g. --out runs/tiny")
    out = Path(out)
    with run_lock(out):  # one writer per run directory
        mode = prepare_run_dir(out, resume, overwrite)
        if mode == "resume":
            return _resume(cfg, out, progress=progress, evaluate=evaluate, device=device)
        if cfg is None:
            raise UserError("a new run needs a config: pass --preset or --config")
        cfg, _, dataset, model = _build(cfg, device)
        threads = torch.get_num_threads()
        _init_run_dir(out, cfg, dataset, threads, replace=mode == "overwrite")
        _train_and_evaluate(
            model, dataset, cfg, out, 0, None, threads, progress=progress, evaluate=evaluate
        )
    return out


def _build(
    cfg: RunConfig, device: str | None
) -> tuple[RunConfig, str, FactDataset, TransformerBridge | EncoderDecoder]:
    """The config on `device` (if given), the device, its dataset (checked to fit n_ctx) and a
    new model."""
    if device is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    dev = check_device(cfg.train.device, "--device" if device else "train.device")
    Turns(dev).close()  # a turns folder that is not private is refused before anything is written
    dataset = build_dataset(cfg)
    check_fits(cfg, dataset)
    model = build_model(cfg.model, dataset.d_vocab, cfg.train.seed, dev, dataset.tokenizer)
    return cfg, dev, dataset, model


def _init_run_dir(
    out: Path, cfg: RunConfig, dataset: FactDataset, threads: int, *, replace: bool
) -> None:
    """Write what made the run (config, versions, tokenizer, marker). A new directory is built
    beside `out` and renamed into place, so a kill leaves no half-made run; an existing empty
    directory (`--out .`) is filled in place, marker last."""

    def fill(d: Path) -> None:
        write_json(d / "versions.json", versions())
        save_tokenizer(dataset.tokenizer, d / "tokenizer.json")
        write_json(d / "config.json", cfg.to_dict())
        write_marker(d, cfg.hash(), threads)

    target = out.resolve()
    tmp: Path | None = None
    try:
        if replace and Path.cwd().resolve().is_relative_to(target):
            # `--out . --overwrite`: the directory cannot be removed under our feet; empty it
            for child in out.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            replace = False
        if out.is_dir() and not replace:
            fill(out)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own (never a folder of the user's that happens to be called like it)
        # (a name under the file system's limit, however long the run's own name is)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name[:64]}.tmp-init-", dir=target.parent))
        os.chmod(tmp, DIR_MODE)  # mkdtemp's 0700, as mkdir would make it
        fill(tmp)
        if replace:
            remove_run_dir(out)
        os.replace(tmp, out)
    except OSError as e:
        if tmp is not None and tmp.is_dir():
            remove_run_dir(tmp)
        raise UserError(
            f"cannot write run directory {out} ({e.strerror or e}): choose another --out"
        ) from None
    except BaseException:
        if tmp is not None and tmp.is_dir():
            remove_run_dir(tmp)
        raise


def _resume(
    given: RunConfig | None, out: Path, *, progress: bool, evaluate: bool, device: str | None
) -> Path:
    """Finish the run in `out` from wherever it stopped. Checks first, then writes."""
    saved = config_from_json(read_json(out / "config.json"))
    if given is not None and given.hash() != saved.hash():
        raise UserError(
            f"the config given differs from {out}/config.json: resume with "
            "no --preset/--config/--set, or train a new run"
        )
    marker = read_marker(out)
    if marker is not None and marker.get("config_hash") != saved.hash():
        raise UserError(
            f"{out}/config.json was changed after the run started (hash {saved.hash()}, the "
            f"checkpoints were made with {marker.get('config_hash')}): restore it, or train a "
            "new run with the new config"
        )
    cfg, dev, dataset, model = _build(saved, device)
    threads = marker.get("torch_threads") if marker else None
    if threads is not None and (not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS):
        raise UserError(
            f"{out}/interp_run.json says the run was trained with {threads!r} torch threads, "
            f"not a count from 1 to {MAX_THREADS}: the file is damaged; restore it (the "
            "thread count decides the bits of a resumed run)"
        )
    if threads is None:
        threads = torch.get_num_threads()

    # Check everything before changing anything.
    notes = []
    final = out / "model.safetensors"
    finished = False
    if final.is_file():
        try:
            load_weights(model, final)
            finished = True
        except UserError:
            notes.append(f"{final} is truncated or corrupt: rebuilding it")
    start, opt_state, log_text = 0, None, None
    if not finished:
        step = latest_resumable(out)
        if step is not None:
            ck = out / "checkpoints" / f"step_{step:06d}"
            load_weights(model, ck / "model.safetensors")
            _load_optimizer(make_optimizer(model, cfg.train), ck / "optimizer.safetensors")
            start, opt_state = step, ck / "optimizer.safetensors"
        else:
            model = build_model(cfg.model, dataset.d_vocab, cfg.train.seed, dev, dataset.tokenizer)
        log_text = _log_until(out, start)
    try:
        tok_ok = load_tokenizer(out / "tokenizer.json").get_vocab() == dataset.tokenizer.get_vocab()
    except UserError:
        tok_ok = False
    evaluated = False
    try:
        evaluated = (
            isinstance(read_json(out / "metrics.json"), dict)
            and (out / "eval_logprobs.npz").is_file()
        )
    except UserError:
        pass

    # Repair what can be rebuilt, then finish the interrupted stage.
    if not tok_ok:
        save_tokenizer(dataset.tokenizer, out / "tokenizer.json")
        notes.append(f"{out}/tokenizer.json was missing or damaged: rebuilt from config.json")
    if marker is None:
        write_marker(out, saved.hash(), threads)
        notes.append(f"{out} had no {MARKER} (an older run): marked with this config and threads")
    for note in notes:
        print(note)
    if threads != torch.get_num_threads():
        print(f"resuming with {threads} torch threads, as {out} was started (bitwise the same)")
    if finished and (evaluated or not evaluate):
        print(f"{out} is already finished")
        return out
    if log_text is not None:
        write_text(out / "train_log.jsonl", log_text)
    if finished:
        print(f"{out} has final weights but no evaluation: evaluating")
    else:
        print(f"{out}: resuming training from step {start}")
    _train_and_evaluate(
        model, dataset, cfg, out, start, opt_state, threads,
        progress=progress, evaluate=evaluate, train=not finished,
    )  # fmt: skip
    return out


def _train_and_evaluate(
    model: TransformerBridge | EncoderDecoder,
    dataset: FactDataset,
    cfg: RunConfig,
    out: Path,
    start: int,
    opt_state: Path | None,
    threads: int,
    *,
    progress: bool,
    evaluate: bool,
    train: bool = True,
) -> None:
    with torch_threads(threads):
        if train:
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
            evaluation.evaluate_run(
                out, model=model, dataset=dataset, config=cfg, progress=progress
            )
