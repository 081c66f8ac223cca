"""GPU check in plain PyTorch (no Ray, no download): the numbers a CUDA machine gives for the image
encoders and training steps, fp32 beside autocast (AMP), measured side by side.

    python scripts/gpu_check.py [--device cuda] [--out gpu_check.json] [--seconds 2] [--rounds 3]

Each rate is the median of ``rounds`` interleaved fp32/AMP measurements of ``seconds`` each, and the
AMP/fp32 ratio the median of the per-round ratios (small models are launch-bound: single
measurements of their rates moved by up to 1.7x between runs on one H200).

- image encoders (``recsys.encoders.image.ImageEncoder``, the model pass on preprocessed pixels):
  the hand-crafted stand-in, and a ViT-B/32 CLIP built from transformers' default ``CLIPConfig``
  with random weights (FashionCLIP's architecture, saved and loaded as a ``CLIPModel`` directory
  like a real checkpoint): images/s at batch 256, fp32 and AMP (bf16 where supported);
- training steps/s, fp32 and AMP (forward, loss, backward, AdamW) of six loop families' models and
  losses: the JSON encoder with InfoNCE (batch 1,024, 7 fields), the unified item tower with NT-Xent
  on two views (batch 512), DeepFM on lists of 64 candidates with the pointwise loss (256 lists), the
  user tower with the sampled softmax over the batch's next items and 256 uniform negatives (256
  windows of up to 50 items), the listwise reranker with the softmax CE + diversity term (256 lists
  of 64 candidates), the persona two-tower with the triplet margin loss (256 purchases x 4 negatives).
  Host-side data work of the loops (batching, numpy negative sampling) and gradient clipping are not
  part of the steps.

It runs where Ray cannot (a lent GPU machine has its own Python and torch): it imports only the
library's torch-level modules. On a CPU it runs too (small batches), which is how the suite checks it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the library, without installing it

from recsys.encoders.image import ImageEncoder, ImageEncoderConfig  # noqa: E402
from recsys.losses.contrastive import InfoNCE, NTXent  # noqa: E402
from recsys.losses.persona import PersonaLossConfig  # noqa: E402
from recsys.losses.ranking import ListwiseLoss, ListwiseLossConfig, pointwise_loss  # noqa: E402
from recsys.models.item_towers import ItemTowerConfig, build_item_tower  # noqa: E402
from recsys.models.json_encoder import JsonEncoder, JsonEncoderConfig  # noqa: E402
from recsys.models.persona import PersonaModelConfig, PersonaTwoTower  # noqa: E402
from recsys.models.rerankers import (DeepFM, DeepFMConfig, ItemUserEmbedder, ListwiseConfig,  # noqa: E402
                                     ListwiseReranker)
from recsys.models.user_tower import UserTower, UserTowerConfig  # noqa: E402


def _timed(step, device: str, seconds: float) -> float:
    """Calls of ``step`` per second: warm-up, then as many calls as fit in ``seconds``."""
    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
        if device == "cuda" and calls % 5 == 0:
            torch.cuda.synchronize()
    if device == "cuda":
        torch.cuda.synchronize()
    return calls / (time.perf_counter() - started)


def _amp_dtype(device: str) -> torch.dtype:
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def _clip_dir(root: Path) -> str:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig()).save_pretrained(root)
    CLIPImageProcessor().save_pretrained(root)
    return str(root)


def image_encoders(device: str, batch: int, seconds: float, rounds: int) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        configs = {"hand-crafted": ImageEncoderConfig(device=device, batch_size=batch),
                   "clip-vit-b32 (random weights)": ImageEncoderConfig(model=_clip_dir(Path(tmp)), device=device,
                                                                       batch_size=batch)}
        for name, config in configs.items():
            encoder = ImageEncoder(config)
            side = 64 if encoder.backend == "handcrafted" else 224
            pixels = torch.rand(batch, 3, side, side, device=device)
            label = encoder.pretrained if encoder.backend == "handcrafted" else "none (random weights)"
            row = {"pretrained": label, "batch": batch}

            def step_in(mode: str):
                def step():
                    with torch.inference_mode(), torch.autocast(device, dtype=_amp_dtype(device),
                                                                enabled=mode == "amp"):
                        encoder._impl.features(pixels)
                return step
            result = _compare({mode: step_in(mode) for mode in ("fp32", "amp")}, device, seconds, rounds)
            row |= {"fp32_images_per_s": round(batch * result["fp32"], 1),
                    "amp_images_per_s": round(batch * result["amp"], 1), "amp_speedup": result["amp_speedup"],
                    "amp_speedup_rounds": result["amp_speedup_rounds"]}
            results[name] = row
    return results


def _compare(steps: dict, device: str, seconds: float, rounds: int) -> dict:
    """Calls/s of each ``steps[mode]`` (fp32, amp), measured in interleaved rounds: the median of each
    mode and of the per-round ratio (a shared, noisy machine shifts both modes within a round alike)."""
    rates = {mode: [] for mode in steps}
    for _ in range(rounds):
        for mode, step in steps.items():
            rates[mode].append(_timed(step, device, seconds))
    ratios = [amp / fp32 for fp32, amp in zip(rates["fp32"], rates["amp"])]
    return {"fp32": statistics.median(rates["fp32"]), "amp": statistics.median(rates["amp"]),
            "amp_speedup": round(statistics.median(ratios), 2),
            "amp_speedup_rounds": [round(r, 2) for r in ratios]}


def _train_speed(model: torch.nn.Module, loss_of, device: str, seconds: float, batch: int, rounds: int) -> dict:
    """Training steps/s of ``loss_of()`` (forward + loss) + backward + AdamW, fp32 and AMP."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step_in(mode: str):
        def step():
            with torch.autocast(device, dtype=_amp_dtype(device), enabled=mode == "amp"):
                loss = loss_of()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step
    result = _compare({mode: step_in(mode) for mode in ("fp32", "amp")}, device, seconds, rounds)
    return {"batch": batch, "fp32_steps_per_s": round(result["fp32"], 1), "amp_steps_per_s": round(result["amp"], 1),
            "amp_speedup": result["amp_speedup"], "amp_speedup_rounds": result["amp_speedup_rounds"]}


def item_tower_step(device: str, batch: int, seconds: float, rounds: int) -> dict:
    """The unified item tower (transformer over STD + RE tokens) with NT-Xent on two dropped views."""
    config = ItemTowerConfig()
    torch.manual_seed(0)
    model = build_item_tower("unified", config, vocab_size=5000, n_fields=16).to(device)
    n_std, n_re = 8, 12
    features = {"std_ids": torch.randint(1, 5000, (batch, n_std)), "std_field_ids": torch.randint(1, 16, (batch, n_std)),
                "std_mask": torch.ones(batch, n_std, dtype=torch.bool),
                "re_ids": torch.randint(1, 5000, (batch, n_re)), "re_field_ids": torch.randint(1, 16, (batch, n_re)),
                "re_mask": torch.rand(batch, n_re) < 0.7, "re_parent_pos": torch.randint(0, n_std, (batch, n_re))}
    views = [{k: v.to(device) for k, v in features.items()} for _ in range(2)]
    views[1]["re_mask"] = views[1]["re_mask"] & (torch.rand(batch, n_re, device=device) < 0.8)  # a dropped view
    loss_fn = NTXent(0.05)
    return _train_speed(model, lambda: loss_fn(model(views[0]).float(), model(views[1]).float()), device, seconds,
                        batch, rounds)


def deepfm_step(device: str, lists: int, seconds: float, rounds: int) -> dict:
    """DeepFM scoring lists of 64 candidates (item, history and dense fields), pointwise loss."""
    n_items, length, history_len, n_dense = 20000, 64, 20, 6
    torch.manual_seed(0)
    embedder = ItemUserEmbedder(torch.randint(1, 5000, (n_items + 1, 10)), torch.randint(1, 50, (n_items + 1,)),
                                vocab_size=5000, n_categories=50, dim=32)
    model = DeepFM(embedder, n_dense, DeepFMConfig(embedding_dim=32, hidden=[64])).to(device)
    items = torch.randint(1, n_items + 1, (lists, length), device=device)
    history = torch.randint(1, n_items + 1, (lists, history_len), device=device)
    dense = torch.rand(lists, length, n_dense, device=device)
    labels = (torch.rand(lists, length, device=device) < 0.05).float()
    mask = torch.ones(lists, length, dtype=torch.bool, device=device)
    return _train_speed(model, lambda: pointwise_loss(model(items, history, dense).float(), labels, mask), device,
                        seconds, lists, rounds)


def user_tower_step(device: str, batch: int, seconds: float, rounds: int) -> dict:
    """The user tower (causal transformer over item histories, production defaults: dim 64, 2 layers,
    max_len 50) on right-padded training windows, with its production objective: the sampled softmax
    of every position's next item against the batch's unique next items plus 256 uniform negatives,
    drawn anew each step (``recsys.train_loops.user_tower``)."""
    n_items, max_len, n_negatives = 20000, 50, 256
    torch.manual_seed(0)
    model = UserTower(UserTowerConfig(max_len=max_len), n_items).to(device)
    lengths = torch.randint(max_len // 2, max_len + 1, (batch, 1))     # length-bucketed batches: similar lengths
    real = torch.arange(max_len + 1).unsqueeze(0) < lengths + 1
    window = torch.randint(1, n_items + 1, (batch, max_len + 1)) * real  # right-padded (token 0)
    inputs = {"items": window[:, :-1].to(device)}
    targets = window[:, 1:].to(device)

    def loss_of():
        negatives = torch.randint(1, n_items + 1, (n_negatives,), device=device)
        return model(inputs, targets, negatives)
    return _train_speed(model, loss_of, device, seconds, batch, rounds)


def listwise_step(device: str, lists: int, seconds: float, rounds: int) -> dict:
    """The listwise reranker (transformer over each list, production defaults) on lists of up to 64
    candidates, with its production loss: softmax CE of the target + 1.0 x the expected pairwise
    similarity under the score softmax, on the model's own detached item vectors (the loop's
    fallback without item-tower vectors; ``recsys.train_loops.rerankers.listwise_loop``)."""
    n_items, length, history_len, n_dense = 20000, 64, 20, 6
    torch.manual_seed(0)
    config = ListwiseConfig()
    embedder = ItemUserEmbedder(torch.randint(1, 5000, (n_items + 1, 10)), torch.randint(1, 50, (n_items + 1,)),
                                vocab_size=5000, n_categories=50, dim=config.embedding_dim)
    model = ListwiseReranker(embedder, n_dense, config).to(device)
    mask = (torch.arange(length).unsqueeze(0) < torch.randint(length // 2, length + 1, (lists, 1))).to(device)
    items = torch.randint(1, n_items + 1, (lists, length), device=device) * mask
    history = torch.randint(1, n_items + 1, (lists, history_len), device=device)
    dense = torch.rand(lists, length, n_dense, device=device)
    labels = torch.zeros(lists, length, device=device)
    labels[:, 0] = 1.0                                                  # the target, listed
    objective = ListwiseLoss(ListwiseLossConfig(diversity_weight=1.0, temperature=1.0))

    def loss_of():
        scores = model(items, history, dense, mask).float()
        vectors = model.embedder.item_fields(items).sum(dim=-2).detach().float()
        return objective(scores, labels, mask, vectors)
    return _train_speed(model, loss_of, device, seconds, lists, rounds)


def persona_step(device: str, batch: int, seconds: float, rounds: int) -> dict:
    """The persona two-tower (production defaults: Embedding(16) per field, MLP 64 -> 32) on H&M-like
    fields (customer: 2 categorical + z-scored age; product: category, index group, garment group,
    colour, price bucket; 5,000 candidates), with its production loss: triplet margin (1.0) of the
    customer against the bought product and 4 uniformly drawn candidates each
    (``recsys.train_loops.persona.train_epoch``; the loop's redraw of bought negatives is host-side)."""
    n_products, n_negatives = 5000, 4
    customer_sizes, product_sizes = [5, 6], [132, 7, 23, 52, 7]
    torch.manual_seed(0)
    model = PersonaTwoTower(customer_sizes, 1, product_sizes, PersonaModelConfig()).to(device)
    loss_fn = PersonaLossConfig(margin=1.0).build()
    c_ids = torch.stack([torch.randint(1, n, (batch,)) for n in customer_sizes], dim=1).to(device)
    c_num = torch.randn(batch, 1, device=device)
    products = torch.stack([torch.randint(1, n, (n_products,)) for n in product_sizes], dim=1).to(device)
    bought = torch.randint(0, n_products, (batch,), device=device)

    def loss_of():
        negatives = torch.randint(0, n_products, (batch * n_negatives,), device=device)
        anchor, product = model(c_ids, c_num, products[torch.cat([bought, negatives])])
        anchor, product = anchor.float(), product.float()
        positive, negative = product[:batch], product[batch:]
        return loss_fn(anchor.repeat_interleave(n_negatives, 0), positive.repeat_interleave(n_negatives, 0),
                       negative)
    return _train_speed(model, loss_of, device, seconds, batch, rounds)


def json_encoder_step(device: str, batch: int, seconds: float, rounds: int) -> dict:
    fields = ["gender", "masterCategory", "subCategory", "articleType", "baseColour", "season", "usage"]
    config = JsonEncoderConfig(fields=fields, multi_fields=[])
    sizes = {f: 200 for f in fields}
    torch.manual_seed(0)
    model = JsonEncoder(config, sizes).to(device)
    loss_fn = InfoNCE(0.05)
    ids = {f: torch.randint(1, 200, (batch, 1), device=device) for f in fields}
    masks = {f: torch.ones(batch, 1, dtype=torch.bool, device=device) for f in fields}
    targets = torch.nn.functional.normalize(torch.randn(batch, config.output_dim, device=device), dim=-1)
    labels = torch.arange(batch, device=device)
    return _train_speed(model, lambda: loss_fn(model(ids, masks).float(), targets, labels), device, seconds, batch,
                        rounds)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved fp32/AMP rounds (medians reported)")
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    report = {"device": torch.cuda.get_device_name() if on_gpu else platform.processor() or "cpu",
              "torch": torch.__version__, "amp_dtype": str(_amp_dtype(args.device)),
              # what a CPU run's rates are per: docs/scale.md divides them by the torch threads
              "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "rounds": args.rounds, "seconds_per_measurement": args.seconds,
              "image_encoders": image_encoders(args.device, 256 if on_gpu else 8, args.seconds, args.rounds),
              "json_encoder_infonce_step": json_encoder_step(args.device, 1024 if on_gpu else 64, args.seconds,
                                                             args.rounds),
              "item_tower_ntxent_step": item_tower_step(args.device, 512 if on_gpu else 32, args.seconds, args.rounds),
              "deepfm_pointwise_step": deepfm_step(args.device, 256 if on_gpu else 16, args.seconds, args.rounds),
              "user_tower_sampled_softmax_step": user_tower_step(args.device, 256 if on_gpu else 16, args.seconds,
                                                                 args.rounds),
              "listwise_reranker_step": listwise_step(args.device, 256 if on_gpu else 16, args.seconds, args.rounds),
              "persona_triplet_step": persona_step(args.device, 256 if on_gpu else 32, args.seconds, args.rounds)}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
