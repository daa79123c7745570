"""Analyses of the stored matrices: outliers, cohort comparison, orderings, method evaluation."""
