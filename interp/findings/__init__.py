"""The study's findings: every number the README and the findings files quote, produced by the
code that is committed. One module per concern (nothing is imported here, so the presets can use
the verdicts without importing the renderer):

- provenance.py: what made the numbers (code and config hashes, versions) and the time it took;
- collect.py: the numbers, from the runs' saved results only (`Study`, `collect`);
- storage.py: the storage study's numbers, by augmentation level and scale;
- verdicts.py: every rule that judges a claim, in one vocabulary (`verdict`, `Claim`);
- text.py: how numbers read in text and tables;
- render.py: the templates, each preset's findings.md and the README's block
  (`python -m interp.findings FIGURES README.md`).
"""
