"""The instruments. Each module is a set of pure functions (model, tokens or cache and options
in; tensors or a small result dataclass out) plus a ``run_analysis(run, ...)`` that the CLI and the
study call to write ``RUN_DIR/analysis/<instrument>.json``:

- :mod:`interp.analysis.lens`: logit lens and tuned lens
- :mod:`interp.analysis.patching`: batched activation patching (causal tracing)
- :mod:`interp.analysis.probing`: linear probes on entity-alone representations
- :mod:`interp.analysis.updates`: the gradient-update test
- :mod:`interp.analysis.dynamics`: the instruments over a run's checkpoints
- :mod:`interp.analysis.selective`: selective prediction (ASPIRE)
"""
