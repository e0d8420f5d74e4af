"""python -m training.columnar --data DIR --out SHARDS: featurize a data directory into shards (single machine)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from training.columnar.run import featurize_dir
from training.core.featurizer import Featurizer
from training.shards import PART_SESSIONS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.columnar", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="data directory (events.jsonl or events.parquet)")
    p.add_argument("--out", type=Path, required=True, help="shard directory to (re)write")
    p.add_argument("--featurizer", type=Path, help="featurizer.json to encode with (default: fit on training visitors)")
    p.add_argument("--part-sessions", type=int, default=PART_SESSIONS)
    p.add_argument("--strict", action="store_true", help="fail on the first invalid row report")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    featurizer = Featurizer.load(args.featurizer) if args.featurizer else None
    done = featurize_dir(args.data, args.out, featurizer, strict=args.strict, part_sessions=args.part_sessions)
    print(json.dumps(done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
