"""Diagnostics: jitted analyses of a network, run on a schedule (see the diagnostics issue)."""
