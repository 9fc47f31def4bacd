"""Benchmarks (`oaml bench ...`): each measures against its baseline in one run, as ratios."""
