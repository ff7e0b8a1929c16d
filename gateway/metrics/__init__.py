"""Prometheus metrics: `families` (the names, labels and meanings), `labels` (bounded values), `recorder`
(`Metrics`, one per gateway), `exposition` (`render`, the scrape)."""

from gateway.metrics.families import FAMILIES, MULTIPROC_ENV, exported_names
from gateway.metrics.recorder import Metrics

__all__ = ["FAMILIES", "MULTIPROC_ENV", "Metrics", "exported_names"]
