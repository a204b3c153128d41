"""What one job cost, estimated: Lambda, SQS, DynamoDB and S3 at list prices, and the model's
tokens at the prices configured per endpoint.

Pure arithmetic on the job's counters (tokens, :class:`shared.jobs.Metering`) and a
:class:`Pricing`; nothing here calls AWS. Left out, as too small or not the job's own: free
tiers, the SQS polls of an idle queue, storage (the payload bucket expires objects after 30
days), data transfer, CloudWatch Logs and metrics, the DeadLetter function, and the
operator's own reads (status, results).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from shared.errors import ConfigError
from shared.jobs import JobStatus
from shared.queue_ops import SQS_BATCH_MAX_ENTRIES
from shared.store.jobs_table import METERING_WRITE_UNITS

#: The worker function's variable holding the price list (template.yaml: the Prices parameter).
PRICES_ENV = "PRICES"
#: SQS bills each 64 KB chunk of a request's payload as one request.
SQS_BILLED_CHUNK_BYTES = 64 * 1024
#: An eventually consistent read of an item up to 4 KB (the worker's BatchGetItem).
EVENTUALLY_CONSISTENT_READ_UNITS = 0.5
#: A retry note is one plain BatchWriteItem put of a small item.
RETRY_NOTE_WRITE_UNITS = 1
MILLION = 1_000_000


@dataclass(frozen=True)
class AwsPrices:
    """USD list prices in us-east-1, free tiers ignored. Source: the AWS pricing pages
    (aws.amazon.com/lambda/pricing, /sqs/pricing, /dynamodb/pricing on-demand, /s3/pricing,
    S3 Standard) as published in 2025, after DynamoDB's on-demand price cut of November
    2024; written here on 2026-11-29. Other regions or newer prices: the stack's ``Prices``
    parameter, ``{"aws": {"field": price}}``."""

    lambda_gb_second_arm64: float = 0.0000133334
    lambda_gb_second_x86_64: float = 0.0000166667
    lambda_request: float = 0.20 / MILLION
    sqs_request: float = 0.40 / MILLION
    dynamodb_write_unit: float = 0.625 / MILLION
    dynamodb_read_unit: float = 0.125 / MILLION
    s3_put: float = 0.005 / 1000
    s3_get: float = 0.0004 / 1000

    def lambda_gb_second(self, architecture: str) -> float:
        return self.lambda_gb_second_arm64 if architecture == "arm64" else self.lambda_gb_second_x86_64


@dataclass(frozen=True)
class TokenPrice:
    """USD per million tokens of one endpoint's model."""

    input_per_million: float
    output_per_million: float
    #: The share of these prices the endpoint's native batch API takes off (0.5: half price);
    #: 0 when not set. A price setting (``Prices``), not a constant: providers change it.
    batch_discount: float = 0.0

    def batch(self) -> TokenPrice:
        """The prices on the batch lane."""
        keep = 1.0 - self.batch_discount
        return TokenPrice(self.input_per_million * keep, self.output_per_million * keep, self.batch_discount)


@dataclass(frozen=True)
class PriceList:
    aws: AwsPrices = field(default_factory=AwsPrices)
    #: By endpoint name; an endpoint missing here has its tokens counted but not priced.
    endpoints: Mapping[str, TokenPrice] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: str) -> PriceList:
        """``{"endpoints": {"NAME": {"input_per_million": 0.15, "output_per_million": 0.6}},
        "aws": {"dynamodb_write_unit": 1.25e-6}}``; both keys optional, empty text for none."""
        try:
            data = json.loads(raw) if raw.strip() else {}
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            aws_names = {f.name for f in fields(AwsPrices)}
            unknown = set(data.get("aws", {})) - aws_names
            if unknown:
                raise ValueError(f"unknown AWS price(s) {sorted(unknown)}; known: {sorted(aws_names)}")
            aws = AwsPrices(**{k: _price(v) for k, v in data.get("aws", {}).items()})
            endpoints = {
                name: TokenPrice(
                    _price(p["input_per_million"]),
                    _price(p["output_per_million"]),
                    _discount(p.get("batch_discount", 0)),
                )
                for name, p in data.get("endpoints", {}).items()
            }
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"{PRICES_ENV} is not a valid price list: {e}") from e
        return cls(aws, endpoints)


def _discount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"a batch_discount is a share of the price from 0 to below 1 (0.5: half price), got {value!r}")
    return float(value)


def _price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"a price must be a number of USD, 0 or more, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Pricing:
    """Everything the estimate needs besides the job: the worker's memory and architecture,
    and the prices."""

    memory_mb: int
    architecture: str
    prices: PriceList = field(default_factory=PriceList)

    @classmethod
    def from_function_configuration(cls, config: Mapping[str, Any]) -> Pricing:
        """From Lambda's GetFunctionConfiguration of the worker (its MemorySize,
        Architectures and the ``PRICES`` variable the template sets)."""
        variables = (config.get("Environment") or {}).get("Variables") or {}
        return cls(
            memory_mb=int(config["MemorySize"]),
            architecture=(config.get("Architectures") or ["x86_64"])[0],
            prices=PriceList.from_json(variables.get(PRICES_ENV, "")),
        )


@dataclass(frozen=True)
class CostEstimate:
    """USD by service, and the quantities they were priced from."""

    lambda_usd: float
    sqs_usd: float
    dynamodb_usd: float
    s3_usd: float
    #: None when the job's endpoint has no price configured.
    model_usd: float | None
    gb_seconds: float
    sqs_requests: float
    dynamodb_write_units: float
    dynamodb_read_units: float
    s3_requests: float
    #: The model's tokens priced on each lane (None when not priced): the online price, and
    #: the batch price (the online one less the endpoint's ``batch_discount``).
    model_online_usd: float | None = None
    model_batch_usd: float | None = None
    batch_discount: float = 0.0

    def lanes_line(self) -> str:
        """``online $0.1200 · batch $0.0600 (50% batch discount)`` for the model's tokens."""
        if self.model_online_usd is None or self.model_batch_usd is None:
            return "not priced"
        discount = f"{self.batch_discount:.0%} batch discount" if self.batch_discount else "no batch_discount set"
        return f"online {usd(self.model_online_usd)} · batch {usd(self.model_batch_usd)} ({discount})"

    @property
    def aws_usd(self) -> float:
        return self.lambda_usd + self.sqs_usd + self.dynamodb_usd + self.s3_usd

    @property
    def total_usd(self) -> float:
        """AWS plus the model; the model counts as 0 when it is not priced."""
        return self.aws_usd + (self.model_usd or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "aws_usd": self.aws_usd, "total_usd": self.total_usd}

    def summary(self) -> str:
        """``$0.1234 (Lambda $0.0012 · SQS … · model $0.1200)`` for one line of text."""
        model = usd(self.model_usd) if self.model_usd is not None else "not priced"
        return (
            f"{usd(self.total_usd)} (Lambda {usd(self.lambda_usd)} · SQS {usd(self.sqs_usd)}"
            f" · DynamoDB {usd(self.dynamodb_usd)} · S3 {usd(self.s3_usd)} · model {model})"
        )


def usd(amount: float) -> str:
    """Dollars with the digits that matter: ``$12.35``, ``$0.0123``, ``$0.000012``."""
    if amount == 0:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.4f}"
    if amount >= 0.000001:
        return f"${amount:.6f}"
    return "<$0.000001"


def estimate_cost(job: JobStatus, pricing: Pricing) -> CostEstimate:
    m, counts, aws = job.metering, job.counts, pricing.prices.aws

    gb_seconds = pricing.memory_mb / 1024 * m.compute_ms / 1000
    lambda_usd = gb_seconds * aws.lambda_gb_second(pricing.architecture) + m.invocations * aws.lambda_request

    # Messages travel up to 10 to a call; a call is billed per 64 KB of its payload.
    mean_bytes = m.delivered_bytes / m.deliveries if m.deliveries else 0.0

    def sqs_calls(messages: float) -> float:
        return max(messages / SQS_BATCH_MAX_ENTRIES, messages * mean_bytes / SQS_BILLED_CHUNK_BYTES)

    retries = max(0, m.deliveries - counts.terminal)
    # Sent once by submit, received once per delivery; each delivery is then deleted (done)
    # or has its visibility changed (retry later), 10 to a call.
    sqs_requests = sqs_calls(job.meta.enqueued) + sqs_calls(m.deliveries) + m.deliveries / SQS_BATCH_MAX_ENTRIES

    write_units = m.write_units + m.invocations * METERING_WRITE_UNITS + retries * RETRY_NOTE_WRITE_UNITS
    # Per delivery, its result looked up (already answered?); per invocation, its jobs.
    read_units = (m.deliveries + m.invocations) * EVENTUALLY_CONSISTENT_READ_UNITS

    # A claim-checked request is put once by submit and read at each delivery; an offloaded
    # answer is put once by the worker and read once by `results`.
    claimed_requests = min(m.claim_checks, job.total)
    s3_puts, s3_gets = claimed_requests + m.offloaded, m.claim_checks + m.offloaded

    price = pricing.prices.endpoints.get(job.meta.endpoint)

    def tokens_usd(p: TokenPrice | None) -> float | None:
        if p is None:
            return None
        return (counts.prompt_tokens * p.input_per_million + counts.completion_tokens * p.output_per_million) / MILLION

    online_usd, batch_usd = tokens_usd(price), tokens_usd(price.batch() if price else None)
    # A batch-lane job's tokens are billed at the batch price.
    model_usd = batch_usd if job.meta.lane == "batch" else online_usd
    return CostEstimate(
        lambda_usd=lambda_usd,
        sqs_usd=sqs_requests * aws.sqs_request,
        dynamodb_usd=write_units * aws.dynamodb_write_unit + read_units * aws.dynamodb_read_unit,
        s3_usd=s3_puts * aws.s3_put + s3_gets * aws.s3_get,
        model_usd=model_usd,
        gb_seconds=gb_seconds,
        sqs_requests=sqs_requests,
        dynamodb_write_units=write_units,
        dynamodb_read_units=read_units,
        s3_requests=s3_puts + s3_gets,
        model_online_usd=online_usd,
        model_batch_usd=batch_usd,
        batch_discount=price.batch_discount if price else 0.0,
    )
