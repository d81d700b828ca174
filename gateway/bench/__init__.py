"""Benchmark commands (`parking-gateway bench ...`): journal, sync, bus; one percentile helper."""
