"""Fluxion's Java-style Kafka security options, mapped to aiokafka.

Manifests written for Fluxion's Java runtime say ``securityProtocol:
SASL_SSL``, ``saslMechanism: SCRAM-SHA-512`` and a JAAS line such as
``org.apache.kafka.common.security.scram.ScramLoginModule required
username="app" password="...";``. aiokafka wants ``security_protocol``,
``sasl_mechanism``, ``sasl_plain_username``/``sasl_plain_password`` and an
``ssl.SSLContext``. Secrets stay wrapped until this module hands them to the
client, and no error message ever repeats a secret value.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import ConnectorOption, OptionType, Secret, reveal

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

SECURITY_OPTIONS: tuple[ConnectorOption, ...] = (
    ConnectorOption(
        "securityProtocol",
        OptionType.ENUM,
        default="PLAINTEXT",
        choices=PROTOCOLS,
        description="How to talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    ),
    ConnectorOption(
        "saslMechanism",
        OptionType.ENUM,
        choices=MECHANISMS,
        description="SASL mechanism for SASL_* protocols (default PLAIN).",
    ),
    ConnectorOption(
        "saslJaasConfig",
        OptionType.SECRET,
        description='A Java JAAS line: `... required username="u" password="p";` '
        "(username and password are read).",
    ),
    ConnectorOption("saslUsername", OptionType.STRING, description="SASL user (instead of saslJaasConfig)."),
    ConnectorOption(
        "saslPassword", OptionType.SECRET, description="SASL password (instead of saslJaasConfig)."
    ),
    ConnectorOption(
        "sslCaFile",
        OptionType.STRING,
        aliases=("sslCaLocation", "ssl.ca.location"),
        description="PEM file with the CA certificates that signed the brokers' certificates.",
    ),
    ConnectorOption(
        "sslCertFile",
        OptionType.STRING,
        aliases=("sslCertificateLocation", "ssl.certificate.location"),
        description="PEM client certificate (mutual TLS).",
    ),
    ConnectorOption(
        "sslKeyFile",
        OptionType.STRING,
        aliases=("sslKeyLocation", "ssl.key.location"),
        description="PEM private key of the client certificate.",
    ),
    ConnectorOption(
        "sslKeyPassword", OptionType.SECRET, description="Password of the client key, if encrypted."
    ),
    ConnectorOption(
        "sslCheckHostname",
        OptionType.BOOL,
        default=True,
        description="Verify that the broker certificate matches its host name (keep true outside tests).",
    ),
)

_JAAS_PAIR = re.compile(r"""(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s;"']+))""")
_JAAS_HEAD = re.compile(r"^\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b", re.IGNORECASE)


def parse_jaas(text: str) -> dict[str, str]:
    """The key/value pairs of a one-module JAAS line; raises ValueError without echoing the text."""
    head = _JAAS_HEAD.match(text)
    if head is None:
        raise ValueError(
            'expected `<LoginModule class> required key="value" ...;` '
            "(e.g. org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="u" password="p";)'
        )
    body = text[head.end() :]
    pairs: dict[str, str] = {}
    for match in _JAAS_PAIR.finditer(body):
        raw = next(group for group in match.groups()[1:] if group is not None)
        pairs[match[1]] = re.sub(r"\\(.)", r"\1", raw)
    pairs["loginModule"] = head[1]
    return pairs


def _credentials(values: Mapping[str, Any], path: tuple[str, ...]) -> tuple[str, str]:
    jaas = values.get("saslJaasConfig")
    username = values.get("saslUsername")
    password = reveal(values.get("saslPassword"))
    if jaas is not None:
        try:
            pairs = parse_jaas(reveal(jaas))
        except ValueError as exc:
            raise OptionError(
                f"cannot read `saslJaasConfig`: {exc}", path=(*path, "saslJaasConfig")
            ) from None
        module = pairs["loginModule"].rsplit(".", 1)[-1]
        if module not in ("PlainLoginModule", "ScramLoginModule"):
            raise OptionError(
                f"`saslJaasConfig` uses {module}; only PlainLoginModule and ScramLoginModule are supported",
                path=(*path, "saslJaasConfig"),
            )
        username = username or pairs.get("username")
        password = password or pairs.get("password")
    if not username or not password:
        raise OptionError(
            "SASL needs a username and a password",
            path=path,
            hint="set `saslJaasConfig` (username=... password=...) or `saslUsername` and `saslPassword`",
        )
    return str(username), str(password)


def _ssl_context(values: Mapping[str, Any], path: tuple[str, ...]) -> ssl.SSLContext:
    files = {name: values.get(name) for name in ("sslCaFile", "sslCertFile", "sslKeyFile")}
    for name, file in files.items():
        if file is not None and not Path(file).is_file():
            raise OptionError(f"`{name}` names a file that does not exist: {file}", path=(*path, name))
    if files["sslKeyFile"] and not files["sslCertFile"]:
        raise OptionError("`sslKeyFile` needs `sslCertFile`", path=(*path, "sslCertFile"))
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files["sslCaFile"])
    try:
        if files["sslCertFile"]:
            key_password = values.get("sslKeyPassword")
            context.load_cert_chain(
                files["sslCertFile"],
                files["sslKeyFile"],
                password=reveal(key_password) if isinstance(key_password, Secret) else key_password,
            )
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or ""
        raise OptionError(
            f"cannot load the client certificate or key: {type(exc).__name__} {reason}".rstrip(),
            path=(*path, "sslCertFile"),
        ) from None
    if not values.get("sslCheckHostname", True):
        context.check_hostname = False
    return context


def security_kwargs(values: Mapping[str, Any], *, path: str = "") -> dict[str, Any]:
    """aiokafka keyword arguments for the security options of one connector block."""
    where = (path,) if path else ()
    protocol = values.get("securityProtocol") or "PLAINTEXT"
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = values.get("saslMechanism") or "PLAIN"
        username, password = _credentials(values, where)
        kwargs["sasl_plain_username"] = username
        kwargs["sasl_plain_password"] = password
    elif values.get("saslMechanism") or values.get("saslJaasConfig") or values.get("saslUsername"):
        raise OptionError(
            f"SASL options are set but `securityProtocol` is {protocol}",
            path=(*where, "securityProtocol"),
            hint="use SASL_PLAINTEXT or SASL_SSL",
        )
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = _ssl_context(values, where)
    elif any(values.get(name) for name in ("sslCaFile", "sslCertFile", "sslKeyFile")):
        raise OptionError(
            f"TLS files are set but `securityProtocol` is {protocol}",
            path=(*where, "securityProtocol"),
            hint="use SSL or SASL_SSL",
        )
    return kwargs
