"""Evaluations: does CLIP agree with people? A vocabulary's answers against human labels or ratings.

  labels   reading a labels file
  terms    a vocabulary's phrases grouped by term, and each picture's best terms
  metrics  the figures, with bootstrap intervals
  run      `evaluate`: the whole evaluation
  report   the report: metrics.json, per_class.csv, predictions.csv and report.html
"""
