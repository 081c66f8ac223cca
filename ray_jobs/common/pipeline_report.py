"""The pipeline's closing summary: where each stage's results are, with its headline numbers."""
from __future__ import annotations

from pathlib import Path


def print_results(results: dict, run_dir: Path) -> None:
    print("\nDone. Results:")
    print(f"  canonical items (parquet): {run_dir / 'items'}")
    print(f"  quarantine:                {run_dir / 'quarantine.parquet'}")
    print(f"  reconciliation report:     {run_dir / 'reconciliation.json'}")
    print(f"  distribution plot:         {run_dir / 'distribution.png'}")
    print(f"  garment crops:             {run_dir / 'crops'}")
    if "embed" in results:
        print(f"  embeddings:                {results['embed']['run_dir']} "
              f"(image encoder pretrained: {results['embed']['pretrained']})")
    if "build_index" in results:
        index = results["build_index"]["index"]
        print(f"  index (what Serve loads):  {results['build_index']['run_dir']}  {index['kind']}, "
              f"{index['n_items']} items, version {index['version']}")
    if "item_tower" in results:
        tower = results["item_tower"]
        print(f"  item tower (similar space): {tower['run_dir']}  {tower['tower']}, {tower['n_items']} items "
              f"({tower['n_cold']} held out of training, placed by their attributes like new products)")
    if "pretrain_json_encoder" in results:
        view = results["pretrain_json_encoder"]["json_view_retrieval"]
        print(f"  JSON encoder, stage 1:     {results['pretrain_json_encoder']['run_dir']}  dropped view -> "
              f"full JSON top5 {view['top5']:.3f} (selection items)")
    if "train_json_encoder" in results:
        summary = results["train_json_encoder"]
        full, chance = summary["json_to_image"]["full"], 5 / summary["n_val"]
        print(f"  JSON encoder, stage 2:     {summary['run_dir']}  JSON->image top5 {full['top5']:.3f} "
              f"(full gallery of {summary['n_val']} held-out items, chance {chance:.3f}, best epoch chosen on "
              f"{summary['n_select']} other items; image encoder pretrained: {summary['pretrained']})")
        print(f"  evaluation and plots:      {summary['run_dir']}/results (similarity_search/, image_to_json.png, "
              f"centrality_per_category.png, ...)")
    if "image_baseline" in results:
        baseline, served = results["image_baseline"], results["train_json_encoder"]
        print(f"  image-encoder baseline:    {baseline['run_dir']}  JSON->image top5 "
              f"{baseline['json_to_image']['full']['top5']:.3f} (pretrained: {baseline['pretrained']}) vs "
              f"{served['json_to_image']['full']['top5']:.3f} (pretrained: {served['pretrained']}), same "
              f"items, split and training")
    if "train_users" in results:
        users = results["train_users"]
        tower = next(v for k, v in users["user_tower"].items() if k.startswith("best_val"))
        line = f"  users (stand-in log):      {users['run_dir']}  {users['users']} users; user tower val HR@10 {tower:.3f}"
        if "reranker" in users:
            test = users["reranker"]["test"]
            line += (f"; {users['reranker']['kind']} test NDCG@10 {test['reranker']['ndcg@10']:.3f} vs user-tower "
                     f"order {test['user tower order']['ndcg@10']:.3f}, rank fusion "
                     f"{test['rank fusion order']['ndcg@10']:.3f}")
        print(line)
        print(f"    ({users['note']})")
    if "train_persona" in results:
        persona = results["train_persona"]
        hit = f"hit@{persona['k']}"
        print(f"  persona (profile-only):    {persona['run_dir']}  warm customers' {hit}: " + ", ".join(
            f"{name} {persona['warm'][name]['overall'][hit]:.3f}" for name in ("model", "most_popular", "persona_popular"))
            + f"; served: {persona['served']['ranker']} (chosen on the validation day)")
    if "embed" in results and "train_json_encoder" in results:
        print("\nServe it: python -m serve_app.demo --config configs/serve.yaml")
