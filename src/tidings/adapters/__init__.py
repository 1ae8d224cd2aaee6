"""Backends, grouped by the service they use; each module serves one capability."""
