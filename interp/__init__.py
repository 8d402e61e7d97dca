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
"""

__version__ = "0.1.0"
