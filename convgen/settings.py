"""Process settings, read once from the environment; every field is documented (the README table is checked)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_instance_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    """Everything a convgen process can be configured with; env var = field name in upper case unless aliased."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", case_sensitive=False, populate_by_name=True, protected_namespaces=()
    )

    # --- storage -----------------------------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL DSN. When unset, an embedded PostgreSQL is started under CONVGEN_DATA_DIR/pgdata.",
    )
    database_pool_min_size: int = Field(default=2, ge=0, description="Minimum connections kept in the pool.")
    database_pool_max_size: int = Field(default=20, ge=1, description="Maximum connections in the pool.")
    convgen_data_dir: Path = Field(
        default=Path(".convgen"),
        description="Directory for local state: the embedded PostgreSQL data and the filesystem blob store.",
    )
    blob_store: Literal["file", "s3"] = Field(
        default="file", description="Blob store adapter: file (local directory) or s3 (S3 or MinIO through aioboto3)."
    )
    blob_dir: Path | None = Field(
        default=None, description="Root of the filesystem blob store; defaults to CONVGEN_DATA_DIR/blobs."
    )
    blob_fsync: bool = Field(
        default=False,
        description="Filesystem blob store: fsync every blob (durable across a machine crash; much slower).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint URL (MinIO, moto); unset means AWS's own endpoint."
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="AWS region for S3 (AWS_DEFAULT_REGION is accepted too).",
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None, description="S3 access key id; unset means the standard AWS credential chain."
    )
    aws_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret access key.")
    s3_create_buckets: bool = Field(default=True, description="Create the buckets at start when they do not exist.")
    conversation_bucket: str = Field(
        default="conversation-files", description="Bucket for raw model responses and parsed conversations."
    )
    log_bucket: str = Field(default="batch-logs", description="Bucket for job logs ({job_id}/log.txt).")

    # --- model -------------------------------------------------------------------------------------------------
    model_client: Literal["auto", "anthropic", "offline"] = Field(
        default="auto",
        description="Model client: anthropic (Claude), offline (deterministic synthetic generator), "
        "auto = anthropic when ANTHROPIC_API_KEY is set, else offline.",
    )
    anthropic_api_key: SecretStr | None = Field(default=None, description="Anthropic API key. Never logged.")
    anthropic_base_url: str | None = Field(
        default=None, description="Messages API base URL; unset means Anthropic's own."
    )
    anthropic_model: str = Field(default="claude-sonnet-5-5", description="Claude model name.")
    model_max_tokens: int = Field(default=8192, ge=256, le=64000, description="max_tokens per model call.")
    model_timeout_seconds: float = Field(default=180.0, gt=0, description="Timeout of one model HTTP call.")
    model_max_attempts: int = Field(
        default=4, ge=1, le=20, description="Tries per model call for transient errors (429, 529, 5xx, timeouts)."
    )
    model_retry_base_seconds: float = Field(
        default=1.0, ge=0, description="First backoff between model tries; doubles per try, with jitter."
    )
    model_retry_max_seconds: float = Field(default=30.0, ge=0, description="Longest backoff between model tries.")
    model_max_concurrency: int = Field(
        default=64, ge=1, description="Model calls in flight at once per generation service process."
    )
    generation_claim_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Lease on a request_id being generated; a dead holder's claim is taken over after it expires.",
    )
    model_requests_per_minute: int = Field(
        default=0,
        ge=0,
        description="Client-side request rate cap; 0 = learn it from the API's rate-limit headers.",
    )

    # --- services ----------------------------------------------------------------------------------------------
    listen_host: str = Field(
        default="127.0.0.1", description="Address the gRPC servers bind to (0.0.0.0 in containers)."
    )
    generation_port: int = Field(default=50051, ge=0, le=65535, description="Generation service port.")
    batch_port: int = Field(default=50052, ge=0, le=65535, description="Batch service port.")
    generation_target: str = Field(
        default="localhost:50051",
        description="gRPC target of the generation service for the batch service "
        "(e.g. dns:///generation:50051, balanced round-robin).",
    )
    generation_deadline_seconds: float = Field(
        default=300.0, gt=0, description="Deadline of one GenerateConversation call made by the batch service."
    )
    grpc_max_message_bytes: int = Field(
        default=4 * 1024 * 1024, ge=64 * 1024, description="Largest gRPC message accepted or sent."
    )
    max_page_size: int = Field(default=1000, ge=1, description="Largest page_size a List call accepts.")
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="On SIGTERM, how long in-flight calls and items may take to finish."
    )
    ready_file: Path | None = Field(
        default=None,
        description="When set, each service appends 'NAME HOST:PORT' to this file once it serves (for supervisors "
        "and tests that start services on port 0).",
    )
    instance_name: str = Field(
        default_factory=_default_instance_name,
        description="Name of this process in leases and logs; defaults to hostname-pid.",
    )

    # --- batch engine ------------------------------------------------------------------------------------------
    batch_max_items: int = Field(default=10_000, ge=1, description="Most items one batch job may have.")
    batch_default_concurrency: int = Field(default=8, ge=1, description="Concurrency of a job that does not set one.")
    batch_max_concurrency: int = Field(default=256, ge=1, description="Largest concurrency a job may ask for.")
    batch_worker_concurrency: int = Field(
        default=64, ge=1, description="Items processed at once by one batch service process, across all jobs."
    )
    batch_default_max_attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts per item when a job does not set max_attempts."
    )
    batch_lease_seconds: float = Field(
        default=30.0, gt=0, description="Lease on a claimed item; renewed by heartbeat, re-claimed when it expires."
    )
    batch_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait between claim rounds when no notification arrives."
    )
    batch_retry_base_seconds: float = Field(
        default=2.0, ge=0, description="First delay before an item's retry; doubles per attempt, with jitter."
    )
    batch_retry_max_seconds: float = Field(default=120.0, ge=0, description="Longest delay before an item's retry.")
    batch_max_lease_recoveries: int = Field(
        default=10, ge=1, description="Times an item may be recovered from a dead worker before it fails."
    )

    # --- cost: prices, token-rate pacing, prompt caching, effort, structured output (issue 12) -------------------
    model_price_table_file: Path | None = Field(
        default=None,
        description="Price table file (JSON, or TOML by its .toml suffix) replacing the packaged one; unset means "
        "the packaged table (convgen/data/prices.json).",
    )
    model_input_tokens_per_minute: int = Field(
        default=0,
        ge=0,
        description="Client-side input-token rate cap (uncached input and cache writes, as the API counts them); "
        "0 = learn it from the API's rate-limit headers.",
    )
    model_output_tokens_per_minute: int = Field(
        default=0,
        ge=0,
        description="Client-side output-token rate cap; 0 = learn it from the API's rate-limit headers.",
    )
    model_cache_ttl: Literal["5m", "1h"] = Field(
        default="5m",
        description="TTL of the prompt-cache breakpoints: 5m (writes cost 1.25x input) or 1h (2x input; for slow "
        "jobs and provider batches, whose items can be more than 5 minutes apart).",
    )
    model_effort: Literal["low", "medium", "high", "xhigh", "max"] = Field(
        default="medium",
        description="output_config.effort of every call. medium: writing a conversation to a detailed template "
        "needs little deliberation, and at the API's default (high) Sonnet thinks on almost every call, billed as "
        "output and counted against max_tokens (a truncated, failed item).",
    )
    model_structured_output: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: ask for the conversation's JSON schema (output_config.format) when the model says it "
        "supports structured outputs; off: never (the reply is parsed from text).",
    )
    estimate_default_output_tokens: int = Field(
        default=5000,
        ge=1,
        description="Output tokens per conversation assumed by estimates and budget reservations for a template "
        "with no stored conversation yet.",
    )
    batch_breaker_failures: int = Field(
        default=10,
        ge=1,
        description="A job pauses itself when this many of its last finished attempts all failed permanently for "
        "the same provider-side reason (bad API key, unknown model, no credit, rejected template).",
    )

    # --- dataset exports (DatasetService, run by the batch service) -------------------------------------------
    dataset_bucket: str = Field(
        default="datasets",
        description="Bucket for dataset exports ({export_id}/train.jsonl, eval.jsonl, manifest.json, report.md).",
    )
    dataset_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Lease on a running export; renewed while it runs, taken over by another replica when it expires.",
    )
    dataset_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest wait between looks for exports to run (CreateExport wakes its own replica at once).",
    )
    dataset_read_concurrency: int = Field(
        default=32, ge=1, le=1024, description="Conversation blobs one export reads at once."
    )
    dataset_spool_dir: Path | None = Field(
        default=None,
        description="Directory of an export's temporary spool file (about the size of its output); default the "
        "system temp directory.",
    )

    # --- security ----------------------------------------------------------------------------------------------
    auth_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens accepted in the authorization metadata. "
        "Unset: auth is off and only local (loopback) callers are accepted.",
    )
    generation_auth_token: SecretStr | None = Field(
        default=None, description="Bearer token the batch service presents to the generation service."
    )
    auth_open_health_and_reflection: bool = Field(
        default=True, description="Serve health checks and reflection without a token."
    )
    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM); enables TLS.")
    tls_key_file: Path | None = Field(default=None, description="Server private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA (PEM) that client certificates must chain to; enables mutual TLS."
    )
    generation_tls_ca_file: Path | None = Field(
        default=None, description="CA (PEM) the batch service trusts for the generation service; enables TLS to it."
    )
    generation_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate the batch service presents to the generation service (mTLS)."
    )
    generation_tls_key_file: Path | None = Field(default=None, description="Private key of GENERATION_TLS_CERT_FILE.")

    # --- logging -----------------------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field(
        default="json", description="json (one object per line) or text (for humans)."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object, info: ValidationInfo) -> object:
        # docker-compose's ${VAR:-} passes empty strings; for optional settings that means "not set".
        field = cls.model_fields.get(info.field_name or "")
        if value == "" and field is not None and field.default is None:
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed (the environment is not read again)."""
        return Settings.model_validate({**self.model_dump(), **changes})

    @property
    def blob_root(self) -> Path:
        """Root directory of the filesystem blob store."""
        return self.blob_dir if self.blob_dir is not None else self.convgen_data_dir / "blobs"

    @property
    def accepted_tokens(self) -> frozenset[str]:
        """The bearer tokens AUTH_TOKENS accepts."""
        if self.auth_tokens is None:
            return frozenset()
        return frozenset(t.strip() for t in self.auth_tokens.get_secret_value().split(",") if t.strip())

    @property
    def uses_offline_model(self) -> bool:
        """True when the offline generator serves model calls."""
        if self.model_client == "auto":
            return self.anthropic_api_key is None
        return self.model_client == "offline"

    def secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        values = [
            self.anthropic_api_key,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.generation_auth_token,
        ]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        return found + sorted(self.accepted_tokens)


def environment_variable_names() -> dict[str, str]:
    """Maps every environment variable a Settings field reads to the field's description."""
    names: dict[str, str] = {}
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        description = field.description or ""
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                names[str(choice).upper()] = description
        else:
            names[field_name.upper()] = description
    return names
