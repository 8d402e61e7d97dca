"""`python -m interp.findings FIGURES README.md`: render every preset's findings and the README."""

from interp.findings.render import main

raise SystemExit(main())
