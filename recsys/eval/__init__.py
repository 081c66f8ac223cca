"""Evaluation protocols (see ../shared/data/EVAL.md): splits, baselines and reports."""
