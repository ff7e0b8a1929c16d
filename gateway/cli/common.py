"""What every command group shares: where the catalog file is."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def config_path(args: argparse.Namespace) -> Path | None:
    """`--config`, else GATEWAY_CONFIG, else None (the built-in catalog)."""
    if args.config is not None:
        return args.config
    value = os.environ.get("GATEWAY_CONFIG")
    return Path(value) if value else None
