"""LAION's rules over the scores: thresholds, schemas, tags, subsets, buckets, histogram, audit, the gate."""
