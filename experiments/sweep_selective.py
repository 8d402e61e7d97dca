"""Sweep the self-evaluation soft prompt's schedule: can it beat ln 2 on the real label?

Issue 15 item 6. The learner (`interp.analysis.soft_prompt.train_self_eval`) is trained on the
selective analysis's own rows (beam candidates of the training people, validation people for
early stopping) over a grid of learning rate x soft tokens, each for `--max-epochs` epochs with
no early stop; the early-stopping rule is deterministic, so the run a given patience would have
made is a prefix of that curve, and every patience is read off it without retraining. For each
setting it prints the best validation loss (class-balanced cross-entropy; a constant predictor
scores ln 2 = 0.693) on the real label (is the answer correct?) and on the positive control (is
the answer a name?), and the test AUROC of the real label's log P(correct) on the test people's
chosen answers.

    PYTHONPATH=. python experiments/sweep_selective.py RUN_DIR [--templates heldout]
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import replace

import numpy as np
import torch

from interp.analysis import selective as S
from interp.analysis import soft_prompt as SP
from interp.runs import load_run
from interp.stats import run_seed

LN2 = math.log(2)


def stop_at(val_loss: list[float], patience: int) -> tuple[int, float]:
    """(best epoch, best loss) of the run `train_self_eval` makes with this patience."""
    best, best_epoch = val_loss[0], 0
    for epoch in range(1, len(val_loss)):
        if val_loss[epoch] < best - 1e-6:
            best, best_epoch = val_loss[epoch], epoch
        elif epoch - best_epoch >= patience:
            break
    return best_epoch, best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--templates", default="train")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--lrs", default="0.003,0.01,0.03,0.1")
    p.add_argument("--n-soft", default="1,4,16")
    p.add_argument("--patience", default="3,10,30")
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    run = load_run(a.run_dir)
    ds, net = run.dataset, run.model.original_model
    opts = S.SelectiveOptions(templates=a.templates, beams=a.beams, batch_size=a.batch_size)
    seed = run_seed(run.config, opts.seed)
    token_ids = (S._vocab_id(ds, ".", "--correct-token"), S._vocab_id(ds, "?", "--incorrect-token"))
    qs = [e for e in ds.prompts if a.templates in ("all", e.templates)]
    people = S.split_people(qs, opts.val_fraction, opts.test_fraction, seed)
    t0 = time.perf_counter()
    ans = S.answer_questions(net, ds, qs, a.beams)
    tr, va = ans.rows(people["train"], False), ans.rows(people["val"], False)
    te = ans.rows(people["test"], True)
    margins = (
        SP.SelfEvalMargins(net, tr.seqs, token_ids),
        SP.SelfEvalMargins(net, va.seqs, token_ids),
    )
    print(
        f"run {a.run_dir}, templates {a.templates}: {len(tr.seqs)} train candidates "
        f"(accuracy {tr.correct.mean():.3f}), {len(va.seqs)} val, {len(te.seqs)} test answers "
        f"(accuracy {te.correct.mean():.3f}); beams {time.perf_counter() - t0:.0f}s"
    )
    labels = {
        "real": (tr.correct, va.correct),
        "control": (S.answer_is_name(tr, qs), S.answer_is_name(va, qs)),
    }
    pats = [int(x) for x in a.patience.split(",")]
    print(
        f"{'lr':>7} {'n_soft':>6} {'label':>8} {'start':>7} "
        + " ".join(f"{'best@p' + str(q):>10} {'ep':>3}" for q in pats)
        + f" {'test AUROC':>10} {'s':>5}"
    )
    for lr in (float(x) for x in a.lrs.split(",")):
        for n_soft in (int(x) for x in a.n_soft.split(",")):
            longest = max(len(e.tokens) for e in qs) + n_soft
            if longest > run.model.cfg.n_ctx:
                print(f"{lr:>7g} {n_soft:>6} skipped: {longest} positions > n_ctx")
                continue
            o = replace(opts, lr=lr, n_soft=n_soft, max_epochs=a.max_epochs, patience=a.max_epochs)
            for name, (y, yv) in labels.items():
                t = time.perf_counter()
                fit = SP.train_self_eval(
                    net, (tr.seqs, y), (va.seqs, yv), token_ids, o, seed, margins=margins
                )
                with torch.no_grad():
                    m = SP.self_eval_margins(net, fit.soft, te.seqs, token_ids).double().numpy()
                target = te.correct if name == "real" else S.answer_is_name(te, qs)
                cells = " ".join(
                    f"{stop_at(fit.val_loss, q)[1]:>10.4f} {stop_at(fit.val_loss, q)[0]:>3}"
                    for q in pats
                )
                print(
                    f"{lr:>7g} {n_soft:>6} {name:>8} {fit.val_loss[0]:>7.4f} {cells} "
                    f"{S.auroc(m, target):>10.3f} {time.perf_counter() - t:>5.0f}",
                    flush=True,
                )
    print(f"ln 2 = {LN2:.4f}; 'best@pN' = best validation loss with patience N (epoch 'ep')")
    print("test AUROC: of the soft prompt kept with the largest patience, on its own label")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
