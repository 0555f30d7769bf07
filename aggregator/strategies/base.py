"""What every aggregation strategy is: an object that knows its parameters and how many clients it needs,
and whose ``aggregate`` returns the aggregate together with the clients it let in.

Modelled on Flower's ``serverapp/strategy`` classes (e.g. ``MultiKrum``): parameters are fixed and checked
at construction, with typed errors that say what to change; per-round inputs are the stacked updates and
the per-client values in :class:`StrategyInputs`. Strategies are pure: no I/O, no chain, no database.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np

from aggregator.errors import InvalidParameter, TooFewClients
from aggregator.strategies.validation import as_client_vector

if TYPE_CHECKING:
    from aggregator.round.params import RoundParams


# JSON-serialisable description values (they are stored in the round's aggregation record).
Detail = int | float | str | bool | None


@dataclass(frozen=True)
class StrategyInputs:
    """What a strategy may use besides the update matrix.

    Per client (aligned with the rows): ``samples``, the claimed training sample counts already bounded by
    the round's sample-weight cap; ``reputation``, standing reputations (0..100) before this round.
    Per round: ``reference``, the server's own update on its root data (FLTrust); ``center``, where centered
    clipping starts (None: the coordinate median); ``rng``, randomness seeded per round (bucketing).
    A strategy that needs more adds an optional field here and the round computation fills it.
    """

    samples: np.ndarray
    reputation: np.ndarray
    reference: np.ndarray | None = None
    center: np.ndarray | None = None
    rng: np.random.Generator | None = None

    @classmethod
    def of(
        cls,
        n: int,
        samples: np.ndarray | list[float] | None = None,
        reputation: np.ndarray | list[float] | None = None,
        **per_round: np.ndarray | np.random.Generator | None,
    ) -> StrategyInputs:
        """Checked per-client vectors of length ``n``; None means equal samples / full reputation."""
        return cls(
            np.ones(n) if samples is None else as_client_vector(samples, n, "sample counts"),
            np.full(n, 100.0) if reputation is None else as_client_vector(reputation, n, "reputations"),
            **per_round,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class InnerProducts:
    """Inner products a rule computed over every row it was given and the server's reference (float64):
    the Gram matrix of the rows, their squared norms and their dots with the reference. The close's scores
    reuse them above their budget instead of another pass over the updates."""

    gram: np.ndarray
    sq: np.ndarray
    dots: np.ndarray


@dataclass(frozen=True)
class Aggregated:
    """A strategy's result: the aggregate (float32, d), the row indices that entered it, and the values
    the strategy actually used this round (e.g. the f derived for this n), for the round's record.

    ``coefficients``: for rules whose aggregate is linear in the rows, c with aggregate = sum_i c_i x_i
    (zeros for rows not selected); None for rules that are not (coordinate-wise statistics, Bulyan,
    centered clipping). Scores of each client's share use them; ``reference_coefficient`` is the part of the
    aggregate that is the server's reference, nobody's share.
    """

    vector: np.ndarray
    selected: np.ndarray
    details: Mapping[str, Detail]
    coefficients: np.ndarray | None = None
    # The rule's inner products over the rows it was given, when it computed them all (the guarded default).
    products: InnerProducts | None = None
    # Coefficients over the rows of another aggregate of the same rows that the close validates against the
    # rule's own (the guarded rule's wider clip, an option: aggregator.round.compute._decide); None: none.
    wider: np.ndarray | None = None
    # The server's reference as a member of the aggregate (the guarded rule's option): the aggregate is
    # sum_i c_i x_i + reference_coefficient x the round's reference (and the wider candidate sum_i wider_i x_i
    # + wider_reference x it). The scores value each row in that aggregate, the reference's part included.
    reference_coefficient: float = 0.0
    wider_reference: float = 0.0
    # What the other aggregate is, as the round's record names it when the close keeps it (``kept_by``):
    # "wider_clip" (the guarded rule's wider clip) or "reference_member" (its aggregate with the server's
    # reference as a member, offered as a candidate).
    wider_kind: str = "wider_clip"


@dataclass(frozen=True)
class ByzantineBudget:
    """How many of n clients a strategy assumes Byzantine: a fixed ``f``, or ``floor(fraction * n)``.

    Exactly one of the two is set. A fraction lets the governed assumption scale with the round's size; a
    round whose n does not satisfy the strategy's condition for its f is refused, never run with a smaller f.
    """

    f: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.f is None) == (self.fraction is None):
            raise InvalidParameter("give either a fixed f or a byzantine fraction, not both or neither")
        if self.f is not None and (isinstance(self.f, bool) or not isinstance(self.f, int) or self.f < 0):
            raise InvalidParameter(f"f must be a non-negative integer, got {self.f!r}")
        if self.fraction is not None and not 0.0 <= self.fraction < 0.5:
            raise InvalidParameter(f"byzantine fraction must be in [0, 0.5), got {self.fraction!r}")

    def f_for(self, n: int) -> int:
        """The f assumed among ``n`` clients."""
        if self.f is not None:
            return self.f
        assert self.fraction is not None
        # The epsilon absorbs binary rounding (0.29 * 100 = 28.999999999999996) without moving real values.
        return math.floor(self.fraction * n + 1e-9)

    def describe(self) -> dict[str, Detail]:
        """The governed assumption, for the round's record."""
        return {"f": self.f} if self.f is not None else {"byzantine_fraction": self.fraction}

    def smallest_n(self, ok: Callable[[int, int], bool], strategy: str, condition: str) -> int:
        """Smallest n from which ``ok(n, f_for(n))`` holds for every larger n too.

        With a fraction the condition can hold for a small n, fail for the next and hold again (floor
        steps), so this is the start of the last run that holds up to a bound beyond which it always
        holds; :class:`InvalidParameter` if the condition fails for every large n (the fraction is too
        high for the strategy: no number of clients can satisfy it).
        """
        if self.f is not None:
            n = 1
            while not ok(n, self.f):
                n += 1
            return n
        assert self.fraction is not None
        bound = 10_000
        if not ok(bound, self.f_for(bound)):
            raise InvalidParameter(
                f"{strategy}: byzantine_fraction {self.fraction} cannot be met by any number of clients "
                f"({condition}); lower byzantine_fraction through governance or choose another strategy"
            )
        n = bound
        while n > 1 and ok(n - 1, self.f_for(n - 1)):
            n -= 1
        return n


class Strategy(ABC):
    """An aggregation rule with its parameters fixed.

    Subclasses set ``name`` (the chain's strategy name), build themselves from a round's typed parameters
    in ``from_params``, and implement ``required_clients`` and ``aggregate``.
    """

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_params(cls, params: RoundParams) -> Self:
        """The strategy as the round's governed parameters configure it."""

    def required_clients(self) -> int:
        """Fewest clients the strategy can aggregate with its parameters (from this n on, any n works)."""
        return 1

    @abstractmethod
    def aggregate(self, X: np.ndarray, clients: StrategyInputs) -> Aggregated:
        """Aggregate the rows of ``X`` (n, d); :class:`TooFewClients` if n is below what it needs."""

    def describe(self) -> dict[str, Detail]:
        """The strategy's configured parameters, for the round's record."""
        return {}

    def check_clients(self, n: int) -> None:
        """Refuse ``n`` clients below :meth:`required_clients` with a typed error that says why."""
        needed = self.required_clients()
        if n < needed:
            raise TooFewClients(
                f"{self.name} needs at least {needed} clients with {self.describe()}, got {n}"
            )
