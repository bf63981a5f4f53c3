"""Option mapping (no broker needed): Java-style properties, security, SASL/JAAS, TLS, defaults."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fluxion_connect_kafka.providers import sink_settings, source_settings
from fluxion_connect_kafka.security import parse_jaas

from fluxion_flows.errors import OptionError
from fluxion_flows.spi import ConnectorKind, SinkContext, SourceContext
from tests.kafka.util import REGISTRY

SECRET = "s3cr3t-Pa55"


def consumer(**raw: Any) -> dict[str, Any]:
    config = REGISTRY.configure(ConnectorKind.SOURCE, "kafka", {"bootstrapServers": "b1:9092,b2:9092", **raw})
    client: dict[str, Any] = source_settings(config, SourceContext(pipeline_id="pipe")).client
    return client


def producer(**raw: Any) -> dict[str, Any]:
    config = REGISTRY.configure(ConnectorKind.SINK, "kafka", {"bootstrapServers": "b:9092", **raw})
    client: dict[str, Any] = sink_settings(config, SinkContext(pipeline_id="pipe")).client
    return client


def test_pass_through_consumer_properties_become_aiokafka_arguments() -> None:
    kwargs = consumer(
        topic="t",
        **{
            "auto.offset.reset": "latest",
            "max.poll.records": "250",
            "fetch.max.bytes": 1048576,
            "session.timeout.ms": "2000",
            "heartbeat.interval.ms": 200,
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "org.apache.kafka.clients.consumer.RangeAssignor",
            "enable.auto.commit": "false",
        },
    )
    assert kwargs["bootstrap_servers"] == ["b1:9092", "b2:9092"]
    assert kwargs["auto_offset_reset"] == "latest"
    assert kwargs["max_poll_records"] == 250 and kwargs["fetch_max_bytes"] == 1048576
    assert kwargs["session_timeout_ms"] == 2000 and kwargs["heartbeat_interval_ms"] == 200
    assert kwargs["isolation_level"] == "read_committed"
    assert kwargs["partition_assignment_strategy"][0].__name__ == "RangePartitionAssignor"
    assert "enable_auto_commit" not in kwargs


def test_defaults_group_id_and_offset_reset() -> None:
    config = REGISTRY.configure(
        ConnectorKind.SOURCE, "kafka", {"bootstrapServers": "b:9092", "topic": "orders"}
    )
    settings = source_settings(config, SourceContext(pipeline_id="pipe"))
    assert settings.group_id == "fluxion-orders" and settings.topics == ["orders"]
    assert settings.client["auto_offset_reset"] == "earliest"
    assert settings.poll_timeout == 0.5 and settings.value_deserializer == "json"
    many = REGISTRY.configure(
        ConnectorKind.SOURCE, "kafka", {"bootstrapServers": "b:9092", "topic": ["a", "b"]}
    )
    assert source_settings(many, SourceContext(pipeline_id="pipe")).group_id == "fluxion-pipe"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        (
            "receive.buffer.bytes",
            65536,
            "`receive.buffer.bytes` is not supported: aiokafka has no equivalent",
        ),
        ("enable.auto.commit", "true", "commits offsets itself at each checkpoint"),
        ("value.deserializer", "x", "use the option `valueDeserializer`"),
        ("ssl.truststore.location", "/x.jks", "JKS truststores are a Java format"),
        ("auto.offset.reset", "sometimes", "expected one of earliest, latest, none"),
        ("max.poll.records", "many", "invalid value for Kafka consumer property `max.poll.records`"),
    ],
)
def test_unsupported_or_invalid_properties_are_named(name: str, value: Any, fragment: str) -> None:
    with pytest.raises(OptionError) as caught:
        consumer(topic="t", **{name: value})
    assert fragment in str(caught.value)


def test_unknown_camel_case_option_is_an_unknown_option() -> None:
    with pytest.raises(OptionError) as caught:
        consumer(topic="t", groupID="x")
    assert "unknown option `groupID`" in str(caught.value) and "groupId" in str(caught.value)


def test_topic_or_pattern_is_required_but_not_both() -> None:
    with pytest.raises(OptionError, match=r"missing required option `topic`"):
        consumer()
    with pytest.raises(OptionError, match="either `topic` or `topicPattern`"):
        consumer(topic="a", topicPattern="b.*")
    with pytest.raises(OptionError, match="not a valid regular expression"):
        consumer(topicPattern="(")


def test_producer_options_and_properties() -> None:
    kwargs = producer(
        topic="out",
        acks="all",
        compression="zstd",
        linger="PT0.005S",
        **{"batch.size": "65536", "max.request.size": 2_000_000, "request.timeout.ms": 5000},
    )
    assert kwargs["acks"] == "all" and kwargs["compression_type"] == "zstd" and kwargs["linger_ms"] == 5
    assert kwargs["max_batch_size"] == 65536 and kwargs["max_request_size"] == 2_000_000
    assert kwargs["request_timeout_ms"] == 5000
    assert producer(topic="out")["acks"] == 1
    assert producer(topic="out", acks="-1")["acks"] == "all"
    with pytest.raises(OptionError, match=r"`buffer\.memory` is not supported"):
        producer(topic="out", **{"buffer.memory": 1})
    with pytest.raises(OptionError, match="missing required option `topic`"):
        producer()
    with pytest.raises(OptionError, match="either `partition` or `partitionKeyField`"):
        producer(topic="out", partition=1, partitionKeyField="c")


@pytest.mark.parametrize(
    ("module", "mechanism"),
    [
        ("org.apache.kafka.common.security.plain.PlainLoginModule", "PLAIN"),
        ("org.apache.kafka.common.security.scram.ScramLoginModule", "SCRAM-SHA-256"),
        ("org.apache.kafka.common.security.scram.ScramLoginModule", "SCRAM-SHA-512"),
    ],
)
def test_sasl_jaas_config_is_parsed_into_username_and_password(module: str, mechanism: str) -> None:
    jaas = f'{module} required username="app-user" password="{SECRET}";'
    kwargs = consumer(
        topic="t", securityProtocol="SASL_PLAINTEXT", saslMechanism=mechanism, saslJaasConfig=jaas
    )
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == mechanism
    assert kwargs["sasl_plain_username"] == "app-user" and kwargs["sasl_plain_password"] == SECRET


def test_jaas_parsing_handles_quotes_and_escapes() -> None:
    pairs = parse_jaas(
        "org.apache.kafka.common.security.plain.PlainLoginModule required\n"
        '  username=\'single\' password="with \\"quote\\" and ; semicolon" serviceName=kafka;'
    )
    assert pairs["username"] == "single"
    assert pairs["password"] == 'with "quote" and ; semicolon'
    assert pairs["serviceName"] == "kafka"


def test_sasl_username_and_password_options() -> None:
    kwargs = producer(
        topic="out",
        securityProtocol="SASL_PLAINTEXT",
        saslMechanism="SCRAM-SHA-512",
        saslUsername="u",
        saslPassword=SECRET,
    )
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "u",
        SECRET,
    )


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"securityProtocol": "SASL_SSL"}, "SASL needs a username and a password"),
        (
            {"securityProtocol": "SASL_PLAINTEXT", "saslJaasConfig": f"password={SECRET}"},
            "cannot read `saslJaasConfig`",
        ),
        (
            {
                "securityProtocol": "SASL_PLAINTEXT",
                "saslJaasConfig": f'com.sun.security.auth.module.Krb5LoginModule required password="{SECRET}";',  # noqa: E501
            },
            "only PlainLoginModule and ScramLoginModule",
        ),
        (
            {"saslUsername": "u", "saslPassword": SECRET},
            "SASL options are set but `securityProtocol` is PLAINTEXT",
        ),
        ({"saslMechanism": "GSSAPI", "securityProtocol": "SASL_SSL"}, "expected one of PLAIN, SCRAM-SHA-256"),
        (
            {"securityProtocol": "SSL", "sslCaFile": "/no/such/ca.pem"},
            "`sslCaFile` names a file that does not exist",
        ),
        ({"sslCaFile": "/no/such/ca.pem"}, "TLS files are set but `securityProtocol` is PLAINTEXT"),
    ],
)
def test_security_misconfiguration_is_explained_without_the_secret(
    raw: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(OptionError) as caught:
        consumer(topic="t", **raw)
    assert fragment in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.args)


def test_secrets_are_masked_in_the_redacted_config() -> None:
    config = REGISTRY.configure(
        ConnectorKind.SOURCE,
        "kafka",
        {
            "bootstrapServers": "b:9092",
            "topic": "t",
            "securityProtocol": "SASL_SSL",
            "saslJaasConfig": f'x.PlainLoginModule required username="u" password="{SECRET}";',
        },
    )
    assert SECRET not in repr(config.redacted()) and SECRET not in repr(config.values)


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "client.key", directory / "client.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=fluxion-test",
        ],
        check=True,
        capture_output=True,
    )
    return {"key": key, "cert": cert}


def test_tls_files_build_an_ssl_context(pem_files: dict[str, Path]) -> None:
    kwargs = consumer(
        topic="t",
        securityProtocol="SASL_SSL",
        saslUsername="u",
        saslPassword=SECRET,
        sslCaFile=str(pem_files["cert"]),
        sslCertFile=str(pem_files["cert"]),
        sslKeyFile=str(pem_files["key"]),
        sslCheckHostname=False,
    )
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is False
    assert any(c["subject"] == ((("commonName", "fluxion-test"),),) for c in context.get_ca_certs())
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "PLAIN"


def test_mismatched_key_is_a_clear_error(pem_files: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True, capture_output=True)
    with pytest.raises(OptionError, match="cannot load the client certificate or key"):
        consumer(topic="t", securityProtocol="SSL", sslCertFile=str(pem_files["cert"]), sslKeyFile=str(other))


def test_resolved_settings_never_print_the_password() -> None:
    config = REGISTRY.configure(
        ConnectorKind.SOURCE,
        "kafka",
        {
            "bootstrapServers": "b:9092",
            "topic": "t",
            "securityProtocol": "SASL_PLAINTEXT",
            "saslPassword": SECRET,
            "saslUsername": "u",
        },
    )
    settings = source_settings(config, SourceContext(pipeline_id="pipe"))
    assert settings.client["sasl_plain_password"] == SECRET  # handed to aiokafka ...
    assert SECRET not in repr(settings) and SECRET not in str(settings)  # ... but never printed
    sink_config = REGISTRY.configure(
        ConnectorKind.SINK,
        "kafka",
        {
            "bootstrapServers": "b:9092",
            "topic": "t",
            "securityProtocol": "SASL_PLAINTEXT",
            "saslPassword": SECRET,
            "saslUsername": "u",
        },
    )
    assert SECRET not in repr(sink_settings(sink_config, SinkContext(pipeline_id="pipe")))
