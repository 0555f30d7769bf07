"""The application: the wiring that needs every package.

The ``fedledger`` command line (``app.cli``, one module per command group under ``app.commands``),
``fedledger run`` (``app.launcher`` supervises the chain, API, worker and dashboard) and the start-up
simulation (``app.simulation``) live here, above every other package, so that nothing below imports
upward: the core (``fedledger``) and ``db`` know nothing of ``aggregator``, ``middleware``, ``client`` or
``visualization``.
"""
