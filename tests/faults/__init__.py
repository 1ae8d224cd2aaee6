"""Fault tests: processes killed mid-work, commits that stall or roll back."""
