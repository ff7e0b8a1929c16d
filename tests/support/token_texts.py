"""Deterministic texts for token counting (no downloads): real English and Python from the standard library, and
generated JSON, Chinese/Japanese/Korean and mixed text. Used by tests/tokens/test_tokens.py and
tests/bench/tokens_bench.py."""

from __future__ import annotations

import inspect
import random

import orjson

PROSE_MODULES = (
    "json",
    "argparse",
    "collections",
    "textwrap",
    "logging",
    "subprocess",
    "threading",
    "decimal",
    "pathlib",
    "functools",
)
CODE_MODULES = ("textwrap", "json.decoder", "argparse", "shlex", "fractions")
ZH = (
    "今天天气很好，我们一起去公园散步吧。",
    "这个网关把每个请求转发给合适的模型，并记录用量和费用。",
    "如果上下文窗口不够大，请求会被路由到另一个模型。",
    "请在配置文件中设置每个团队的预算和速率限制。",
    "他说明天早上九点开会，讨论新版本的发布计划。",
    "机器学习模型的推理成本主要取决于输入和输出的令牌数量。",
    "東京の天気は晴れで、気温は二十度くらいです。",
    "このゲートウェイはリクエストごとにトークンを数えます。",
    "서울에서 부산까지 기차로 약 세 시간이 걸립니다。",
)
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "request",
    "budget",
    "window",
    "model",
    "token",
    "route",
    "region",
    "price",
    "cache",
    "stream",
]


def _module(name: str):
    return __import__(name, fromlist=["_"])


def prose(n: int) -> str:
    docs: list[str] = []
    for name in PROSE_MODULES:
        mod = _module(name)
        docs.append(mod.__doc__ or "")
        for attr in sorted(dir(mod)):
            doc = getattr(getattr(mod, attr, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200 and not attr.startswith("_"):
                docs.append(inspect.cleandoc(doc))
    return _repeat("\n\n".join(docs), n)


def code(n: int) -> str:
    return _repeat("\n\n".join(inspect.getsource(_module(name)) for name in CODE_MODULES), n)


def json_text(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    records = [
        {
            "id": rng.randint(1, 10**9),
            "name": f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
            "score": round(rng.random() * 100, 3),
            "tags": rng.sample(WORDS, rng.randint(0, 4)),
            "active": rng.random() < 0.5,
            "created": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
        }
        for _ in range(n // 100 + 1)
    ]
    return orjson.dumps(records).decode()[:n]


def cjk(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    return _repeat("".join(rng.choice(ZH) for _ in range(n // 10 + 1)), n)


def mixed(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        kind = rng.choice(("prose", "code", "json", "cjk"))
        k = rng.randint(200, 3000)
        if kind == "prose":
            piece = prose(k * 7)[-k:]
        elif kind == "code":
            piece = "```python\n" + code(k * 5)[-k:] + "\n```"
        elif kind == "json":
            piece = json_text(k, rng.randint(0, 99))
        else:
            piece = cjk(k, rng.randint(0, 99))
        out.append(piece + "\n\n")
        size += len(out[-1])
    return "".join(out)[:n]


def _repeat(text: str, n: int) -> str:
    return (text * (n // max(1, len(text)) + 1))[:n]


TEXTS = {"prose": prose, "code": code, "json": json_text, "cjk": cjk, "mixed": mixed}
