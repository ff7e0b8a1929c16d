"""The catalog: providers and models, from the catalog file (or the built-in one).

Everything here is built once at start-up and passed in; nothing is read from
module globals later. Provider secrets are resolved from the environment mapping
given to `load_catalog`, never from the file itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

ProviderKind = Literal["mistral", "moonshot", "openai-compatible", "litellm"]
Capability = Literal["chat", "tools", "vision", "fim", "embeddings"]
AUTO_MODEL = "auto"
DEFAULT_MAX_N = 8
# Set by the gateway on every request, or the request's own content: never taken from `extra_fields`.
RESERVED_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "prompt", "suffix", "input"})
DEMO_UPSTREAMS_ENV = "GATEWAY_DEMO_UPSTREAMS"
# What `yaml.safe_load` raises for text that is not YAML it can load: YAMLError, and plain errors from PyYAML's own
# constructors for a scalar their tag cannot hold (`!!int abc`, a date that does not exist), RecursionError past
# its nesting (it recurses once per level).
YAML_ERRORS = (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError)
# Fields that would let a request choose an upstream, credentials or headers (litellm and others read them):
# refused on every endpoint (400 forbidden_parameter), and never allowed as a provider's `extra_fields`.
FORBIDDEN_FIELDS = (
    "api_base",
    "base_url",
    "api_key",
    "custom_llm_provider",
    "extra_headers",
    "headers",
    "extra_body",
    "extra_query",
    "fallbacks",
    "deployment_id",
    "model_list",
    "mock_response",
    "api_version",
    "organization",
)
FORBIDDEN_PREFIXES = ("litellm_", "mock_", "user_api_key")


class Timeouts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connect: float = Field(10.0, gt=0)
    first_byte: float = Field(120.0, gt=0)
    total: float = Field(900.0, gt=0)


class CapacityLimits(BaseModel):
    """What a provider's account (`limits` on a provider: scope "provider:NAME") or one deployment (`limits` on a
    model entry: scope "deployment:PROVIDER:MODEL") accepts: concurrent requests, requests and tokens per minute.
    A request to a model is held to both. The gateway never sends more; a request that would exceed them waits in
    the provider's queue (gateway/limits/provider_queue.py) for at most `max_wait_seconds` (default: the setting
    `provider_queue_wait_seconds`; a model entry's wins over its provider's)."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(None, ge=1)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_wait_seconds: float | None = Field(None, ge=0)


class ProviderConfig(BaseModel):
    """A provider as written in the file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    kind: ProviderKind
    region: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    base_url: str | None = None
    base_url_env: str | None = None
    api_key_env: str | None = None
    litellm_provider: str | None = None
    max_connections: int = Field(512, ge=1)
    timeouts: Timeouts = Timeouts()
    # openai-compatible only: request fields beyond OpenAI's that this server takes (vLLM's `top_k`, `min_p`,
    # `repetition_penalty`, ...). Forwarded as they are; never one that could move or re-key a request.
    extra_fields: list[str] = Field(default_factory=list)
    limits: CapacityLimits | None = None  # the account's: every model of this provider shares them

    @field_validator("extra_fields")
    @classmethod
    def _plain_fields(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", name):
                raise ValueError(f"{name!r} is not a plain field name")
            if name in FORBIDDEN_FIELDS or name.startswith(FORBIDDEN_PREFIXES) or name in RESERVED_FIELDS:
                raise ValueError(f"{name!r} cannot be forwarded: it is set by the gateway or can redirect a request")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderConfig:
        if self.kind != "litellm" and not (self.base_url or self.base_url_env):
            raise ValueError(f"provider kind {self.kind!r} needs base_url or base_url_env")
        if self.kind == "litellm" and not self.litellm_provider:
            raise ValueError("provider kind 'litellm' needs litellm_provider (for example 'anthropic')")
        if self.extra_fields and self.kind != "openai-compatible":
            raise ValueError("extra_fields is for providers of kind 'openai-compatible'")
        return self


class Price(BaseModel):
    """USD per million tokens; batch_discount is a fraction (0.5 = half price)."""

    model_config = ConfigDict(extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(None, ge=0)
    batch_discount: Decimal | None = Field(None, ge=0, le=1)


class ModelConfig(BaseModel):
    """A model as clients see it, and where it really lives."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
    provider: str
    upstream_model: str = Field(min_length=1)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(ge=0)
    price: Price
    capabilities: frozenset[Capability] = frozenset({"chat"})
    fixed_sampling: bool = False
    # The most answers (`n`, `best_of`) one request may ask for. Each is generated and billed, so a
    # default bound keeps one request from multiplying its cost without limit (OpenAI allows 128).
    max_n: int = Field(DEFAULT_MAX_N, ge=1, le=128)
    litellm_name: str | None = None
    limits: CapacityLimits | None = None  # this deployment's, on top of its provider's

    @field_validator("name")
    @classmethod
    def _not_auto(cls, value: str) -> str:
        if value == AUTO_MODEL:
            raise ValueError("'auto' is reserved for the virtual model")
        return value


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _cross_check(self) -> CatalogFile:
        names = [p.name for p in self.providers]
        for index, name in enumerate(names):
            if names.index(name) != index:
                raise ValueError(f"providers[{index}].name: duplicate provider {name!r}")
        seen: set[str] = set()
        for index, model in enumerate(self.models):
            if model.name in seen:
                raise ValueError(f"models[{index}].name: duplicate model {model.name!r}")
            seen.add(model.name)
            if model.provider not in names:
                raise ValueError(
                    f"models[{index}].provider: unknown provider {model.provider!r} (known: {', '.join(names)})"
                )
        return self


@dataclass(frozen=True)
class Provider:
    """A provider resolved against the environment: URL and secret known."""

    name: str
    kind: ProviderKind
    region: str
    base_url: str
    api_key: SecretStr | None
    litellm_provider: str | None
    max_connections: int
    timeouts: Timeouts
    demo: bool = False
    extra_fields: frozenset[str] = frozenset()
    limits: CapacityLimits | None = None


@dataclass(frozen=True)
class Catalog:
    """Resolved providers and models, looked up by public name.

    `path` (None: the built-in catalog) and `env` (None: `os.environ` at the time of reading) are what it
    was loaded from, so that `reload_catalog` can read it again the same way (demo upstreams included).
    """

    source: str
    providers: Mapping[str, Provider]
    models: Mapping[str, ModelConfig]
    demo: bool
    path: Path | None = None
    env: Mapping[str, str] | None = field(default=None, repr=False, compare=False)

    def model(self, name: str) -> ModelConfig | None:
        return self.models.get(name)

    def provider_of(self, model: ModelConfig) -> Provider:
        return self.providers[model.provider]

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions the providers run in, sorted: those a policy, a team or `x-gateway-residency` may name."""
        return tuple(sorted({p.region for p in self.providers.values()}))

    def same_as(self, other: Catalog) -> bool:
        """The same providers (URLs and keys included), and the same models in the same order."""
        return (
            self.source == other.source
            and self.demo == other.demo
            and list(self.providers.items()) == list(other.providers.items())
            and list(self.models.items()) == list(other.models.items())
        )


class ConfigError(Exception):
    """A configuration problem, naming the file, the path inside it and what is wrong."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def field_path(parts: tuple[Any, ...]) -> str:
    """A validation error's location as the file spells it: `models[0].context_window` (pydantic's own
    validator names left out); `(top level)` when it is empty."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "literal_", "value_")):
            out += f".{part}" if out else part
    return out or "(top level)"


def parse_catalog_file(path: Path | None) -> tuple[str, CatalogFile]:
    """Read and validate a catalog file (or the built-in one); raise ConfigError."""
    if path is None:
        source = "built-in defaults (gateway/defaults/catalog.yaml)"
        text = resources.files("gateway").joinpath("defaults/catalog.yaml").read_text("utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"cannot read file: {exc}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except YAML_ERRORS as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(source, ["(top level): must be a mapping with 'providers' and 'models'"])
    try:
        return source, CatalogFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["loc"]:
                problems.append(f"{field_path(err['loc'])}: {msg}")
            else:
                problems.append(msg if ": " in msg else f"(top level): {msg}")
        raise ConfigError(source, problems) from exc


def load_catalog(path: Path | None, env: Mapping[str, str] | None = None) -> Catalog:
    """Validate the file and resolve each provider's URL and key from `env`.

    Demo mode: when `GATEWAY_DEMO_UPSTREAMS` (set by `gateway serve` after it
    started the emulators) maps a provider kind to an emulator URL, providers of
    that kind are pointed there with the emulator's key.
    """
    env = os.environ if env is None else env
    source, spec = parse_catalog_file(path)
    demo_upstreams: dict[str, dict[str, str]] = {}
    if env.get(DEMO_UPSTREAMS_ENV):
        demo_upstreams = orjson.loads(env[DEMO_UPSTREAMS_ENV])
    providers: dict[str, Provider] = {}
    for p in spec.providers:
        demo = demo_upstreams.get(p.kind)
        key: str | None
        if demo is not None:
            base_url, key = demo["url"], demo["key"]
        else:
            base_url = (env.get(p.base_url_env) if p.base_url_env else None) or p.base_url or ""
            key = env.get(p.api_key_env) if p.api_key_env else None
        providers[p.name] = Provider(
            name=p.name,
            kind=p.kind,
            region=p.region,
            base_url=base_url.rstrip("/"),
            api_key=SecretStr(key) if key else None,
            litellm_provider=p.litellm_provider,
            max_connections=p.max_connections,
            timeouts=p.timeouts,
            demo=demo is not None,
            extra_fields=frozenset(p.extra_fields),
            limits=p.limits,
        )
    models = {m.name: m for m in spec.models}
    return Catalog(
        source=source,
        providers=providers,
        models=models,
        demo=bool(demo_upstreams),
        path=Path(path) if path is not None else None,
        env=None if env is os.environ else env,
    )


def reload_catalog(current: Catalog) -> Catalog:
    """Read `current`'s file again, resolved against the same environment (so demo mode's emulator URLs
    apply to the new version too); raise ConfigError. A built-in catalog reads as itself."""
    if current.path is None:
        return current
    return load_catalog(current.path, current.env)


def needs_demo(path: Path | None, env: Mapping[str, str]) -> list[str]:
    """Provider kinds to emulate: those of mistral/moonshot kind, if no provider has a key."""
    _, spec = parse_catalog_file(path)
    if any(p.api_key_env and env.get(p.api_key_env) for p in spec.providers):
        return []
    return sorted({p.kind for p in spec.providers if p.kind in ("mistral", "moonshot")})
