"""Cohort IO: the manifest, the scans of a case, their preprocessing, and the demo phantoms."""
