"""Endpoint API keys: read from Secrets Manager or an SSM SecureString, never from plain
configuration, cached by Powertools Parameters, and never logged."""

from __future__ import annotations

from shared.errors import ConfigError

KEY_MAX_AGE_S = 300


def resolve_api_key(ref: str) -> str | None:
    """``ssm:/path/to/key`` or ``secretsmanager:name``; empty means no key."""
    if not ref:
        return None
    kind, _, name = ref.partition(":")
    if not name:
        raise ConfigError("an API key reference looks like 'ssm:/name' or 'secretsmanager:name'")
    from aws_lambda_powertools.utilities import parameters

    if kind == "ssm":
        value = parameters.get_parameter(name, decrypt=True, max_age=KEY_MAX_AGE_S)
    elif kind == "secretsmanager":
        value = parameters.get_secret(name, max_age=KEY_MAX_AGE_S)
    else:
        raise ConfigError(f"unknown API key store {kind!r}: use 'ssm:' or 'secretsmanager:'")
    return str(value) if value else None
