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
beside another CPU-bound process a spinning thread holds the core its descheduled sibling
needs: two default-preset trainings at once on 2 cores took 4.4x to over 100x one alone (the
VM's scheduling varies from run to run). Two measures:

- `GOMP_SPINCOUNT=2000`, set here when `interp` is first imported (before torch loads its
  OpenMP runtime, which reads it once): an idle thread spins ~20 us, which covers most gaps
  between the operations of a step, then sleeps;
- turns (`interp.turns`): kit processes that train on the CPU with more than one thread take
  turns step by step, so two trainings do not split the cores mid-step.

Measured with `experiments/bench_threads.py` (100 default-preset steps, three runs; the README's
"Speed, memory and sizing" has the table): spin 2000 with turns took 1.82-2.38x one alone for two
trainings at once, and ran alone at 0.99x, 1.01x and 1.17x torch's default (the VM moves a case by
10-20% from run to run). Turns work only between kit trainings; beside a process that does not take
turns the spin count decides: 2000 gave 2.21x and 3.10x there, 10000 (1.00-1.03x alone with turns)
9.6x, torch's 300000 4.3x to 120x, and 1000 (the kit before) lost 10-16% alone. Every entry point
(the `interp` command, `python -m interp`, the experiments scripts, a notebook that imports
`interp` before `torch`) gets the spin count, and so do the processes they start. A value the user
set (GOMP_SPINCOUNT, or OMP_WAIT_POLICY, which the spin count would override) is kept, and a
process that imported torch first keeps torch's default. Neither measure changes a result: weights
are bitwise the same at the same thread count.
"""

import os as _os
import sys as _sys
import warnings as _warnings

# The spin count of idle OpenMP threads, set before torch loads (see the docstring).
SPIN_COUNT = "2000"

_user_set = "GOMP_SPINCOUNT" in _os.environ or "OMP_WAIT_POLICY" in _os.environ
if "torch" not in _sys.modules and not _user_set:
    _os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT

# A notebook session stays quiet: tqdm.auto (which the kit's dependencies import, and the kit's
# own bars) warns "IProgress not found" in a Jupyter
# kernel without ipywidgets, and then draws text bars, which is what the kit wants there.
_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

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
