"""The aggregation engine: pure numeric functions (this package) and the Celery workers that call them."""
