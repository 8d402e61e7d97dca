"""The kit on a GPU agrees with the kit on the CPU. Runs only where CUDA is present (skipped here).

What is deterministic where:
- CPU: bitwise. The same seed gives the same weights, losses and results at a fixed thread count
  (every random draw is a function of (seed, step), see interp.train).
- CUDA: not bitwise, neither against the CPU nor run to run. Matmuls and reductions sum in another
  order than on the CPU (different float rounding, ~1e-6 relative per op), and the backward of
  the embedding lookup adds gradients with atomics whose order changes between runs. The data
  order, initialisation and masks are the same as on the CPU (drawn on the CPU from the same
  seeds), so a CUDA run follows the CPU run closely at first and drifts slowly as rounding
  compounds through training. TF32 is off by default in torch (matmul and cuDNN convolutions
  would otherwise round inputs to 10 mantissa bits); the tolerances below assume it stays off.
  Bitwise run-to-run repeatability on one GPU needs `torch.use_deterministic_algorithms(True)`
  and `CUBLAS_WORKSPACE_CONFIG=:4096:8` set before CUDA starts; the kit does not set them.

The tolerances, stated once: logits of the same weights within 1e-4 (absolute, float32 logits of
magnitude ~10); training losses within 1e-3 over the first 10 steps and 2% (relative) over 60
steps of the tiny preset; lens log-probabilities within 1e-3 and ranks equal for at least 99% of
the (prompt, target, position, layer) cells (ties within rounding may swap).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LOGIT_ATOL = 1e-4
EARLY_LOSS_ATOL = 1e-3
LOSS_RTOL = 0.02
LENS_LOGP_ATOL = 1e-3
LENS_RANK_AGREE = 0.99


def _prompts(ds, n: int = 64) -> torch.Tensor:
    from interp.data.dataset import pad_batch

    toks, _ = pad_batch([e.prompt for e in ds.prompts[:n]])
    return toks


def test_logits_agree_on_cuda_and_cpu(tiny_config):
    """The same weights give the same logits on both devices, through the bridge (hooks) and
    through the training path (`raw_forward`)."""
    from interp.model import build_model, raw_forward
    from interp.runs import build_dataset

    ds = build_dataset(tiny_config)
    cpu = build_model(tiny_config.model, ds.d_vocab, seed=0)
    gpu = build_model(tiny_config.model, ds.d_vocab, seed=0, device="cuda")
    toks = _prompts(ds)
    with torch.no_grad():
        for name, f_cpu, f_gpu in [
            ("bridge", cpu, gpu),
            ("raw_forward", raw_forward(cpu), raw_forward(gpu)),
        ]:
            diff = (f_cpu(toks) - f_gpu(toks.cuda()).cpu()).abs().max().item()
            assert diff <= LOGIT_ATOL, f"{name} logits: CUDA vs CPU max |diff| {diff:.2e}"


def test_training_loss_curve_agrees_on_cuda_and_cpu(tiny_config):
    """60 steps of the tiny preset from the same seed: the loss curves agree within tolerance."""
    from interp.config import apply_overrides
    from interp.model import build_model
    from interp.runs import build_dataset
    from interp.train import fit

    cfg = apply_overrides(tiny_config, ["train.steps=60", "train.checkpoint_every=0"])
    ds = build_dataset(cfg)
    curves = {}
    for device in ("cpu", "cuda"):
        model = build_model(cfg.model, ds.d_vocab, cfg.train.seed, device)
        log = fit(model, ds.train_docs, cfg.train, progress=False)
        curves[device] = np.array([line["loss"] for line in log])
    cpu, gpu = curves["cpu"], curves["cuda"]
    table = "\n".join(
        f"  step {10 * (i + 1)}: cpu {c:.5f} cuda {g:.5f}"
        for i, (c, g) in enumerate(zip(cpu, gpu, strict=True))
    )
    assert abs(cpu[0] - gpu[0]) <= EARLY_LOSS_ATOL, f"first logged loss differs:\n{table}"
    rel = np.abs(cpu - gpu) / np.abs(cpu)
    assert rel.max() <= LOSS_RTOL, (
        f"loss curves differ by {rel.max():.1%} (bar {LOSS_RTOL:.0%}):\n{table}"
    )
    assert gpu[-1] < 0.5 * gpu[0], f"CUDA training did not halve the loss:\n{table}"


def test_logit_lens_agrees_on_cuda_and_cpu(tiny_run_dir):
    """One instrument end to end: the logit lens of the trained tiny run, loaded on each device."""
    from interp.analysis.lens import control_targets, score_prompts
    from interp.runs import load_run

    runs = {d: load_run(tiny_run_dir, device=d) for d in ("cpu", "cuda")}
    prompts = [e for e in runs["cpu"].dataset.prompts if e.templates == "train"]
    targets = np.stack(
        [np.array([e.answer[0] for e in prompts]), control_targets(prompts, seed=0)], axis=1
    )
    (r_cpu, lp_cpu), (r_gpu, lp_gpu) = (
        score_prompts(runs[d].model, prompts, targets) for d in ("cpu", "cuda")
    )
    both = ~np.isnan(lp_cpu)
    assert np.array_equal(both, ~np.isnan(lp_gpu)), "the lens scored different cells on CUDA"
    logp_diff = np.abs(lp_cpu[both] - lp_gpu[both]).max()
    agree = (r_cpu[both] == r_gpu[both]).mean()
    assert logp_diff <= LENS_LOGP_ATOL, f"lens log-probs: CUDA vs CPU max |diff| {logp_diff:.2e}"
    assert agree >= LENS_RANK_AGREE, f"lens ranks agree in {agree:.2%} of cells (bar 99%)"


def test_train_command_on_cuda_writes_a_run_the_cpu_loads(tmp_path):
    """`interp train --device cuda` trains, evaluates and saves weights the CPU can load."""
    from interp.cli import main
    from interp.runs import load_run

    out = tmp_path / "run"
    status = main(
        ["train", "--preset", "tiny", "--set", "train.steps=40", "--device", "cuda",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert status == 0, f"interp train --device cuda exited with {status}"
    run = load_run(out, device="cpu")
    assert next(run.model.parameters()).device.type == "cpu"
    assert (out / "metrics.json").is_file()
