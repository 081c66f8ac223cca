"""scripts/scale_estimate.py on hand-made benchmark JSONs: rates and hours computed by hand."""
import json

import pytest

from scripts import scale_estimate

PREPROCESS = {"n_label_files": 100, "machine": {"cpus": 2},
              "serial": {"items_per_s": 200.0}, "ray_data": {"items": 200, "items_per_s": 300.0}}
EMBED = {"ratio_job_over_model_pass": 0.5,
         "breakdown_ms_per_crop": {"decode": 0.5, "transforms": 1.25, "model": 10.0, "write": 0.25}}


def _step(fp32, amp, batch):
    return {"fp32_steps_per_s": fp32, "amp_steps_per_s": amp, "batch": batch}


def _images(fp32, amp):
    return {"fp32_images_per_s": fp32, "amp_images_per_s": amp}


CPU = {"torch_threads": 2, "image_encoders": {"clip-vit-b32 (random weights)": _images(40.0, 10.0),
                                              "hand-crafted": _images(400.0, 400.0)},
       "json_encoder_infonce_step": _step(10.0, 5.0, 64), "item_tower_ntxent_step": _step(4.0, 1.0, 32),
       "user_tower_sampled_softmax_step": _step(8.0, 2.0, 16)}
GPU = {"device": "Test GPU", "image_encoders": {"clip-vit-b32 (random weights)": _images(1000.0, 5000.0),
                                                "hand-crafted": _images(9000.0, 8000.0)},
       "json_encoder_infonce_step": _step(100.0, 50.0, 1024), "item_tower_ntxent_step": _step(10.0, 20.0, 512),
       "user_tower_sampled_softmax_step": _step(50.0, 40.0, 256)}


def test_rates_per_cpu_and_gpu_by_hand():
    listed = scale_estimate.stages(PREPROCESS, EMBED, CPU, GPU, {"json_encoder": 10, "item_tower": 4})
    found = {s.name.split(" (")[0]: s for s in listed}
    pre = found["preprocess"]
    # one process: 200 items/s = 100 label files/s; Ray Data's efficiency 300 / (200 x 2 CPUs) = 0.75
    assert pre.per_cpu == pytest.approx(75.0) and pre.per_gpu is None and pre.units == 1_200_000
    # 16 CPUs of one node: 1.2M / (75 x 16) s
    assert scale_estimate.hours(pre, 16) == pytest.approx(1_200_000 / 1200 / 3600)
    (vit,) = [s for s in listed if "ViT" in s.name]
    assert vit.per_cpu == pytest.approx(40.0 / 2 * 0.5) and vit.per_gpu == 5000.0   # the faster precision
    assert vit.units == pytest.approx(2_400_000)                                    # 2 items per image
    # the CPUs feed crops at 1000 / (0.5 + 1.25 + 0.25) ms = 500/s each: 2 GPU nodes x 8 CPUs = 8,000/s,
    # below the GPUs' 2 x 5,000
    assert vit.cpu_feed == pytest.approx(500.0)
    assert scale_estimate.hours(vit, 16, gpus=2) == pytest.approx(2_400_000 / 8_000 / 3600)
    assert scale_estimate.hours(vit, 64, gpus=2) == pytest.approx(2_400_000 / 10_000 / 3600)
    json_encoder = found["JSON encoder stage 2"]
    assert json_encoder.per_cpu == pytest.approx(10.0 * 64 / 2) and json_encoder.per_gpu == 100.0 * 1024
    assert json_encoder.units == pytest.approx(2_400_000 * 10)
    # with GPUs the stage uses them, not the node's CPUs: 24M item-epochs / (2 x 102,400/s)
    assert scale_estimate.hours(json_encoder, 16, gpus=2) == pytest.approx(24_000_000 / 204_800 / 3600)
    assert found["item tower SimCSE"].per_gpu == 20.0 * 512


def test_the_document_names_its_inputs_and_the_bottleneck(tmp_path):
    paths = {}
    for name, payload in (("pre", PREPROCESS), ("emb", EMBED), ("cpu", CPU), ("gpu", GPU)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(payload))
    out = tmp_path / "scale.md"
    text = scale_estimate.main(["--preprocess", str(paths["pre"]), "--embed", str(paths["emb"]),
                                "--cpu-steps", str(paths["cpu"]), "--gpu-steps", str(paths["gpu"]), "--out", str(out)])
    assert out.read_text() == text and str(paths["pre"]) in text and "Test GPU" in text
    # per CPU: preprocess 75 files/s over 1.2M files, the ViT 10 crops/s over 2.4M crops, ... -> the ViT pass
    assert "Bottleneck on CPU nodes: **embed: ViT-B/32" in text
    assert "| user tower (sampled softmax) | 64 | 12,800 |" in text
    assert scale_estimate.duration(2.04) == "2.0 h" and scale_estimate.duration(0.5) == "30 min"
    assert scale_estimate.duration(0.001) == "<1 min"


def test_a_cpu_run_without_threads_is_refused(tmp_path):
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({k: v for k, v in CPU.items() if k != "torch_threads"}))
    pre, emb, gpu = (tmp_path / f"{n}.json" for n in ("p", "e", "g"))
    for path, payload in ((pre, PREPROCESS), (emb, EMBED), (gpu, GPU)):
        path.write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match="torch_threads"):
        scale_estimate.main(["--preprocess", str(pre), "--embed", str(emb), "--cpu-steps", str(cpu),
                             "--gpu-steps", str(gpu), "--out", str(tmp_path / "s.md")])
