"""The aggregator worker's I/O: the Celery app and tasks, a round's close (load, decrypt, compute, commit) and its posting on-chain."""
