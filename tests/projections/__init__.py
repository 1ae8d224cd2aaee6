"""Projections and read models: runner, conformance, faults, rebuilds, the feed."""
