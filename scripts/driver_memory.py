"""Driver peak memory of preprocess + embed at two corpus sizes, and of preprocess alone at a third.

    python -m scripts.driver_memory                        (make driver-memory; ~30 min on 2 cores)
    python -m scripts.driver_memory --labels 2000 20000 --preprocess-only 100000

Each stage runs as its own process (``python -m ray_jobs.<stage>`` with a private local Ray, as on a
laptop; on a cluster that process is the driver on the head), on a generated corpus made once under
``data/generated/memory_<n>``. Peak RSS and CPU-seconds come from each run's manifest (``driver``,
``recsys.timing.process_usage``): the driver's own process, not Ray's workers. The image encoder is the
hand-crafted one: the driver's memory does not depend on the model, and the ViT stand-in would take
hours for 20,000 labels on 2 cores. Writes a JSON report (default ``docs/measurements/``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from recsys.artifacts import latest_run, write_json
from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus, generate_corpus


def _corpus(n_labels: int, corpus_root: Path, image_size: int | None) -> Path:
    sized = {"image_width": image_size, "image_height": image_size} if image_size else {}
    name = f"memory_{n_labels}" + (f"_{image_size}px" if image_size else "")
    config = SyntheticCorpusConfig(out_dir=str(corpus_root / name), seed=3, n_images=n_labels, **sized)
    if existing_corpus(config) is None:
        print(f"generating {n_labels} labelled images under {config.out_dir} ...", flush=True)
        generate_corpus(config)
    return Path(config.out_dir)


def _stage(module: str, config: str, root: Path, settings: list[str]) -> dict:
    """Run one stage as its own process; its manifest's driver block plus the wall time seen from here."""
    started = time.perf_counter()
    command = [sys.executable, "-m", f"ray_jobs.{module}", "--config", config, "--set", f"output_root={root}",
               *[arg for setting in settings for arg in ("--set", setting)]]
    subprocess.run(command, check=True)
    manifest = json.loads((latest_run(root) / "manifest.json").read_text())
    return {**manifest["driver"], "process_seconds": round(time.perf_counter() - started, 1),
            "run_dir": str(latest_run(root))}


def measure(n_labels: int, out: Path, embed: bool, corpus_root: Path = Path("data/generated"),
            image_size: int | None = None, texts: bool = True) -> dict:
    corpus = _corpus(n_labels, corpus_root, image_size)
    pre_root = out / f"{n_labels}" / "preprocess"
    row = {"labels": n_labels, "embedded_texts": embed and texts, "image_size": f"{image_size}x{image_size}" if image_size else "320x416",
           "preprocess": _stage("preprocess", "configs/preprocess.yaml", pre_root,
                                [f"labels={corpus / 'labels'}", f"images={corpus / 'images'}"])}
    reconciliation = json.loads((Path(row["preprocess"]["run_dir"]) / "reconciliation.json").read_text())
    row["items"] = reconciliation["garments"]["written"]
    if embed:
        row["embed"] = _stage("embed", "configs/embed.yaml", out / f"{n_labels}" / "embed",
                              [f"preprocess_root={pre_root}", "image.model=hand-crafted",
                               "text_sources=[title]" if texts else "embed_texts=false"])
    print(f"{n_labels} labels ({row['items']} items): " + "; ".join(
        f"{stage} driver peak {row[stage]['peak_rss_mb']} MB, {row[stage]['cpu_seconds']} CPU-s over "
        f"{row[stage]['process_seconds']} s" for stage in ("preprocess", "embed") if stage in row), flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="*", default=[2000, 20000], help="preprocess + embed")
    parser.add_argument("--preprocess-only", type=int, nargs="*", default=[100000])  # none: --preprocess-only
    parser.add_argument("--work-dir", default="artifacts/bench/driver_memory")
    parser.add_argument("--out", default="docs/measurements")
    parser.add_argument("--corpus-root", default="data/generated", help="generated corpora, kept for later runs")
    parser.add_argument("--image-size", type=int, default=None,
                        help="square generated images of this many pixels (default: the generator's 320x416); "
                             "the driver's memory does not depend on it, the run time does")
    parser.add_argument("--no-texts", action="store_true", help="embed images only (the text pass has the same "
                        "shape: a Ray Data actor pool writing vectors from the workers)")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path, rows, report = Path(args.out) / f"driver_memory-{stamp}.json", [], {}
    for n, embed in [(n, True) for n in args.labels] + [(n, False) for n in args.preprocess_only]:
        rows.append(measure(n, work, embed=embed, corpus_root=Path(args.corpus_root), image_size=args.image_size,
                            texts=not args.no_texts))
        report = _report(rows)
        write_json(path, report)  # after every size: a long run stopped early keeps what it measured
    print(f"peak ratio, largest vs smallest corpus: {report['peak_ratio_largest_vs_smallest']}; report {path}")
    return report


def _report(rows: list[dict]) -> dict:
    sized = [r for r in rows if "embed" in r]
    peaks = {stage: [r[stage]["peak_rss_mb"] for r in sized] for stage in ("preprocess", "embed")}
    return {"measurement": "driver peak RSS per stage process", "created_utc":
            datetime.now(timezone.utc).isoformat(timespec="seconds"), "image_encoder": "hand-crafted",
            "rows": rows, "peak_ratio_largest_vs_smallest": {
                stage: round(values[-1] / values[0], 3) for stage, values in peaks.items() if len(values) > 1}}


if __name__ == "__main__":
    main()
