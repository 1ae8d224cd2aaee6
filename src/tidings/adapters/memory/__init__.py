"""In-process backends: for tests and examples; they keep the same contracts as the others."""
