"""The cohort toolkit (``neurorad cohort``), reusable by every workflow: a cohort table from many
``result.json`` plus a clinical CSV, Table 1 by group, and prognostic models (logistic regression
with the published selection, nomogram, ROC/DeLong, bootstrap-corrected calibration, decision
curves). See docs/cohort.md.
"""
