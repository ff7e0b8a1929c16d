"""Tokenizers for exact counts, loaded lazily from files inside installed wheels (never the network).

* Tekken (Mistral): the newest `tekken_*.json` bundled in `mistral_common/data` (by the date in the
  name; with mistral-common 1.13.1 that is `tekken_240911.json`, 131,072 tokens, the Pixtral/Nemo
  vocabulary). Built directly as a `tiktoken.Encoding` from the file's vocabulary and pattern, the
  same way `mistral_common`'s Tekkenizer does, without importing mistral_common (0.3 s) or building
  its 131k-entry piece table: about 0.2 s.
* o200k_base (the stand-in for Kimi): litellm's wheel ships tiktoken's cache files under
  `litellm/litellm_core_utils/tokenizers/`, named by the SHA-1 of the download URL. The file is read
  and checked against tiktoken's published SHA-256, and parsed here; tiktoken's own loader is not
  used (it would consult TIKTOKEN_CACHE_DIR and write a cache copy to /tmp). litellm itself is not
  imported (its import takes seconds and fetches a price list). About 0.25 s.

Counting encodes each text with `encode_ordinary` (no special tokens: user text that spells a control
token counts as text). Texts above CHUNK_CHARS are cut at a newline (else a space) followed by a
non-blank character, which both patterns treat as a pre-token boundary, so the count is unchanged;
the pieces are short enough that the GIL is never held for long (tiktoken releases it while encoding
but not while building the list of ids). Encoding on several threads was slower here (2 cores), so
a count runs on one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import tiktoken

log = logging.getLogger("gateway.tokens")
CHUNK_CHARS = 128 * 1024
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken_ext.openai_public.o200k_base's pattern (checked against it in tests/tokens/test_tokens.py).
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


class TokenizerUnavailable(RuntimeError):
    """A tokenizer's file is missing or unreadable (the counter falls back to the estimate)."""


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # a top-level name: locates without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def tekken_path() -> Path:
    files = sorted((_package_dir("mistral_common") / "data").glob("tekken_*.json"))
    if not files:
        raise TokenizerUnavailable("mistral_common ships no tekken_*.json")
    return files[-1]  # tekken_YYMMDD.json: the newest


def o200k_path() -> Path:
    return _package_dir("litellm") / "litellm_core_utils" / "tokenizers" / hashlib.sha1(O200K_URL.encode()).hexdigest()


def load_tekken(path: Path | None = None) -> tiktoken.Encoding:
    path = path or tekken_path()
    try:
        data = orjson.loads(path.read_bytes())
        config = data["config"]
        size = config["default_vocab_size"] - config["default_num_special_tokens"]
        ranks = {base64.b64decode(t["token_bytes"]): t["rank"] for t in data["vocab"][:size]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerUnavailable(f"cannot read {path}: {exc}") from exc
    return tiktoken.Encoding(name=path.stem, pat_str=config["pattern"], mergeable_ranks=ranks, special_tokens={})


def load_o200k(path: Path | None = None) -> tiktoken.Encoding:
    path = path or o200k_path()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenizerUnavailable(f"cannot read {path}: {exc}") from exc
    if hashlib.sha256(raw).hexdigest() != O200K_SHA256:
        raise TokenizerUnavailable(f"{path} is not o200k_base (hash mismatch)")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    special = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
    return tiktoken.Encoding(name="o200k_base", pat_str=O200K_PATTERN, mergeable_ranks=ranks, special_tokens=special)


class Lazy:
    """A tokenizer built on first use, once, by whichever thread asks first; failures are remembered."""

    def __init__(self, loader: Callable[[], tiktoken.Encoding]) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        self._value: tiktoken.Encoding | None = None
        self._error: TokenizerUnavailable | None = None
        self.load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        """Loading was attempted (and succeeded or failed): `get` will not take long."""
        return self._value is not None or self._error is not None

    def get(self) -> tiktoken.Encoding:
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                if self._error is not None:
                    raise self._error
                started = time.perf_counter()
                try:
                    self._value = self._loader()
                except Exception as exc:  # any failure: count with the estimate rather than fail requests
                    log.warning("tokenizer unavailable, counts fall back to the estimate: %s", exc)
                    self._error = exc if isinstance(exc, TokenizerUnavailable) else TokenizerUnavailable(str(exc))
                    raise self._error from exc
                self.load_seconds = time.perf_counter() - started
            return self._value


def split_text(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut a long text into pieces of about `size` at pre-token boundaries (see the module docstring)."""
    pieces: list[str] = []
    start, n = 0, len(text)
    while n - start > size:
        cut = -1
        for sep in ("\n", " "):
            at = text.find(sep, start + size, start + 2 * size)
            # after the newline (or before the space) must come a non-blank; before the space, too
            while at != -1 and (text[at + 1 : at + 2].isspace() or (sep == " " and text[at - 1].isspace())):
                at = text.find(sep, at + 1, start + 2 * size)
            if at != -1:
                cut = at + 1 if sep == "\n" else at
                break
        if cut <= start:
            cut = start + size  # no boundary within reach: a token or two may differ
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def count_texts(encoding: tiktoken.Encoding, texts: Sequence[str]) -> int:
    """Tokens of all texts, each encoded on its own (as chat templates do)."""
    total = 0
    for text in texts:
        for piece in split_text(text) if len(text) > CHUNK_CHARS else (text,):
            total += len(encoding.encode_ordinary(piece))
    return total
