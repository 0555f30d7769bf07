"""Cryptography of the wire protocol: server encryption keys, sealed update envelopes, EIP-712 wallet
signatures over updates and models, and signed model packages that verify offline.

Each submodule has one job; they import nothing from the service so clients and air-gapped verifiers can
use them alone.
"""
