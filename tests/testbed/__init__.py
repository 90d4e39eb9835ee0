# A package, so its module names (test_cluster, ...) cannot clash with tests/unit's.
