"""Ray Serve application: ImageEmbedder, QueryEncoder, Retriever and Reranker deployments composed
behind a FastAPI ingress with DeploymentHandles (``serve_app.app``), configured by
``configs/serve.yaml`` (``serve run configs/serve.yaml``). ``serve_app.standalone`` serves the same
routes and models from one plain uvicorn process (the benchmark baseline).

    app.py          ingress deployment + build_app(config)
    serve.py        what Serve imports: app_builder(args) / app
    api.py          the HTTP routes (OpenAPI at /docs), errors -> 4xx, metrics middleware
    deployments/    image_embedder, query_encoder, retriever, reranker (plain classes)
    catalog.py      served items + vectors + indexes (recsys.index.VectorIndex), one per version
    users.py        served users (train_users run): store + user tower, candidate sources, learned reranker
    store.py        durable item changes (JSONL op log + uploaded images under state_dir)
    versions.py     which runs are served; the pinned version reloads move to
    kpi.py          the dashboard payload from training/evaluation reports
    demo.py         `make demo`'s last step: serve the newest artifacts, print URL + curl lines (--check)
"""
