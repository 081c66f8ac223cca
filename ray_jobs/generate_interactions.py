"""Generate a seeded synthetic fashion interaction log (scale checks of the sequential recommender).

    python -m ray_jobs.generate_interactions --config configs/synthetic_interactions.yaml [--set n_users=4000 ...]

Plain numpy, no Ray: the log is an input of the Ray jobs, not one of them. Writes
{out_dir}/interactions.parquet (user_id, item_id, timestamp), {out_dir}/items.parquet and manifest.json.
"""
from __future__ import annotations

import time

from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, write_interactions
from ray_jobs.common.cli import load_stage_config, run_main


def run(config: SyntheticInteractionsConfig) -> dict:
    started = time.perf_counter()
    manifest = write_interactions(config)
    summary = manifest["summary"]
    print(f"{summary['interactions']} interactions, {summary['users']} users, {summary['items_interacted']} items "
          f"(catalog {summary['items_in_catalog']}, {summary['categories']} categories); per user median "
          f"{summary['length_median']:.0f}, mean {summary['length_mean']}; users with >= 3: "
          f"{summary['users_with_3_or_more']}; generated in {time.perf_counter() - started:.1f} s")
    print(f"interactions: {manifest['files']['interactions']}\nitems:        {manifest['files']['items']}")
    return manifest


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], SyntheticInteractionsConfig,
                                 "configs/synthetic_interactions.yaml", argv))


if __name__ == "__main__":
    run_main(main)
