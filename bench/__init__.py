"""herolog's benchmarks: each peer measured in the same run as herolog, medians and ratios."""
