"""interp: a mechanistic-interpretability study kit for the reversal curse.

Map of the package (one concern per module):
- config.py: frozen dataclasses for world, model and training; presets; validation.
- data/: the synthetic world (world.py), tokenised examples (dataset.py), tokenizers, JSONL I/O.
- model.py: the small GPT as a TransformerLens TransformerBridge; safetensors weights.
- objectives/: training objectives (causal next-token, and the mitigations).
- train.py: the training loop, checkpoints and bitwise resume.
- evaluate.py: exact match and the paper's log-probability test.
- runs.py: run directories (config.json, versions, weights) and loading a run back.
- analysis/: one module per instrument (lens, patching, probing, update, dynamics, selective).
- plots/: one module per figure family; plots read saved results and never recompute.
- cli/: the `interp` command, one module per subcommand.

Thread policy. The kit's models are small: most of torch's parallel regions last microseconds,
and between them OpenMP's idle threads busy-wait for the next one. Alone that is harmless; beside
another CPU-bound process (a second training, the test suite, a notebook) a spinning thread
holds the core its descheduled sibling needs, and a default-preset training step went from
0.04 s to 1.27 s on 2 cores. `OMP_WAIT_POLICY=PASSIVE` makes idle threads sleep instead. It is
read once, when torch loads its OpenMP runtime, so it is set here, when `interp` is first
imported: every entry point (the `interp` command, `python -m interp`, the experiments scripts,
a notebook that imports `interp` before `torch`) gets it. A value the user set is kept, and a
process that imported torch first keeps torch's default. `experiments/bench_threads.py`
measures the policy (alone and two trainings at once); it changes no result: weights are bitwise
the same as without it at the same thread count. The price: on an otherwise idle machine a
default-preset training alone is slower than with spinning threads (0.050 s against 0.028 s a
step, measured once on 2 cores), since every parallel region now wakes a sleeping thread. Set
`OMP_WAIT_POLICY=ACTIVE` for a machine of your own.
"""

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# The notebook entry points, imported on first use (so `import interp` stays light and the
# thread policy above is set before torch loads): `from interp import load_run`.
_LAZY = {
    "load_run": "interp.runs",
    "read_result": "interp.runs",
    "load_config": "interp.config",
    "train_run": "interp.train",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
