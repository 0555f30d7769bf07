"""Typed errors of :mod:`fedledger.secagg`; each message says what went wrong and what to do.

All derive from :class:`SecAggError`, a :class:`ValueError`, so an API maps any of them to a 4xx.
"""

from __future__ import annotations


class SecAggError(ValueError):
    """Base class: a secure-aggregation input or message is invalid or does not verify."""


class GroupAssignmentError(SecAggError):
    """Members cannot be split into groups of the governed size (too few, duplicates, bad seed)."""


class QuantizationError(SecAggError):
    """An update cannot be quantized (not finite, wrong shape) or a quantizer's settings are invalid."""


class InvalidMessage(SecAggError):
    """A protocol message is malformed, names the wrong round or group, or its signature is not its sender's."""


class ForgedShare(SecAggError):
    """A secret share does not decrypt for its recipient or does not match its dealer's signed commitment."""


class TooManyDropouts(SecAggError):
    """Fewer members than the threshold remain at a step: the group's sum cannot be unmasked."""


class ProtocolViolation(SecAggError):
    """A step was asked for out of order or would reveal what the protocol must keep secret."""
