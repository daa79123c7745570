"""Pipelines over a cohort: precompute (explain and aggregate), evaluate (method metrics), import, the demo."""
