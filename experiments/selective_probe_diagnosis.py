"""Why do linear probes stay at chance on ASPIRE's correctness label where likelihood is perfect?

For each run of a study, the selective-prediction analysis's own split (train / validation /
test people) and beam answers, then the test AUROC (mixed questions, the test people's chosen
answers) of one learner varied along one axis at a time: the position it reads, the label it is
trained on (every beam candidate, as the analysis's probes are, or only the chosen answer: the
model's own correctness, a confidence label), feature scaling and class weights, capacity (an
MLP), and the features (the state itself, or the log-probabilities the model reads off it).

    python experiments/selective_probe_diagnosis.py STUDY_OUT --objective causal \
        --out figures/selective_probe_diagnosis.md

writes a markdown table: the mean over runs and each run's value.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from interp.analysis import selective as S
from interp.analysis.selective_metrics import auroc
from interp.files import write_text
from interp.runs import load_run, study_run
from interp.stats import run_seed


def diagnose(run_dir: Path) -> dict[str, float]:
    run = load_run(run_dir)
    opts = S.SelectiveOptions()
    opts = replace(opts, seed=run_seed(run.config, opts.seed))
    ds, model = run.dataset, run.model
    questions = [e for e in ds.prompts if e.templates == opts.templates]
    people = S.split_people(questions, opts.val_fraction, opts.test_fraction, opts.seed)
    answers = S.answer_questions(model.original_model, ds, questions, opts.beams, False)
    rows = {
        "all": (answers.rows(people["train"], False), answers.rows(people["val"], False)),
        "chosen": (answers.rows(people["train"], True), answers.rows(people["val"], True)),
    }
    test = answers.rows(people["test"], True)
    like = S.beam_scores([answers.candidates[q] for q in test.question])["likelihood"]
    out = {"likelihood of the chosen beam": auroc(like, test.correct)}

    def states(r: S.Rows, probe: str) -> np.ndarray:
        at = S.probe_positions(r, questions, S.PROBES[probe])
        return S.final_hidden(model, r.seqs, positions=at)

    for probe in S.PROBES:
        for label, (tr, va) in rows.items():
            clf, _ = S.fit_probe(states(tr, probe), tr.correct, states(va, probe), va.correct)
            score = clf.decision_function(states(test, probe))
            out[f"linear, {probe}, {label} candidates"] = auroc(score, test.correct)
    tr, _ = rows["chosen"]
    x, xt = states(tr, "probe_question"), states(test, "probe_question")
    learners = {
        "linear, probe_question, chosen, raw features, no class weights, C=1": (
            LogisticRegression(C=1.0, max_iter=5000),
            lambda h: h,
        ),
        "MLP (64 hidden), probe_question, chosen": (
            make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=2000, random_state=0)),
            lambda h: h,
        ),
        "linear on the state's own log-probs (the kit's confidence control)": (
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
            lambda h: S.state_logprobs(model, h),
        ),
        "linear on the state's largest log-prob alone": (
            LogisticRegression(max_iter=5000),
            lambda h: S.state_logprobs(model, h).max(1, keepdims=True),
        ),
    }
    for name, (clf, features) in learners.items():
        clf.fit(features(x), tr.correct)
        out[name] = auroc(clf.predict_proba(features(xt))[:, 1], test.correct)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path, help="a study's --out directory")
    p.add_argument("--objective", default="causal")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, help="markdown file to write (default: print)")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    per_run = [diagnose(study_run(args.study, args.objective, s)) for s in args.seeds]
    lines = [
        f"# Why linear probes miss ASPIRE's correctness label ({args.objective}, seeds "
        f"{', '.join(map(str, args.seeds))})",
        "",
        "Written by `experiments/selective_probe_diagnosis.py`. Test AUROC on the test people's "
        "chosen answers (mixed questions), the selective analysis's own split and beams; one "
        "axis varied at a time. 'all candidates': trained on every beam candidate (as the "
        "analysis's probes are); 'chosen': on the chosen answers only, labelled by their "
        "correctness (a confidence label).",
        "",
        "| learner | mean | per run |",
        "|---|---|---|",
    ]
    for key in per_run[0]:
        vals = [r[key] for r in per_run]
        lines.append(f"| {key} | {np.mean(vals):.2f} | {', '.join(f'{v:.2f}' for v in vals)} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
