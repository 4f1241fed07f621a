"""``kerasmyelin shard``: turn a ten-slice cache into TFRecord shards, or check a sharded set."""

from __future__ import annotations

import argparse

NAME = "shard"
HELP = "Convert a ten-slice cache (tenslice.npz) into TFRecord shards that training streams, or verify shards."
EXAMPLES = """examples:
  kerasmyelin shard --data prep --out prep_sharded --shards 16
  kerasmyelin train --data prep_sharded --out runs/big          # streams the shards
  kerasmyelin shard --verify prep_sharded                       # every shard's sha256 against shards.json
Opening a sharded set checks each shard's size and first record; --verify reads every byte.
How streaming works and how large cohorts are built: docs/scale.md.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="ten-slice cache folder to convert (tenslice.npz + manifest.json)")
    source.add_argument("--verify", metavar="FOLDER", help="sharded set to check (shards.json + shards)")
    p.add_argument("--out", help="with --data: output folder for the shards, manifest.json and shards.json")
    p.add_argument("--shards", type=int, help="with --data: number of shard files (at most the number of infants; "
                                              "at least the number of data-parallel workers)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    from kerasmyelin.data.shard_writer import shard_cache
    from kerasmyelin.data.shards import read_shards
    from kerasmyelin.errors import ConfigError

    if args.verify:
        data = read_shards(args.verify)
        data.verify()
        print(f"{len(data.shard_files)} shards, {len(data)} infants: every sha256 matches shards.json")
        return 0
    if args.out is None or args.shards is None:
        raise ConfigError("--data needs --out and --shards")
    out = shard_cache(args.data, args.out, args.shards, overwrite=args.overwrite)
    print(f"wrote {args.shards} shards to {out}")
    return 0
