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

Thread policy. The kit's models are small: torch's parallel regions last microseconds, and
between them GNU OpenMP's idle threads (torch's CPU wheels use libgomp) spin for up to ~3 ms
(GOMP_SPINCOUNT's default, 300000) before they sleep. Alone that is what makes a step fast;
beside another CPU-bound process (a second training, the test suite, a notebook) a spinning
thread holds the core its descheduled sibling needs, and a default-preset training step went
from 0.023 s alone to 0.171 s with two trainings at once on 2 cores. `OMP_WAIT_POLICY=PASSIVE`
(sleep at once) removes that but costs 1.67x alone, since every parallel region then wakes a
sleeping thread. The kit sets `GOMP_SPINCOUNT=1000` instead: an idle thread spins about 10 us
(the gap between two operations of a step) and then sleeps: two trainings at once took
2.15-2.52x one alone, and one alone 1.10-1.16x torch's default (three runs of
`experiments/bench_threads.py`; the README's "Speed, memory and sizing" has the table). The
variable is read once, when torch loads its OpenMP runtime, so it is set here, when `interp` is
first imported: every entry point (the `interp` command, `python -m interp`, the experiments
scripts, a notebook that imports `interp` before `torch`) gets it, and so do the processes
they start. A value the user set (GOMP_SPINCOUNT, or OMP_WAIT_POLICY, which the spin count
would override) is kept, and a process that imported torch first keeps torch's default. It
changes no result: weights are bitwise the same as without it at the same thread count.
"""

import os as _os
import sys as _sys

# The spin count of idle OpenMP threads, set before torch loads (see the docstring).
SPIN_COUNT = "1000"

_user_set = "GOMP_SPINCOUNT" in _os.environ or "OMP_WAIT_POLICY" in _os.environ
if "torch" not in _sys.modules and not _user_set:
    _os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT

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
