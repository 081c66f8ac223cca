"""Wall-time estimate for the full K-Fashion corpus from the benchmark JSONs: writes docs/scale.md.

    python -m scripts.scale_estimate [--preprocess JSON] [--embed JSON] [--cpu-steps JSON] [--gpu-steps JSON ...]
    make scale-estimate      # runs the benchmarks, copies their JSONs into docs/measurements/, then this

Inputs (the newest of each in docs/measurements/ by default): ``make bench-preprocess`` (the single-process loop's items/s is one
CPU's rate; Ray Data's ratio over it on this machine is the parallel efficiency), ``make bench-embed``
(the Ray Data job's share of the model pass's rate), ``scripts/gpu_check.py --device cpu`` (each encoder's
and training loop's rate on this machine's CPUs, divided by its torch threads) and the GPU runs of
``scripts/gpu_check.py`` in docs/measurements/ (per-GPU rates). Every number in the document is one of
those measurements times the corpus sizes and epochs below; what is assumed rather than measured (linear
scaling across nodes, storage fast enough) is said beside the table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MEASUREMENTS = REPO_ROOT / "docs" / "measurements"

# The full K-Fashion corpus (AI Hub): ~1.2M labelled images, 64 GB. Items per image comes from the
# preprocess benchmark's generated corpus (garments written per label file).
KFASHION_IMAGES = 1_200_000
# A c6i.4xlarge CPU worker of cluster.yaml: 16 vCPUs, as Ray and os.cpu_count() count them.
CPUS_PER_NODE = 16
# A GPU worker (g5.2xlarge in cluster.yaml): 8 vCPUs beside its GPU for decoding and preprocessing.
CPUS_PER_GPU_NODE = 8
CPU_NODES = (1, 8, 32)
GPUS = (1, 2, 4)


@dataclass(frozen=True)
class Stage:
    name: str
    unit: str            # what one item of work is
    per_cpu: float       # units/s on one CPU
    per_gpu: float | None  # units/s on one GPU; None: the stage runs on CPUs in GPU clusters too
    units: float         # units for the full corpus (all epochs)
    source: str          # where the rates come from
    cpu_feed: float | None = None  # units/s per CPU of the CPU-side work that feeds a GPU (decoding crops)


def newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"error: no {pattern} under {folder}: run its benchmark first (make scale-estimate runs them)")
    return found[-1]


def _gpu_rate(step: dict, key: str = "steps_per_s") -> float:
    return max(step[f"fp32_{key}"], step[f"amp_{key}"])  # a GPU run uses whichever precision is faster


def stages(preprocess: dict, embed: dict, cpu: dict, gpu: dict, epochs: dict[str, int]) -> list[Stage]:
    threads = cpu["torch_threads"]
    items_per_image = preprocess["ray_data"]["items"] / preprocess["n_label_files"]
    items = KFASHION_IMAGES * items_per_image
    # Ray Data's efficiency on the benchmark machine: its rate over (one process's rate x the machine's CPUs)
    pre_efficiency = preprocess["ray_data"]["items_per_s"] / (preprocess["serial"]["items_per_s"]
                                                             * preprocess["machine"]["cpus"])
    embed_efficiency = embed["ratio_job_over_model_pass"]
    # what each crop costs the CPUs besides the model (decode, transforms, write): a GPU waits on it
    crop_feed = 1000.0 / sum(ms for step, ms in embed["breakdown_ms_per_crop"].items() if step != "model")
    vit = "clip-vit-b32 (random weights)"

    def cpu_rate(step: dict) -> float:
        return step["fp32_steps_per_s"] * step["batch"] / threads

    def gpu_rate(step: dict) -> float:
        return _gpu_rate(step) * step["batch"]

    return [
        Stage("preprocess (parse, crop, write)", "label files", preprocess["serial"]["items_per_s"] / items_per_image
              * pre_efficiency, None, KFASHION_IMAGES, "bench-preprocess"),
        Stage("embed: ViT-B/32 image pass (FashionCLIP's size)", "crops",
              cpu["image_encoders"][vit]["fp32_images_per_s"] / threads * embed_efficiency,
              _gpu_rate(gpu["image_encoders"][vit], "images_per_s"), items, "gpu_check + bench-embed", crop_feed),
        Stage("embed: hand-crafted stand-in", "crops",
              cpu["image_encoders"]["hand-crafted"]["fp32_images_per_s"] / threads * embed_efficiency,
              _gpu_rate(gpu["image_encoders"]["hand-crafted"], "images_per_s"), items, "gpu_check + bench-embed",
              crop_feed),
        Stage(f"JSON encoder stage 2 ({epochs['json_encoder']} epochs)", "item-epochs",
              cpu_rate(cpu["json_encoder_infonce_step"]), gpu_rate(gpu["json_encoder_infonce_step"]),
              items * epochs["json_encoder"], "gpu_check"),
        Stage(f"item tower SimCSE ({epochs['item_tower']} epochs)", "item-epochs",
              cpu_rate(cpu["item_tower_ntxent_step"]), gpu_rate(gpu["item_tower_ntxent_step"]),
              items * epochs["item_tower"], "gpu_check"),
    ]


def hours(stage: Stage, cpus: int, gpus: int = 0) -> float:
    """Wall hours of ``stage`` with ``cpus`` CPUs (and ``gpus`` GPUs), assuming linear scaling. With GPUs the
    slower of the GPUs and the CPUs feeding them sets the rate."""
    rate = stage.per_cpu * cpus
    if gpus and stage.per_gpu:
        rate = stage.per_gpu * gpus if stage.cpu_feed is None else min(stage.per_gpu * gpus, stage.cpu_feed * cpus)
    return stage.units / rate / 3600


def duration(hours_: float) -> str:
    return f"{hours_:,.1f} h" if hours_ >= 1 else f"{hours_ * 60:,.0f} min" if hours_ * 60 >= 1 else "<1 min"


def log_stage_rates(cpu: dict, gpu: dict) -> list[tuple[str, float, float]]:
    """(stage, examples/s per CPU, per GPU) of the stages whose size is the interaction log's, not the corpus'."""
    rows = [("user tower (sampled softmax)", "user_tower_sampled_softmax_step"),
            ("DeepFM reranker (lists)", "deepfm_pointwise_step"), ("listwise reranker (lists)", "listwise_reranker_step"),
            ("persona two-tower (purchases)", "persona_triplet_step")]
    return [(name, cpu[key]["fp32_steps_per_s"] * cpu[key]["batch"] / cpu["torch_threads"],
             _gpu_rate(gpu[key]) * gpu[key]["batch"]) for name, key in rows if key in cpu and key in gpu]


def render(found: list[Stage], logs: list[tuple[str, float, float]], sources: dict[str, str], items_per_image: float,
           gpu_device: str, facts: dict) -> str:
    lines = ["# Scale estimate: the full K-Fashion corpus",
             "", f"Generated by `{facts['command']}` (`make scale-estimate` runs the benchmarks first) from these "
             "measurements:", ""]
    lines += [f"- {name}: `{path}`" for name, path in sources.items()]
    lines += ["", f"Corpus: {KFASHION_IMAGES:,} labelled images x {items_per_image:.2f} garments per image (the "
              f"generated benchmark corpus's ratio) = {KFASHION_IMAGES * items_per_image:,.0f} items.",
              f"CPU nodes: {CPUS_PER_NODE} CPUs each (cluster.yaml's cpu_worker). GPU nodes: one GPU and "
              f"{CPUS_PER_GPU_NODE} CPUs each; GPU rates measured on a {gpu_device}.", "",
              "| stage | per CPU | per GPU | " + " | ".join(f"{n} CPU node{'s' * (n > 1)}" for n in CPU_NODES) + " | "
              + " | ".join(f"{g} GPU{'s' * (g > 1)}" for g in GPUS) + " |",
              "|---|---|---|" + "---|" * (len(CPU_NODES) + len(GPUS))]
    totals_cpu, totals_gpu = [0.0] * len(CPU_NODES), [0.0] * len(GPUS)
    for stage in found:
        cpu_hours = [hours(stage, n * CPUS_PER_NODE) for n in CPU_NODES]
        gpu_hours = [hours(stage, g * CPUS_PER_GPU_NODE, g) for g in GPUS]
        if "hand-crafted" not in stage.name:  # the stand-in is shown, the totals use FashionCLIP's size
            totals_cpu = [a + b for a, b in zip(totals_cpu, cpu_hours)]
            totals_gpu = [a + b for a, b in zip(totals_gpu, gpu_hours)]
        gpu_cell = f"{stage.per_gpu:,.0f} {stage.unit}/s" if stage.per_gpu else "(CPUs)"
        lines.append(f"| {stage.name} | {stage.per_cpu:,.1f} {stage.unit}/s | {gpu_cell} | "
                     + " | ".join(duration(h) for h in cpu_hours + gpu_hours) + " |")
    lines.append("| **total (ViT-B/32 embedding)** | | | " + " | ".join(f"**{duration(h)}**" for h in totals_cpu + totals_gpu)
                 + " |")
    counted = [s for s in found if "hand-crafted" not in s.name]
    bottleneck_cpu = max(counted, key=lambda s: hours(s, CPUS_PER_NODE))
    bottleneck_gpu = max(counted, key=lambda s: hours(s, CPUS_PER_GPU_NODE, 1))
    lines += ["", f"Bottleneck on CPU nodes: **{bottleneck_cpu.name}**. With GPUs: **{bottleneck_gpu.name}**.", "",
              "Stages sized by the interaction log rather than the image corpus (examples per epoch):", "",
              "| stage | examples/s per CPU | per GPU | one epoch of 10M examples, 1 CPU node | 1 GPU |",
              "|---|---|---|---|---|"]
    lines += [f"| {name} | {c:,.0f} | {g:,.0f} | {duration(1e7 / (c * CPUS_PER_NODE) / 3600)} | {duration(1e7 / g / 3600)} |"
              for name, c, g in logs]
    lines += ["", "What is assumed, not measured:",
              f"- Linear scaling across CPUs and nodes at the benchmark machine's Ray Data efficiency "
              f"({facts['bench_cpus']} CPUs there). "
              "Ray Train's all-reduce and the contrastive losses' cross-worker gather cost more with more workers.",
              "- Storage keeps up: 64 GB read once by preprocessing, crops written and read once by embedding.",
              "- GPU embedding runs at the slower of the GPU's model pass and the node's CPUs decoding, transforming "
              "and writing crops (bench-embed's per-crop breakdown, measured on CPU); the GPU training stages assume "
              "their data loading keeps up.",
              "- Per-CPU rates come from this machine's CPUs; a cloud vCPU may differ.",
              f"- Preprocessing's rate is the generated benchmark corpus's ({items_per_image:.2f} garments per image, "
              "images drawn at the generator's size); real K-Fashion photos average ~53 KB (64 GB / 1.2M) and "
              "larger images cost more to decode and crop.",
              f"- Training rates at the batch sizes gpu_check uses: JSON encoder {facts['batches']['json']}, item tower "
              f"{facts['batches']['tower']} (CPU / GPU).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocess", type=Path, help="bench-preprocess JSON (default: newest in docs/measurements)")
    parser.add_argument("--embed", type=Path, help="bench-embed JSON (default: newest in docs/measurements)")
    parser.add_argument("--cpu-steps", type=Path, default=MEASUREMENTS / "gpu_check-cpu.json")
    parser.add_argument("--gpu-steps", type=Path, nargs="+",
                        default=[MEASUREMENTS / "gpu_check-20261204-h200.json",
                                 MEASUREMENTS / "gpu_check-20261204-h200-users.json"],
                        help="GPU runs of scripts/gpu_check.py; later files add or replace entries")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "scale.md")
    args = parser.parse_args(argv)
    paths = {"bench-preprocess": args.preprocess or newest(MEASUREMENTS, "preprocess-*.json"),
             "bench-embed": args.embed or newest(MEASUREMENTS, "embed-*.json"),
             "gpu_check on CPU": args.cpu_steps}
    for n, path in enumerate(args.gpu_steps):
        paths[f"gpu_check on GPU ({n + 1})"] = path
    for name, path in paths.items():
        if not Path(path).is_file():
            raise SystemExit(f"error: {name}: {path} does not exist")
    loaded = {name: json.loads(Path(path).read_text()) for name, path in paths.items()}
    gpu: dict = {}
    for name in [n for n in paths if n.startswith("gpu_check on GPU")]:
        gpu |= loaded[name]
    preprocess, embed, cpu = loaded["bench-preprocess"], loaded["bench-embed"], loaded["gpu_check on CPU"]
    if "torch_threads" not in cpu:
        raise SystemExit(f"error: {paths['gpu_check on CPU']}: no torch_threads (re-run scripts/gpu_check.py --device cpu)")
    epochs = {"json_encoder": _epochs("configs/train_json_encoder.yaml", "train"),
              "item_tower": _epochs("configs/item_tower.yaml", "simcse")}
    found = stages(preprocess, embed, cpu, gpu, epochs)
    items_per_image = preprocess["ray_data"]["items"] / preprocess["n_label_files"]
    batches = {name: f"{cpu[key]['batch']:,} / {gpu[key]['batch']:,}"
               for name, key in (("json", "json_encoder_infonce_step"), ("tower", "item_tower_ntxent_step"))}
    given = sys.argv[1:] if argv is None else argv
    facts = {"command": " ".join(["python -m scripts.scale_estimate", *given]),
             "bench_cpus": preprocess["machine"]["cpus"], "batches": batches}
    text = render(found, log_stage_rates(cpu, gpu), {k: _shown(v) for k, v in paths.items()}, items_per_image,
                  gpu.get("device", "GPU"), facts)
    args.out.write_text(text)
    print(text)
    return text


def _epochs(config: str, section: str) -> int:
    import yaml

    return int(yaml.safe_load((REPO_ROOT / config).read_text())[section]["epochs"])


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


if __name__ == "__main__":
    main()
