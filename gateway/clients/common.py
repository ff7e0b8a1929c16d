"""What every client writer shares: the models as the gateway lists them, the files to write, the output.

The models come from a running gateway's `GET /v1/models` when `--url` is given (the window of `auto` is then
the one that gateway reports for the calling key), else from the catalog (`--config`, $GATEWAY_CONFIG or the
built-in defaults), so the written configuration always carries the real context windows and prices.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

AUTO = "auto"
DEFAULT_URL = "http://127.0.0.1:4000"
KEY_ENV = "GATEWAY_API_KEY"  # where the written configurations read the gateway key from, when not given
OPEN_GATEWAY_KEY = "open-gateway"  # what to send when the gateway has no master key (any value is accepted)


class ClientsError(Exception):
    """A problem to print; exit code 1 (2 for bad usage)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ClientModel:
    name: str
    context_window: int
    max_output_tokens: int
    capabilities: frozenset[str]
    input_per_million: Decimal | None = None
    output_per_million: Decimal | None = None
    cached_input_per_million: Decimal | None = None
    region: str | None = None
    fixed_sampling: bool = False
    reaches: tuple[str, ...] = ()  # `auto` from a gateway's listing: the chat models the key's team may use

    @property
    def is_chat(self) -> bool:
        return "chat" in self.capabilities

    def per_token(self, price: Decimal | None) -> float | None:
        return float(price / Decimal(1_000_000)) if price is not None else None


@dataclass
class Setup:
    """Everything a writer needs: where the gateway is, the key, the chosen model, the models listed."""

    url: str  # the gateway's root, without /v1
    key: str | None
    model: str
    models: dict[str, ClientModel]
    source: str

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/") + "/v1"

    def chat_models(self) -> list[ClientModel]:
        """`auto` and the chat models, without the code-completion (FIM) ones such as codestral."""
        return [m for m in self.models.values() if m.is_chat and (m.name == AUTO or "fim" not in m.capabilities)]

    def fim_model(self) -> ClientModel | None:
        return next((m for m in self.models.values() if "fim" in m.capabilities), None)

    def embedding_model(self) -> ClientModel | None:
        return next((m for m in self.models.values() if "embeddings" in m.capabilities), None)

    def chosen(self) -> ClientModel:
        return self.models[self.model]

    def key_or(self, placeholder: str) -> str:
        return self.key if self.key else placeholder


@dataclass
class GeneratedFile:
    path: str  # relative to the output directory
    content: str
    secret: bool = False  # holds a key: written with mode 0600


@dataclass
class ClientConfig:
    tool: str
    files: list[GeneratedFile]
    run: list[str]  # the commands that use the configuration
    notes: list[str] = field(default_factory=list)
    limitations: list[str] = field(default_factory=list)  # what the tool cannot do through an OpenAI endpoint


# -- the models ----------------------------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value is not None else None


def models_from_listing(cards: list[dict[str, Any]]) -> dict[str, ClientModel]:
    models: dict[str, ClientModel] = {}
    for card in cards:
        pricing = card.get("pricing") or {}
        window = card.get("context_window") or card.get("context_length") or card.get("max_input_tokens") or 0
        models[card["id"]] = ClientModel(
            name=card["id"],
            context_window=int(window),
            max_output_tokens=int(card.get("max_output_tokens") or 0),
            capabilities=frozenset(card.get("capabilities") or ()),
            input_per_million=_decimal(pricing.get("input_per_million")),
            output_per_million=_decimal(pricing.get("output_per_million")),
            cached_input_per_million=_decimal(pricing.get("cached_input_per_million")),
            region=card.get("region"),
            fixed_sampling=bool(card.get("fixed_sampling", False)),
            reaches=tuple(card.get("models") or ()),
        )
    return models


def models_from_catalog(config: Path | None) -> tuple[dict[str, ClientModel], str]:
    from gateway.catalog import load_catalog

    catalog = load_catalog(config, {})
    models: dict[str, ClientModel] = {}
    for model in catalog.models.values():
        models[model.name] = ClientModel(
            name=model.name,
            context_window=model.context_window,
            max_output_tokens=model.max_output_tokens,
            capabilities=frozenset(model.capabilities),
            input_per_million=model.price.input,
            output_per_million=model.price.output,
            cached_input_per_million=model.price.cached_input,
            region=catalog.provider_of(model).region,
            fixed_sampling=model.fixed_sampling,
        )
    return models, str(catalog.source)


def with_auto(models: dict[str, ClientModel]) -> dict[str, ClientModel]:
    """Add (or complete) `auto`: the largest window and output of the chat models, and the highest prices
    among them, so a tool's cost estimate for `auto` is an upper bound (the ledger has the real cost)."""
    chat = [m for m in models.values() if m.is_chat and m.name != AUTO and "fim" not in m.capabilities]
    listed = models.get(AUTO)
    prices = [m for m in chat if m.input_per_million is not None]
    auto = ClientModel(
        name=AUTO,
        context_window=(
            listed.context_window
            if listed and listed.context_window
            else max((m.context_window for m in chat), default=0)
        ),
        max_output_tokens=(
            listed.max_output_tokens
            if listed and listed.max_output_tokens
            else max((m.max_output_tokens for m in chat), default=0)
        ),
        capabilities=listed.capabilities if listed else frozenset().union(*(m.capabilities for m in chat)),
        input_per_million=max((m.input_per_million for m in prices), default=None),  # type: ignore[type-var]
        output_per_million=max((m.output_per_million for m in prices), default=None),  # type: ignore[type-var]
        cached_input_per_million=max(
            (m.cached_input_per_million for m in prices if m.cached_input_per_million is not None), default=None
        ),
        fixed_sampling=any(m.fixed_sampling for m in chat),
        reaches=listed.reaches if listed else (),
    )
    return {AUTO: auto, **{name: m for name, m in models.items() if name != AUTO}}


def fetch_listing(url: str, key: str | None, timeout: float = 5.0) -> list[dict[str, Any]]:
    request = urllib.request.Request(url.rstrip("/") + "/v1/models")
    request.add_header("authorization", f"Bearer {key or OPEN_GATEWAY_KEY}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["data"]


def build_setup(model: str, url: str | None, key: str | None, config: Path | None) -> Setup:
    key = key or os.environ.get(KEY_ENV) or None
    models: dict[str, ClientModel] | None = None
    source = ""
    if url is not None:
        try:
            models = models_from_listing(fetch_listing(url, key))
            source = url.rstrip("/") + "/v1/models"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            print(
                f"gateway clients: could not list models at {url} ({exc}); using the catalog instead", file=sys.stderr
            )
    if models is None:
        models, source = models_from_catalog(config)
    else:  # the listing does not say which models have fixed sampling: the catalog does
        try:
            local, _ = models_from_catalog(config)
        except Exception:
            local = {}
        models = {
            name: replace(m, fixed_sampling=local[name].fixed_sampling) if name in local else m
            for name, m in models.items()
        }
    models = with_auto(models)
    if model not in models:
        raise ClientsError(f"unknown model {model!r}; the gateway lists: {', '.join(models)}", 2)
    if not models[model].is_chat:
        raise ClientsError(f"{model!r} is not a chat model", 2)
    return Setup(url or default_url(), key, model, models, source)


def default_url() -> str:
    host = os.environ.get("GATEWAY_HOST", "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('GATEWAY_PORT', '4000')}"


# -- writing -------------------------------------------------------------------------------------------------


def write(config: ClientConfig, directory: Path, force: bool) -> list[Path]:
    """Write the files; refuses (ClientsError) to replace a file that differs unless `force`, and to write
    through a symbolic link at all (with or without `force`): a link planted where a key file goes would
    otherwise send the key wherever it points, or overwrite the file it names."""
    targets = [(directory / f.path, f) for f in config.files]
    links = [f"{path} (-> {os.readlink(path)})" for path, _ in targets if path.is_symlink()]
    if links:
        raise ClientsError(
            "refusing to write through symbolic link(s): "
            + ", ".join(links)
            + " (remove the link, or write elsewhere with --dir)"
        )
    clashes = [str(path) for path, f in targets if path.exists() and path.read_text() != f.content]
    if clashes and not force:
        raise ClientsError("would replace existing file(s): " + ", ".join(clashes) + " (use --force to replace)")
    written = []
    for path, generated in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, generated.content, secret=generated.secret)
        written.append(path)
    return written


def _write_atomically(path: Path, content: str, secret: bool) -> None:
    """Write `content` to a new file beside `path`, then rename it over `path` (never followed if it is a
    link: the rename replaces the name itself). A file holding a key is created 0600 (O_EXCL, O_NOFOLLOW), so
    it is never readable by others, not even for a moment; any other file gets the usual 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o600 if secret else 0o666 & ~umask
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            data = memoryview(content.encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fchmod(fd, mode)  # 0600 stays 0600; a file without secrets is widened to the umask's mode
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def render(config: ClientConfig, setup: Setup, written: list[Path] | None) -> str:
    lines = [f"# {config.tool} through model-gateway at {setup.base_url} (models from {setup.source})"]
    if written is None:
        for generated in config.files:
            lines += [f"# ---- {generated.path}", generated.content.rstrip("\n")]
    else:
        lines += [f"wrote {path}" for path in written]
    if config.run:
        lines += ["# run:"] + [f"  {command}" for command in config.run]
    lines += [f"# note: {note}" for note in config.notes]
    lines += [f"# LIMITATION: {text}" for text in config.limitations]
    return "\n".join(lines) + "\n"


def yaml_dump(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def toml_string(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for the characters used here
