"""Proof of Useful Work: per-client quality, timeliness, honesty, fitness and rewards; reputation and Byzantine evidence."""
