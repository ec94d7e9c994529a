"""Day-by-day marketplace simulation (issue #6)."""
