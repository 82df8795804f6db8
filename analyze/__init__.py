"""Command lines over completed runs: `python -m analyze.report`, `python -m analyze.compare`."""
