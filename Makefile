# FashionRec: two commands for a newcomer (see README.md):
#   make demo   set everything up, run the main pipeline on the embedded default corpus
#               (make demo INDEX=pgvector: serve from PostgreSQL + pgvector)
#   make test   set everything up, run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-quick bench-preprocess bench-embed bench-workers driver-memory eval-alignment eval-image-encoders eval-item-towers eval-enrichment eval-next-purchase eval-seq eval-seq-sequences-only eval-seq-tower-ablation \
	eval-seq-synthetic temperature-study scale-estimate bench-index bench-serve bench-serve-ops bench-serve-startup index serve serve-local clean enrich crm

# Re-install only when pyproject.toml changes. The grep drops pip's noise about local package
# mirrors that some machines configure; real errors still fail the step (pipefail).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -q -e '.[dev]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $(STAMP)

setup: $(STAMP)

# INDEX=pgvector: the index is a table in the embedded PostgreSQL (pgvector) that every Serve replica
# searches, and the item log lives in the same database (docs/pgvector.md); default faiss.
INDEX ?= faiss

demo: setup
	$(PY) -m ray_jobs.pipeline --config configs/pipeline.yaml --set build_index.backend=$(INDEX)
	$(PY) -m serve_app.demo --config configs/serve.yaml --index-backend $(INDEX)

# The Serve application on the newest artifacts (Ctrl-C stops it); `serve-local` is the same routes
# in one plain uvicorn process (no Ray Serve), the benchmark's baseline.
serve: setup
	$(PY) -m serve_app.demo --config configs/serve.yaml

serve-local: setup
	$(PY) -m serve_app.standalone --config configs/serve.yaml --port 8001

bench-serve: setup
	$(PY) -m bench.serve --config configs/bench_serve.yaml

# Autoscaling under a load ramp and a replica killed under 16 clients (JSON + PNG, ~4 min).
bench-serve-ops: setup
	$(PY) -m bench.serve_ops --config configs/bench_serve_ops.yaml

# A new Recommender replica's start time on a 200,000-item catalog and index (JSON + PNG, ~2 min).
bench-serve-startup: setup
	$(PY) -m bench.serve_startup --config configs/bench_serve_startup.yaml

test: setup
	bash scripts/ensure_browser.sh
	$(PY) -m pytest -q -ra --durations=30 tests

# Pure-library unit tests: no Ray start, no full-catalog scans; well under 30 s.
test-quick: setup
	$(PY) -m pytest -q -m "not ray and not slow and not postgres" tests

bench-preprocess: setup
	$(PY) -m bench.preprocess --config configs/bench_preprocess.yaml

# Training with 1 vs 2 Ray Train workers: JSON encoder and item tower fits, same global batch (~15 min).
bench-workers: setup
	$(PY) -m bench.workers --config configs/bench_workers.yaml

# Driver peak memory of preprocess + embed at 2,000 and 20,000 labels, preprocess alone at 100,000 (~30 min).
driver-memory: setup
	$(PY) -m scripts.driver_memory

# Image embedding: the Ray Data job vs the model pass alone on the same crops, time breakdown (~10 min).
bench-embed: setup
	$(PY) -m bench.embed --config configs/bench_embed.yaml

# docs/scale.md: wall time of the full K-Fashion corpus on 1-32 CPU nodes and 1-4 GPUs, from the two
# benchmarks above and the training loops' rates on this machine's CPUs (GPU rates: docs/measurements).
scale-estimate: bench-preprocess bench-embed
	cp "$$(ls -t artifacts/bench/preprocess/preprocess-*.json | head -1)" "$$(ls -t artifacts/bench/embed/embed-*.json | head -1)" docs/measurements/
	$(PY) -m scripts.gpu_check --device cpu --out docs/measurements/gpu_check-cpu.json
	$(PY) -m scripts.scale_estimate

# Protocol E1 on the real Myntra catalog (../shared/data): JSON encoder vs zero-shot MiniLM, ~6 min.
SHARED_DATA ?= ../shared/data
eval-alignment: setup
	$(PY) -m ray_jobs.evaluate_alignment --catalog $(SHARED_DATA)/fashion_product_images_styles_full/styles_full.parquet \
		--text-col productDisplayName --fields gender,masterCategory,subCategory,articleType,baseColour,season,usage \
		--out artifacts/eval/alignment_e1

# Leak-free item-tower ablation (the finest category is no input): TF-IDF and MiniLM baselines on the
# same inputs, 3 towers x no adapter / adapter with random / hierarchical batches; warm items, cold items
# and unseen categories, on the Myntra catalog and the H&M articles.
# Image encoders on H&M's 400 labelled photos: nearest neighbours sharing colour, type, pattern (~30 s).
eval-image-encoders: setup
	$(PY) -m ray_jobs.evaluate_image_encoders --config configs/evaluate_image_encoders.yaml \
		--set images=$(SHARED_DATA)/hm_pse_subset/images --set labels=$(SHARED_DATA)/hm_pse_subset/articles.parquet

eval-item-towers: setup
	$(PY) -m ray_jobs.evaluate_item_towers --catalog $(SHARED_DATA)/fashion_product_images_styles_full/styles_full.parquet \
		--out artifacts/eval/item_towers_fpi
	$(PY) -m ray_jobs.evaluate_item_towers --catalog $(SHARED_DATA)/hm_pse_subset/articles.parquet \
		--out artifacts/eval/item_towers_hm

# LLM enrichment of both real catalogs with the offline rules stand-in (no LLM; see docs/llm.md).
enrich: setup
	$(PY) -m ray_jobs.enrich --config configs/enrich.yaml \
		--set catalog=$(SHARED_DATA)/fashion_product_images_styles_full/styles_full.parquet --set output_root=artifacts/enrich/fpi
	$(PY) -m ray_jobs.enrich --config configs/enrich.yaml \
		--set catalog=$(SHARED_DATA)/hm_pse_subset/articles.parquet --set output_root=artifacts/enrich/hm

# The unified tower (and the baselines) on raw vs enriched fields under the leak-free protocol, after
# `make enrich` (offline rules stand-in: its numbers say nothing about a real LLM).
eval-enrichment: enrich
	$(PY) -m ray_jobs.evaluate_item_towers --enriched $$(ls -td artifacts/enrich/hm/*/ | head -1)items --towers unified \
		--set 'samplers=[hierarchical]' --out artifacts/eval/enrichment_hm
	$(PY) -m ray_jobs.evaluate_item_towers --enriched $$(ls -td artifacts/enrich/fpi/*/ | head -1)items --towers unified \
		--set 'samplers=[hierarchical]' --out artifacts/eval/enrichment_fpi

# CRM messages for the H&M personas, evaluated on the persona run's split (trains that run first, ~2 min);
# the offline template writer (no LLM) and MiniLM retrieval.
crm: setup
	$(PY) -m ray_jobs.train_persona --config configs/persona.yaml
	$(PY) -m ray_jobs.crm --config configs/crm.yaml

# Protocol E3 on H&M (sequential next item, leave-last-out): recommender vs MostPop and ItemKNN, ~3-7 min.
eval-seq: setup
	$(PY) -m ray_jobs.evaluate_seq --interactions $(SHARED_DATA)/hm_pse_subset/transactions.parquet \
		--user-col customer_id --item-col article_id --order-col t_dat \
		--items $(SHARED_DATA)/hm_pse_subset/articles.parquet --out artifacts/eval/seq_hm

# What makes the user tower beat MostPop on H&M (E3): the configured tower (make eval-seq first) beside the same
# run without the history skip, with item-ID embeddings for every bought item, and on the item tower's vectors, ~12 min.
E3_HM = --interactions $(SHARED_DATA)/hm_pse_subset/transactions.parquet --user-col customer_id \
	--item-col article_id --order-col t_dat --items $(SHARED_DATA)/hm_pse_subset/articles.parquet
eval-seq-tower-ablation: setup
	$(PY) -m ray_jobs.evaluate_seq $(E3_HM) --set user_tower.history_skip=0 --out artifacts/eval/seq_hm_tower/no_skip
	$(PY) -m ray_jobs.evaluate_seq $(E3_HM) --set user_tower.min_id_count=1 --out artifacts/eval/seq_hm_tower/all_ids
	$(PY) -m ray_jobs.evaluate_seq $(E3_HM) --set tower_item_vectors=item_tower \
		--out artifacts/eval/seq_hm_tower/item_tower_vectors
	$(PY) -m ray_jobs.summarise_orders --towers --report configured=artifacts/eval/seq_hm \
		--report no_skip=artifacts/eval/seq_hm_tower/no_skip --report all_ids=artifacts/eval/seq_hm_tower/all_ids \
		--report item_tower_vectors=artifacts/eval/seq_hm_tower/item_tower_vectors --out artifacts/eval/seq_hm_tower/towers.json

# E3 scale check: 300k interactions / 40k users / 25k items, < 30 min on 2 CPUs.
eval-seq-synthetic: setup
	$(PY) -m ray_jobs.generate_interactions --config configs/synthetic_interactions.yaml
	$(PY) -m ray_jobs.evaluate_seq --interactions data/generated/interactions_300k/interactions.parquet \
		--user-col user_id --item-col item_id --order-col timestamp --out artifacts/eval/seq_synthetic

# E3 on sequences-only logs (no item metadata, no timestamps or baskets): two generated logs with sparse
# transitions and H&M with the basket and content sources off; which order each recommender served
# (learned ranker or a fallback chosen on validation users) against its best source, ~15 min;
# the table adds full H&M (make eval-seq) when that report exists.
SEQ_ONLY = artifacts/eval/sequences_only
E3_SEQ_ONLY = --user-col user_id --item-col item_id --order-col position
eval-seq-sequences-only: setup
	$(PY) -m ray_jobs.generate_interactions --config configs/synthetic_sequences_only.yaml
	$(PY) -m ray_jobs.generate_interactions --config configs/synthetic_sequences_only.yaml \
		--set out_dir=data/generated/sequences_only_b --set seed=2 --set p_sequential=0.2 --set complements_per_item=20
	$(PY) -m ray_jobs.evaluate_seq --interactions data/generated/sequences_only_a/interactions.parquet $(E3_SEQ_ONLY) \
		--out $(SEQ_ONLY)/generated_a
	$(PY) -m ray_jobs.evaluate_seq --interactions data/generated/sequences_only_b/interactions.parquet $(E3_SEQ_ONLY) \
		--out $(SEQ_ONLY)/generated_b
	$(PY) -m ray_jobs.evaluate_seq --interactions $(SHARED_DATA)/hm_pse_subset/transactions.parquet \
		--user-col customer_id --item-col article_id --order-col t_dat --set baskets.enabled=false \
		--out $(SEQ_ONLY)/hm_no_baskets_no_content
	$(PY) -m ray_jobs.summarise_orders --report generated_a=$(SEQ_ONLY)/generated_a \
		--report generated_b=$(SEQ_ONLY)/generated_b --report hm_no_baskets_no_content=$(SEQ_ONLY)/hm_no_baskets_no_content \
		$(if $(wildcard artifacts/eval/seq_hm/metrics.json),--report hm_full=artifacts/eval/seq_hm) --out $(SEQ_ONLY)/orders.json

# Temperature study of the JSON encoder (latest preprocess + embed runs: run `make demo` first): 4 temperatures x 3
# seeds, scored on the selection items; a recommendation only beyond the seeds' spread, ~10 min.
temperature-study: setup
	$(PY) -m ray_jobs.temperature_study --config configs/temperature_study.yaml

# Protocol E2 (H&M next purchase): the two-stage recommender vs MostPop, RecentPop, Repurchase+MostPop, ~3 min.
eval-next-purchase: setup
	$(PY) -m ray_jobs.evaluate_next_purchase --config configs/evaluate_next_purchase.yaml --set out=artifacts/eval/next_purchase

bench-index: setup
	$(PY) -m bench.index --config configs/bench_index.yaml

index: setup
	$(PY) -m ray_jobs.build_index --config configs/index.yaml

clean:
	rm -rf artifacts data/generated
