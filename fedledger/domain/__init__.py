"""The platform's domain services, shared by the API (middleware/) and the worker (aggregator/).

Each module owns one kind of state in the database and the blob store: the audit log, the blob store,
server keys, model versions, rounds, submissions; ``tasks`` names the worker's tasks. They import only
``db`` and the core, and raise :mod:`fedledger.domain.errors` (never HTTP errors): the API maps them to
status codes, the worker to a failed or retried task.
"""
