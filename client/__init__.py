"""The fedledger organization client: SDK, API client, wallet, local training and data helpers.

- :class:`~client.sdk.Organization`: sign in, register, stake, pull and verify models, train, submit
  sealed signed updates, wait for rounds, claim rewards (``client.sdk``, a facade over ``client.chain``,
  ``membership``, ``models``, ``local_update``, ``sealing``, ``spool``, ``rounds``, ``participation`` and
  ``rewards``);
- :class:`~fedledger.api.client.FedLedgerApi`: the platform's one HTTP client, with retries, typed errors
  and the server's schemas (``fedledger.api``; the operator and the dashboard use it too);
- :class:`~client.wallet.Wallet`: the organization's key (``client.wallet``);
- trainers and local DP (``client.training``), data loading and partitioning (``client.data``);
- every expected failure is a :class:`~client.errors.ClientError` (``client.errors``).

The command line is ``fedledger client ...`` (``app/commands/client.py``).
"""

from __future__ import annotations

from client.data import (
    Dataset,
    Standardizer,
    load_csv,
    load_digits_dataset,
    partition_dirichlet,
    partition_iid,
)
from client.errors import ApiError, ClientError, ModelVerificationError
from client.sdk import Organization, Submission, VerifiedModel
from client.training import LocalDP, MLPClassifier, SoftmaxRegression, trainer_for_spec
from client.wallet import Wallet
from fedledger.api.client import FedLedgerApi, RetryPolicy

__all__ = [
    "ApiError",
    "ClientError",
    "Dataset",
    "FedLedgerApi",
    "LocalDP",
    "MLPClassifier",
    "ModelVerificationError",
    "Organization",
    "RetryPolicy",
    "SoftmaxRegression",
    "Standardizer",
    "Submission",
    "VerifiedModel",
    "Wallet",
    "load_csv",
    "load_digits_dataset",
    "partition_dirichlet",
    "partition_iid",
    "trainer_for_spec",
]
