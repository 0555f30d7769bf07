"""Typed errors of the numeric core. Each message says what would have been valid."""

from __future__ import annotations


class AggregationError(ValueError):
    """Base class: the inputs or parameters of an aggregation are invalid."""


class InvalidUpdates(AggregationError):
    """The stacked update matrix is empty, mis-shaped, not floating point, or holds NaN/Inf."""


class InvalidParameter(AggregationError):
    """A strategy parameter is out of its documented range."""


class TooFewClients(AggregationError):
    """The strategy's Byzantine-resilience condition on n and f does not hold."""


class UnknownStrategy(AggregationError):
    """No strategy of that name."""


class InvalidRoundParams(InvalidParameter):
    """A round's snapshot of the governed parameters is missing a value or holds one out of range."""


class PrivacyBudgetExceeded(RuntimeError):
    """Running the round would spend more privacy than the governed epsilon budget."""
