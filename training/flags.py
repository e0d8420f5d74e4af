"""Command-line flags that can also come from the environment: `--batch-size` <- INTENT_BATCH_SIZE.

Shared by the `intent` command and `python -m training.export`, so both read the environment the same way.
"""

from __future__ import annotations

import argparse
import os


def env_default(flag: str, default: object) -> object:
    """INTENT_<FLAG> from the environment, converted to the default's type, else the default."""
    value = os.environ.get("INTENT_" + flag.upper().replace("-", "_"))
    if value is None:
        return default
    return type(default)(value) if default is not None else value


def add_flag(p: argparse.ArgumentParser, flag: str, default: object, help: str, **kw: object) -> None:
    p.add_argument(f"--{flag}", default=env_default(flag, default), help=f"{help} (default: %(default)s)", **kw)
