"""fedledger: federated learning paid, audited and governed on an Ethereum chain."""

__version__ = "0.1.0"
