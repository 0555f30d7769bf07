"""The one settings class of fedledger.

Every process (middleware, workers, dashboard, CLI, client SDK) reads its configuration here, from
environment variables with the prefix ``FEDLEDGER_`` (and an optional ``.env`` file). Each field is
documented line by line in ``.env.template``; a setting added here is added there too.

Embedded defaults (what ``make run`` uses) need no server: SQLite, a Celery broker on SQLite through
kombu's SQLAlchemy transport, blobs on the filesystem, a local Hardhat chain. Production sets
``FEDLEDGER_ENV=production`` and must then give real secrets: :meth:`Settings.check_production` refuses
defaults and the chain's well-known development keys, in production and on any chain but a local dev chain.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fedledger.devkeys import (
    AGGREGATOR_INDEX,
    MODEL_SIGNER_INDEX,
    dev_private_key,
    is_dev_address,
    is_dev_private_key,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Placeholder secret for development only; production refuses to start with it.
DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me-0123456789"
# HS256 keys shorter than the hash output weaken it; RFC 7518 section 3.2 asks for at least 256 bits.
MIN_JWT_SECRET_BYTES = 32
_SECRET_HINT = (
    f"a random secret of at least {MIN_JWT_SECRET_BYTES} bytes, "
    'e.g. python -c "import secrets; print(secrets.token_urlsafe(48))"'
)
# Chain ids of local development nodes (Hardhat, Ganache): the only chains where development secrets and
# keys are accepted.
DEV_CHAIN_IDS = (31337, 1337)


class Environment(StrEnum):
    """``FEDLEDGER_ENV``; only ``production`` differs: it refuses development secrets even on a dev chain."""

    development = "development"
    test = "test"
    production = "production"


class InsecureConfiguration(RuntimeError):
    """A production process was configured with a development secret or key."""


class Settings(BaseSettings):
    """All of fedledger's settings, from ``FEDLEDGER_*`` variables and ``.env`` (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix="FEDLEDGER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # --- deployment ---------------------------------------------------------------------------
    env: Environment = Environment.development
    data_dir: Path = PROJECT_ROOT / "var"
    log_level: str = "INFO"

    # --- storage ------------------------------------------------------------------------------
    # Empty means SQLite under data_dir.
    database_url: str = ""
    # Where blobs (models, sealed updates; content-addressed, SHA-256) live: "filesystem" (blob_dir) or "s3"
    # (an S3-compatible object store such as MinIO, shared by API processes and workers on several machines).
    blob_backend: Literal["filesystem", "s3"] = "filesystem"
    # Empty means <data_dir>/blobs (content-addressed, SHA-256).
    blob_dir: Path | None = None
    # The object store of blob_backend=s3: endpoint (empty: AWS's for s3_region), bucket (created if missing),
    # key prefix, region and credentials (empty: boto3's own chain: AWS_* variables, instance profile).
    s3_endpoint_url: str = ""
    s3_bucket: str = "fedledger"
    s3_prefix: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # Private halves of the server's encryption keys (files, mode 0600). Empty means <data_dir>/keys.
    key_dir: Path | None = None
    # Run database migrations when the API starts (off when a deploy step runs `fedledger db upgrade`).
    auto_migrate: bool = True
    # Sealed updates that no row names (a crash between a submission's fsync and its commit) are removed by
    # the API at start-up and by `fedledger blobs sweep` once their file is older than this many seconds.
    blob_sweep_grace_seconds: int = Field(default=3600, ge=0)

    # The client SDK seals an update with more coordinates than this in chunks (chunked envelope, version 2:
    # each chunk sealed and signed on its own, so a sharded close reads only its part); smaller ones whole.
    # Top-k compressed updates are always sealed whole.
    update_chunk_threshold_coords: int = Field(default=4 * 1024 * 1024, ge=1)
    # Coordinates per chunk of a chunked envelope (256 KiB of float32 by default). A sharded close reads whole
    # chunks: a chunk wider than its blocks (64 MiB of rows: 16K coordinates at 1,000 updates) is read and
    # decrypted once per block, so chunks stay small.
    update_chunk_coords: int = Field(default=64 * 1024, ge=1)

    # --- queue --------------------------------------------------------------------------------
    # Empty means kombu's SQLAlchemy transport on SQLite under data_dir (no server needed).
    broker_url: str = ""
    # Redis for rate limits; empty means an in-process limiter (single API process only).
    redis_url: str = ""
    # Prefix of every Redis key this deployment writes, so deployments can share one Redis.
    redis_namespace: str = "fedledger"

    # --- HTTP API -----------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Public base URL of the API, used in the EIP-4361 message's URI.
    public_url: str = "http://127.0.0.1:8000"
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8501", "http://localhost:8501"]
    )
    max_update_bytes: int = 64 * 1024 * 1024
    # Largest accepted chunked (FLE2) update: the API authenticates and decrypts it a chunk at a time, never
    # holding its whole plaintext (it does hold the ciphertext while it checks it), so it may exceed
    # max_update_bytes, which bounds a version 1 envelope (decrypted whole).
    max_chunked_update_bytes: int = Field(default=4 * 1024**3, ge=0)
    rate_limit_per_minute_address: int = 600
    rate_limit_per_minute_ip: int = 1200
    # Tighter per-IP limits on the two calls that write a row for a caller who may have no stake: a login
    # nonce (at most this many times the nonce TTL in minutes stay stored per IP) and a registration.
    rate_limit_per_minute_ip_nonce: int = 60
    rate_limit_per_minute_ip_register: int = 60
    # Addresses or CIDR networks of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto headers are
    # believed (the client IP of rate limits comes from them). Empty: no proxy is trusted and the peer's
    # address is the client's.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- auth (Sign-In with Ethereum + JWT) ---------------------------------------------------
    siwe_domain: str = "127.0.0.1:8000"
    # Other domains a login message may name: the dashboards' host[:port]. A wallet compares the message's
    # domain with the page that asks for the signature, so the dashboard asks for its own origin.
    siwe_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1:8501", "localhost:8501"]
    )
    siwe_statement: str = "Sign in to fedledger to take part in federated training rounds."
    nonce_ttl_seconds: int = 300
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_issuer: str = "fedledger"
    jwt_audience: str = "fedledger-api"
    jwt_ttl_seconds: int = 900
    # Checksummed addresses that receive the operator role at login.
    operator_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Least privilege for an automated round driver (the Flower server): may open and close rounds, nothing
    # else an operator may do (genesis upload, rollback, key rotation, the audit log).
    round_runner_addresses: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- chain --------------------------------------------------------------------------------
    chain_rpc_url: str = "http://127.0.0.1:8545"
    chain_id: int = 31337
    # Empty means blockchain/deployments/<network>.json for the dev chain.
    deployments_file: Path | None = None
    # Key of the aggregator account (recordRound, slash). Empty on the dev chain means Hardhat account #1.
    aggregator_private_key: SecretStr = SecretStr("")
    # Key with which the server signs model hashes. Empty on the dev chain means Hardhat account #2.
    model_signer_private_key: SecretStr = SecretStr("")

    # --- aggregation ------------------------------------------------------------------------------
    # The server's holdout data for quality scores and rollback: "digits" (bundled) or a CSV path.
    holdout: str = "digits"
    # Fewest labelled holdout examples with which the API opens a round (POST /v1/rounds answers 409
    # holdout_too_small below it). The holdout is split in half: root data (the reference update FLTrust
    # weighs by) and validation data (quality, rollback). Quality and rollback trust a difference only
    # beyond z = 2 standard errors over the validation examples; a per-example 0/1 outcome's standard error
    # is at most 0.5 / sqrt(n), so resolving a 10-point change in validation accuracy needs
    # 2 * 0.5 / sqrt(n) <= 0.1, n >= 100 validation examples, and as many again for the root part: 200.
    # (Issue 20: with a 100-example holdout a reference-aware attack took the model to chance.)
    min_holdout_examples: int = Field(default=200, ge=2)
    # How long a worker may hold a round it is closing before another worker may take it over.
    close_lease_seconds: int = 300
    # A close whose updates (float32) exceed this many bytes is split by coordinate ranges across the workers
    # (each shard reads and decrypts only its range); 0: no limit. Every rule, with or without DP, on either
    # built-in model (softmax, mlp) is sharded; a round of another model, or one whose summed first-layer
    # responses exceed close_max_response_bytes, is closed on one worker.
    close_max_bytes_per_worker: int = Field(default=0, ge=0)
    # The sharded close's summed float64 first-layer responses (rows x validation examples x the first layer's
    # width: softmax's classes, the MLP's hidden units) at most this many bytes; the coordinator holds up to
    # about four copies of them, each shard one. 100 rows x 200 examples x 1,000 hidden units = 160 MB.
    close_max_response_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    # Split every shardable close into this many coordinate ranges (2 or more); 0: by close_max_bytes_per_worker.
    close_shards: int = Field(default=0, ge=0)
    # Seconds between the beat's sweeps of the temporary blobs of sharded closes that ended without deleting
    # them (a coordinator killed mid-way): those of rounds no longer closing, older than close_lease_seconds;
    # and of the masked vectors of failed secure rounds and groups closed longer ago than that.
    shard_sweep_seconds: float = Field(default=600.0, gt=0)
    # Bytes of float32 rows a shard reads, decrypts and multiplies at a time (its memory, with about twice
    # that for the float64 products); rounded down to whole chunks of update_chunk_coords, at least one chunk
    # of every row (263 MB at 1,000 updates and 64 Ki-coordinate chunks).
    close_block_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # The per-row scores' budget (issue 25 item 2; aggregator/scoring/budget.py): while the scores' first-layer
    # responses (n updates x m validation examples x d parameters multiply-adds) are at most
    # max(score_examples x n x d, score_work_floor) they use every validation example; above it, a seeded
    # subsample of score_examples of them (an unbiased estimate; its standard error is the subsample's and
    # quality's allowance widens with it). The close's decision (line search, rollback) always uses every
    # example. 32 keeps a close at n = 100, d = 1M-10M under 3x its aggregation on one core (docs/benchmarks.md).
    score_examples: int = Field(default=32, ge=2)
    score_work_floor: float = Field(default=2e9, ge=0)
    # Seconds between the beat's checks of deadlines, stuck closes and unposted rounds.
    tick_seconds: float = 5.0
    # Seconds between the beat's runs that execute queued slashes whose on-chain delay is over.
    slash_execute_seconds: float = Field(default=300.0, gt=0)
    # Seconds between the beat's anchors of the audit log's head (sent only if it grew since the last anchor).
    audit_anchor_seconds: float = Field(default=900.0, gt=0)

    # --- rounds -------------------------------------------------------------------------------
    round_duration_seconds: int = 300
    round_quorum: int = 3
    # Rounds aggregated but not yet recorded on-chain (a post waiting out the emission cap, a node down)
    # beyond which the API refuses to open another round: rewards, slashes and activity refreshes would
    # otherwise fall ever further behind. Governance sets the bound (max_posting_backlog on-chain); this
    # setting may only make it stricter (the smaller of the two applies).
    max_posting_backlog: int = Field(default=100, ge=0)
    # Secure aggregation (governed secure_group_size >= 3): seconds the join phase waits for every expected
    # organization, and each of the protocol's four steps (keys, shares, masked, unmask) for its senders.
    # A phase ends early once everyone expected has sent; at its deadline it ends with whoever did.
    secagg_join_seconds: int = Field(default=300, ge=1)
    secagg_step_seconds: int = Field(default=120, ge=1)

    # --- dashboard ----------------------------------------------------------------------------
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8501
    # Where the dashboard reaches the API (server side).
    api_url: str = "http://127.0.0.1:8000"
    # Seconds the dashboard's server waits for one API answer before the page shows the failure (a page
    # never retries); a slow chain or a loaded host may need more.
    dashboard_api_timeout: float = Field(default=10.0, gt=0)

    @field_validator(
        "cors_origins",
        "operator_addresses",
        "round_runner_addresses",
        "siwe_allowed_domains",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"FEDLEDGER_TRUSTED_PROXIES entry {entry!r} is not an IP address or CIDR network "
                    "(a hostname or * would trust whoever resolves to it or everyone)"
                ) from exc
        return value

    @model_validator(mode="after")
    def _no_loopback_sign_in_in_production(self) -> Settings:
        # The default names the dashboard on this machine, for development; in production a login message
        # for localhost would be accepted from any page a user runs locally. Set explicitly, it is kept.
        if self.env == Environment.production and "siwe_allowed_domains" not in self.model_fields_set:
            self.siwe_allowed_domains = []
        return self

    # --- derived ------------------------------------------------------------------------------
    @property
    def is_dev_chain(self) -> bool:
        """Whether ``chain_id`` is a local development node's, where development keys are allowed."""
        return self.chain_id in DEV_CHAIN_IDS

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or SQLite under ``data_dir`` when it is empty."""
        return self.database_url or f"sqlite:///{self.data_dir / 'fedledger.db'}"

    @property
    def resolved_broker_url(self) -> str:
        """``broker_url``, or kombu's SQLAlchemy transport on SQLite under ``data_dir`` when it is empty."""
        return self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def resolved_blob_dir(self) -> Path:
        """``blob_dir``, or ``<data_dir>/blobs`` when it is unset."""
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def resolved_deployments_file(self) -> Path:
        """``deployments_file``, or the file the deploy script writes for the local dev chain."""
        if self.deployments_file is not None:
            return self.deployments_file
        return PROJECT_ROOT / "blockchain" / "deployments" / "localhost.json"

    def _key_or_dev(self, secret: SecretStr, dev_index: int, name: str) -> str:
        key = secret.get_secret_value()
        if key:
            return key
        if self.is_dev_chain and self.env != Environment.production:
            return dev_private_key(dev_index)
        raise InsecureConfiguration(f"FEDLEDGER_{name.upper()} must be set outside the dev chain")

    @property
    def resolved_aggregator_key(self) -> str:
        """The aggregator's key; if unset, dev account #1 on dev chains outside production, else refused."""
        return self._key_or_dev(self.aggregator_private_key, AGGREGATOR_INDEX, "aggregator_private_key")

    @property
    def resolved_model_signer_key(self) -> str:
        """The model signer's key; if unset, dev account #2 on dev chains outside production, else refused."""
        return self._key_or_dev(self.model_signer_private_key, MODEL_SIGNER_INDEX, "model_signer_private_key")

    @property
    def resolved_key_dir(self) -> Path:
        """``key_dir``, or ``<data_dir>/keys`` when it is unset."""
        return self.key_dir or self.data_dir / "keys"

    def check_production(self, node_chain_id: int | None = None) -> None:
        """Refuse development secrets and accounts wherever they would protect something real.

        The JWT secret signs every token, operator tokens included: the public development default (or any
        secret short enough to guess) is accepted only on the dev chain outside production. ``node_chain_id``:
        the chain id the node at ``chain_rpc_url`` answers (None when it cannot be asked now); it decides,
        not ``FEDLEDGER_CHAIN_ID`` alone: a template's 31337 beside a node of chain 137 would otherwise let a
        token forged with the dev secret rotate keys. Raises :class:`InsecureConfiguration` naming each
        setting to change and how.
        """
        problems: list[str] = []
        node_is_dev = node_chain_id is None or node_chain_id in DEV_CHAIN_IDS
        strict = self.env == Environment.production or not self.is_dev_chain or not node_is_dev
        where = f"FEDLEDGER_ENV={self.env.value}, FEDLEDGER_CHAIN_ID={self.chain_id}"
        if node_chain_id is not None and node_chain_id != self.chain_id:
            where += f", the node's chain id {node_chain_id}"
            problems.append(
                f"FEDLEDGER_CHAIN_ID is {self.chain_id} but the node at FEDLEDGER_CHAIN_RPC_URL serves chain "
                f"{node_chain_id}: set FEDLEDGER_CHAIN_ID={node_chain_id} (or point the RPC at the right node)"
            )
        for setting, addresses in (
            ("FEDLEDGER_OPERATOR_ADDRESSES", self.operator_addresses),
            ("FEDLEDGER_ROUND_RUNNER_ADDRESSES", self.round_runner_addresses),
        ):
            dev = [a for a in addresses if strict and is_dev_address(a)]
            if dev:
                problems.append(
                    f"{setting} names public development accounts ({', '.join(dev)}; {where}): their keys "
                    "are in every Hardhat install; use addresses whose keys only you hold"
                )
        secret = self.jwt_secret.get_secret_value()
        if strict and secret == DEV_JWT_SECRET:
            problems.append(
                f"FEDLEDGER_JWT_SECRET is the public development default ({where}); anyone can forge an "
                f"operator token with it: set FEDLEDGER_JWT_SECRET to {_SECRET_HINT}"
            )
        elif strict and len(secret.encode()) < MIN_JWT_SECRET_BYTES:
            problems.append(
                f"FEDLEDGER_JWT_SECRET is {len(secret.encode())} bytes ({where}); it must be at least "
                f"{MIN_JWT_SECRET_BYTES}: set it to {_SECRET_HINT}"
            )
        for name in ("aggregator_private_key", "model_signer_private_key"):
            key = getattr(self, name).get_secret_value()
            env_name = f"FEDLEDGER_{name.upper()}"
            if strict and not key:
                problems.append(f"{env_name} is empty; it must be set outside the dev chain")
            if key and is_dev_private_key(key) and strict:
                problems.append(f"{env_name} is a well-known development key; use a private key of your own")
        if problems:
            raise InsecureConfiguration("refusing to start: " + "; ".join(problems))


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once and cached (tests reset them with ``get_settings.cache_clear()``)."""
    return Settings()
