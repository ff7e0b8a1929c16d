"""Scraping a gateway's Prometheus exposition into samples, and summing them by labels."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.support.http import request
from tests.support.waiting import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, headers: dict[str, str] | None = None, path: str = "/metrics") -> Samples:
    answer = request(url, "GET", path, headers=headers)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def series(samples: Samples) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return set(samples)


def scrape_when(url: str, ready: Callable[[Samples], bool], what: str, seconds: float = 20.0) -> Samples:
    """The first scrape for which `ready(samples)` holds."""

    def attempt() -> Samples | None:
        samples = scrape(url)
        return samples if ready(samples) else None

    return wait_until(attempt, seconds, what)
