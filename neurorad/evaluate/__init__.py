"""Holistic evaluation of segmentation AI: metrics, lesion detection, calibration, conformal
intervals, robustness, batch effects and reader statistics (pure functions; I/O in the CLI)."""
