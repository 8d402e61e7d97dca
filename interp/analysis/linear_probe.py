"""The linear probe every instrument fits: standardised L2 logistic regression by L-BFGS, folds
over people, and chance levels.

`fit_probe` is the model and solver of scikit-learn's `StandardScaler` + `LogisticRegression(C=C)`
written directly against `scipy.optimize` (about 5x faster at the probes' sizes, checked against
scikit-learn by a test); `fit_probe_batch` fits many label vectors on the same rows at once (a
permutation null). `person_folds` splits rows into folds by person, stratified by label, so no
person is in both train and test.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Bool, Float, Int
from scipy import optimize

from interp.errors import UserError


def standardise(
    x_train: Float[np.ndarray, "n d"],
) -> tuple[Float[np.ndarray, "n d"], Float[np.ndarray, " d"], Float[np.ndarray, " d"]]:
    """(standardised rows, mean, std) of the training rows; constant features keep std 1, as
    scikit-learn's StandardScaler does."""
    x_train = np.asarray(x_train, np.float64)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 10 * np.finfo(np.float64).eps] = 1.0
    return (x_train - mean) / std, mean, std


def person_folds(
    people: Int[np.ndarray, " n"], k: int, seed: int, strata: Int[np.ndarray, " n"] | None = None
) -> list[tuple[Int[np.ndarray, " n_train"], Int[np.ndarray, " n_test"]]]:
    """Split rows into k folds by person: (train rows, test rows) per fold.

    Distinct people are shuffled with `seed` and dealt round-robin into k folds; every row of a
    person lands in the same fold, so no person is ever in both train and test, and every person
    is tested exactly once. With `strata` (one value per row, constant within a person: the
    label), people are dealt stratum by stratum, so every fold keeps about the subset's class
    proportions. Without stratification a small-sample probe that knows nothing scores *below*
    chance, because the classes a test fold over-represents are under-represented in its
    training fold.
    """
    people_arr = np.asarray(people)
    unique = np.unique(people_arr)
    if not 2 <= k <= len(unique):
        raise UserError(f"cannot split {len(unique)} people into {k} folds: use 2..{len(unique)}")
    rng = np.random.default_rng(seed)
    if strata is None:
        groups = [rng.permutation(unique)]
    else:
        first_row = {p: i for i, p in reversed(list(enumerate(people_arr.tolist())))}
        stratum = np.array([np.asarray(strata)[first_row[p]] for p in unique.tolist()])
        groups = [rng.permutation(unique[stratum == v]) for v in np.unique(stratum)]
    order = np.concatenate(groups)  # people, stratum after stratum; dealt round-robin below
    fold_of = {int(p): i % k for i, p in enumerate(order)}
    assignment = np.array([fold_of[int(p)] for p in people_arr])
    return [(np.flatnonzero(assignment != f), np.flatnonzero(assignment == f)) for f in range(k)]


def _probe_loss(
    theta: Float[np.ndarray, " params"],
    x: Float[np.ndarray, "n d"],
    onehot: Float[np.ndarray, "n k"],
    alpha: float,
) -> tuple[float, Float[np.ndarray, " params"]]:
    """Mean multinomial cross-entropy + alpha/2 ||W||^2 (intercept unpenalised) and its gradient."""
    n, d = x.shape
    k = onehot.shape[1]
    W, b = theta[: k * d].reshape(k, d), theta[k * d :]
    z = x @ W.T + b
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1, keepdims=True))
    loss = float((lse - z)[onehot > 0].sum() / n + 0.5 * alpha * (W * W).sum())
    g = (np.exp(z - lse) - onehot) / n  # d loss / d logits
    grad = np.concatenate([(g.T @ x + alpha * W).ravel(), g.sum(0)])
    return loss, grad


def fit_probe(
    x_train: Float[np.ndarray, "n_train d"],
    y_train: Int[np.ndarray, " n_train"],
    x_test: Float[np.ndarray, "n_test d"],
    C: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 2000,
) -> Int[np.ndarray, " n_test"]:
    """Fit a standardised L2 logistic-regression probe on the training rows; predict the test rows.

    The model and solver of scikit-learn's `StandardScaler` + `LogisticRegression(C=C)`
    (multinomial over the classes present, objective C * sum of cross-entropies + ||W||^2 / 2
    with the intercept unpenalised, L-BFGS from zero with gradient tolerance `tol` on the mean
    loss), written directly against `scipy.optimize`: without scikit-learn's per-call input
    validation it is about 5x faster on the probes' sizes, and the kit fits thousands of them.
    A test checks it against scikit-learn. A training fold with a single class predicts that
    class (there is nothing to fit).
    """
    classes, y_idx = np.unique(y_train, return_inverse=True)
    if len(classes) == 1:
        return np.full(len(x_test), classes[0], dtype=np.int64)
    xs, mean, std = standardise(x_train)
    n, d = xs.shape
    k = len(classes)
    onehot = np.eye(k)[y_idx.reshape(-1)]
    res = optimize.minimize(
        _probe_loss,
        np.zeros(k * d + k),
        args=(xs, onehot, 1.0 / (C * n)),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    W, b = res.x[: k * d].reshape(k, d), res.x[k * d :]
    z = ((np.asarray(x_test, np.float64) - mean) / std) @ W.T + b
    return classes[z.argmax(1)].astype(np.int64)


def fit_probe_batch(
    x_train: Float[np.ndarray, "n_train d"],
    Y: Int[np.ndarray, "perm n_train"],
    x_test: Float[np.ndarray, "n_test d"],
    C: float,
    tol: float = 1e-4,
    max_iter: int = 2000,
) -> Int[np.ndarray, "perm n_test"]:
    """`fit_probe` for many label vectors on the same rows at once (the permutation null).

    The same model (standardised features, multinomial logistic regression, C * sum of
    cross-entropies + ||W||^2 / 2, intercepts unpenalised), one independent probe per row of `Y`;
    the objective is the sum of the independent ones, so one L-BFGS run on the stacked parameters
    reaches each probe's optimum. Every row of `Y` must hold the same classes (true of
    permutations within folds)."""
    classes = np.unique(Y[0])
    P = len(Y)
    if len(classes) == 1:
        return np.full((P, len(x_test)), classes[0], dtype=np.int64)
    xs, mean, std = standardise(x_train)
    n, d = xs.shape
    k = len(classes)
    onehot = np.eye(k)[np.searchsorted(classes, Y)]  # [perm, n, k]
    alpha = 1.0 / (C * n)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: P * k * d].reshape(P, k, d)
        b = theta[P * k * d :].reshape(P, 1, k)
        z = np.einsum("nd,pkd->pnk", xs, W) + b
        z -= z.max(2, keepdims=True)
        lse = np.log(np.exp(z).sum(2, keepdims=True))
        val = float(((lse - z) * onehot).sum() / n + 0.5 * alpha * (W * W).sum())
        g = (np.exp(z - lse) - onehot) / n  # [perm, n, k]
        gW = np.einsum("pnk,nd->pkd", g, xs) + alpha * W
        return val, np.concatenate([gW.ravel(), g.sum(1).ravel()])

    res = optimize.minimize(
        loss,
        np.zeros(P * k * d + P * k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    W = res.x[: P * k * d].reshape(P, k, d)
    b = res.x[P * k * d :].reshape(P, 1, k)
    z = np.einsum("nd,pkd->pnk", (np.asarray(x_test, np.float64) - mean) / std, W) + b
    return classes[z.argmax(2)].astype(np.int64)


def cross_validated_correct(
    x: Float[np.ndarray, "n d"],
    y: Int[np.ndarray, " n"],
    people: Int[np.ndarray, " n"],
    k: int,
    seed: int,
    C: float = 1.0,
) -> Bool[np.ndarray, " n"]:
    """For every row, whether the probe of the fold that held its person out predicts it right.

    Folds are over people and stratified by the labels `y` (see `person_folds`).
    """
    correct = np.zeros(len(y), dtype=bool)
    for train, test in person_folds(people, k, seed, strata=y):
        correct[test] = fit_probe(x[train], y[train], x[test], C) == y[test]
    return correct


def majority_rate(y: Int[np.ndarray, " n"]) -> float:
    """Chance level: accuracy of always guessing the most frequent label."""
    return float(np.bincount(y).max() / len(y))


def proportional_chance(y: Int[np.ndarray, " n"]) -> float:
    """Expected accuracy of guessing each class with its frequency: sum_c p_c^2."""
    p = np.bincount(y) / len(y)
    return float((p**2).sum())


def control_task_labels(
    token_types: Int[np.ndarray, " n"], n_classes: int, seed: int
) -> Int[np.ndarray, " n"]:
    """Hewitt & Liang's control task: one random label per token *type*, drawn once for every
    type id up to the largest present; rows with the same type always get the same label."""
    table = np.random.default_rng(seed).integers(0, n_classes, size=int(token_types.max()) + 1)
    return table[np.asarray(token_types)].astype(np.int64)
