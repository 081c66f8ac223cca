"""Generate the seeded synthetic K-Fashion corpus.

    python -m ray_jobs.generate_corpus --config configs/corpus.yaml [--set key=value ...]

Plain multiprocessing, no Ray: the corpus is an input of the Ray pipelines, not one of them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from recsys.config import ConfigError, load_config, parse_overrides
from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file with SyntheticCorpusConfig fields")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[],
                        metavar="KEY=VALUE", help="override config keys, e.g. n_images=200 faults.no_box=2")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, SyntheticCorpusConfig, parse_overrides(args.overrides))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        manifest = generate_corpus(config, progress=not args.no_progress)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start

    out = Path(config.out_dir).resolve()
    styles = ", ".join(f"{s} {v['label_files']}" for s, v in manifest["per_style"].items())
    print(f"{manifest['n_label_files']} label files, {manifest['n_garments']} garments "
          f"({manifest['n_garments'] / manifest['n_label_files']:.2f} per image), "
          f"{manifest['n_sparse_labels']} sparse labels; styles: {styles}")
    print("slots: " + ", ".join(f"{slot} {n}" for slot, n in manifest["per_slot"].items()))
    if manifest["faults"]:
        print(f"injected faults: {len(manifest['faults'])} "
              f"(expect {manifest['n_expected_items']} items after quarantine)")
    print(f"generated in {elapsed:.1f} s ({manifest['n_label_files'] / elapsed:.0f} images/s)")
    print(f"corpus: {out}\n  labels: {out / manifest['label_root']}\n  images: {out / manifest['image_root']}"
          f"\n  manifest: {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
