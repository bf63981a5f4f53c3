"""The manifest model (reference §1) plus our extensions.

Our extensions are ``runtime``, ``errorPolicy``, ``checkpoint`` and ``pipelines``.

Field names are the manifest's own camelCase keys, so ``fluxion schema``
prints exactly what users write. Connector blocks (``source``, ``sink``,
``process``) stay plain maps here: their keys depend on the provider, and
:mod:`fluxion_flows.manifest.plan` validates them against the provider's
option schema with precise paths.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from fluxion_flows.spi.options import parse_duration

Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "format": "duration"}]},
        mode="validation",
    ),
]
"""Seconds; accepts ISO-8601 (``PT0.5S``), ``500ms``/``2s``/``1m``, or a number (the schema allows both)."""

PolicyName = Literal["failFast", "retry", "skipAndContinue", "deadLetter"]
FallbackName = Literal["failFast", "skipAndContinue", "deadLetter"]
OTHER_EXECUTION_TYPES = ("http", "javaBean", "pipelineCall", "webhook", "polling", "timer")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RuntimeConfig(_Strict):
    """Fluxion's runtime options (reference §3) and our run-level settings."""

    microBatchSize: int = Field(500, ge=1, description="Most documents per sink call.")
    queueCapacity: int = Field(2048, ge=1, description="Documents waiting between stages and sink.")
    sourceQueueCapacity: int = Field(16, ge=1, description="Batches waiting between source and executor.")
    workerThreadPoolSize: int = Field(1, ge=1, description="Accepted for Fluxion compatibility; see README.")
    directHandoff: bool = Field(False, description="true: strictly sequential fetch/transform/deliver.")
    maxBatchWait: Duration = Field(0.5, description="Longest wait to fill a batch.")
    metricsInterval: Duration = Field(5.0, description="How often metrics are published.")
    stopTimeout: Duration = Field(
        10.0, description="Graceful stop budget before in-flight work is abandoned."
    )
    allowFunctions: bool = Field(False, description="Allow `$function` stages to import Python callables.")


class ErrorPolicyConfig(_Strict):
    """The ``errorPolicy:`` block; a bare string (``errorPolicy: skipAndContinue``) is accepted too."""

    policy: PolicyName = "failFast"
    maxRetries: int = Field(3, ge=0)
    initialBackoff: Duration = 0.1
    maxBackoff: Duration = 10.0
    multiplier: float = Field(2.0, ge=1.0)
    jitter: float = Field(0.2, ge=0.0, le=1.0)
    then: FallbackName = "failFast"
    sink: dict[str, Any] | None = Field(None, description="The dead-letter sink (a sink block).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"policy": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Editors must accept the string shorthand too, so the schema is ``block | policy name``."""
        block = handler(schema)
        names = list(get_args(PolicyName))
        return {"anyOf": [block, {"type": "string", "enum": names}], "description": cls.__doc__}

    @model_validator(mode="after")
    def _needs_sink(self) -> ErrorPolicyConfig:
        uses_dead_letter = self.policy == "deadLetter" or (
            self.policy == "retry" and self.then == "deadLetter"
        )
        if uses_dead_letter and self.sink is None:
            raise ValueError("the deadLetter policy needs `sink:` (the dead-letter sink block)")
        return self


class CheckpointConfig(_Strict):
    """Where and how often checkpoints are committed."""

    store: str = Field("file", description="file | memory | prefect (the default inside Prefect runs).")
    directory: str = Field(".fluxion/checkpoints", description="For the file store.")
    block: str | None = Field(None, description="For the prefect store: block document name.")
    interval: Duration = Field(5.0, description="Commit at most this often.")
    everyDocuments: int | None = Field(None, ge=1, description="Also commit after this many documents.")


class PipelineDef(_Strict):
    stages: list[dict[str, Any]]
    globals: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None


class StreamingExecution(_Strict):
    type: Literal["streaming"]
    stream: str | None = None
    description: str | None = None
    source: dict[str, Any]
    process: dict[str, Any] | None = None
    sink: dict[str, Any]
    runtime: RuntimeConfig | None = None
    errorPolicy: ErrorPolicyConfig | None = None
    checkpoint: CheckpointConfig | None = None


class OtherExecution(_Open):
    """Non-streaming executions parse, and are reported as not runnable by this product."""

    type: Literal["http", "javaBean", "pipelineCall", "webhook", "polling", "timer"]


Execution = Annotated[StreamingExecution | OtherExecution, Field(discriminator="type")]


class OperationDef(_Open):
    operationId: str | None = None
    kind: Literal["action", "trigger"] = "trigger"
    displayName: str | None = None
    description: str | None = None
    inputSchema: dict[str, Any] | None = None
    outputSchema: dict[str, Any] | None = None
    execution: Execution

    @field_validator("inputSchema", "outputSchema")
    @classmethod
    def _is_json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value


class OperationRef(_Strict):
    ref: str = Field(alias="$ref", pattern=r"^#/operationDefs/.+")


def _operation_form(value: Any) -> str:
    """Which of the three forms an ``operations`` entry is, so errors speak about that form only."""
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict) and "$ref" in value:
        return "ref"
    return "definition"


OperationEntry = Annotated[
    Annotated[str, Tag("name")]
    | Annotated[OperationRef, Tag("ref")]
    | Annotated[OperationDef, Tag("definition")],
    Discriminator(_operation_form),
]


class Manifest(_Open):
    """A Fluxion connector-bundle manifest."""

    schemaVersion: str = "1.0.0"
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = "1.0.0"
    displayName: str | None = None
    description: str | None = None
    scope: str = Field("default::default", description="tenant::pipeline used for connectionRef lookups.")
    operations: dict[str, OperationEntry] = Field(default_factory=dict)
    operationDefs: dict[str, OperationDef] = Field(default_factory=dict)
    pipelines: dict[str, PipelineDef | list[dict[str, Any]]] = Field(default_factory=dict)
    runtime: RuntimeConfig = Field(default_factory=lambda: RuntimeConfig.model_validate({}))
    errorPolicy: ErrorPolicyConfig = Field(default_factory=lambda: ErrorPolicyConfig.model_validate({}))
    checkpoint: CheckpointConfig = Field(default_factory=lambda: CheckpointConfig.model_validate({}))

    @field_validator("scope")
    @classmethod
    def _scope_shape(cls, value: str) -> str:
        if value.count("::") != 1 or not all(value.split("::")):
            raise ValueError("expected `tenant::pipeline`")
        return value


KNOWN_ROOT_KEYS = tuple(Manifest.model_fields)
KNOWN_OPERATION_KEYS = tuple(OperationDef.model_fields)


class ConnectionScope(_Strict):
    tenantId: str = "default"
    pipelineId: str = "default"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            tenant, _, pipeline = value.partition("::")
            return {"tenantId": tenant or "default", "pipelineId": pipeline or "default"}
        return value


class Connection(_Strict):
    """One entry of a connections file."""

    connectionRef: str
    connectorId: str | None = None
    scope: ConnectionScope = Field(default_factory=ConnectionScope)
    config: dict[str, Any]


class ConnectorTemplate(_Open):
    """One entry of a templates file: JSON Schemas that validate connection configs."""

    id: str
    displayName: str | None = None
    category: str | None = None
    executionType: str = "STREAMING"
    sourceSchema: dict[str, Any] | None = None
    sinkSchema: dict[str, Any] | None = None
