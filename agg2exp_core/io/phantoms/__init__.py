"""Synthetic thorax-CT phantoms, the demo cohort (see ``cohort`` for the anatomy and variation)."""
from agg2exp_core.io.phantoms.cohort import KERNELS, Phantom, cohort_plan, generate_cohort, make_phantom

__all__ = ["KERNELS", "Phantom", "cohort_plan", "generate_cohort", "make_phantom"]
