"""The API's contract, shared by the server and every caller.

- :mod:`fedledger.api.schemas`: the request and response bodies (the routes' models);
- :mod:`fedledger.api.client`: :class:`~fedledger.api.client.FedLedgerApi`, the one HTTP client;
- :mod:`fedledger.api.errors`: its typed errors.

Nothing is imported here, so the server reads the schemas without loading the client.
"""
