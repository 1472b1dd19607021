"""Judging runs: track pooling and the ensemble average, metrics, reports and plots, comparison, ensembles."""
