"""Generate the seeded synthetic K-Fashion corpus (the embedded default input).

    python -m ray_jobs.generate_corpus --config configs/corpus.yaml [--set n_images=20000 ...]

Plain multiprocessing, no Ray: the corpus is an input of the Ray pipelines, not one of them.
"""
from __future__ import annotations

import time
from pathlib import Path

from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from ray_jobs.common.cli import load_stage_config, run_main


def run(config: SyntheticCorpusConfig, progress: bool = True) -> dict:
    start = time.perf_counter()
    manifest = generate_corpus(config, progress=progress)
    elapsed = time.perf_counter() - start
    out = Path(config.out_dir).resolve()
    styles = ", ".join(f"{s} {v['label_files']}" for s, v in manifest["per_style"].items())
    print(f"{manifest['n_label_files']} label files, {manifest['n_garments']} garments "
          f"({manifest['n_garments'] / manifest['n_label_files']:.2f} per image), "
          f"{manifest['n_sparse_labels']} sparse labels; styles: {styles}")
    print("slots: " + ", ".join(f"{slot} {n}" for slot, n in manifest["per_slot"].items()))
    if manifest["faults"]:
        print(f"injected faults (on purpose, to exercise quarantine): {len(manifest['faults'])} "
              f"(expect {manifest['n_expected_items']} items after quarantine)")
    print(f"generated in {elapsed:.1f} s ({manifest['n_label_files'] / elapsed:.0f} images/s)")
    print(f"corpus: {out}\n  labels: {out / manifest['label_root']}\n  images: {out / manifest['image_root']}"
          f"\n  manifest: {out / 'manifest.json'}")
    return manifest


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], SyntheticCorpusConfig, "configs/corpus.yaml", argv))


if __name__ == "__main__":
    run_main(main)
