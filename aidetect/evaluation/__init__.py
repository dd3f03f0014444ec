"""Measuring and trusting a detector: labelled layouts, metrics, calibration, robustness, plots
and the HTML report. Predictions come from the scan's own engine."""
