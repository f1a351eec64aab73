"""Answers computed from finished scans: class questions and scan comparisons."""
