"""Evaluation: OOD scores, OpenOOD-convention metrics, benchmark runs, reports and plots."""
