"""codedpo stages: one subpackage per stage (sample, execute, score, pairs, report) plus `common`."""
