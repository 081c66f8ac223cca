"""Ray Serve application: a FastAPI ingress, a Recommender (query encoding + retrieval + ranking)
and an ImageEmbedder deployment (``serve_app.app``, which says why this split), configured by
``configs/serve.yaml`` (``serve run configs/serve.yaml`` / ``serve deploy``). ``serve_app.standalone``
serves the same routes and objects from one plain uvicorn process (the benchmark baseline).

    app.py          the deployments + build_app(config)
    serve.py        what Serve imports: app_builder(args) / app
    api.py          the FastAPI app: errors -> 4xx, metrics middleware, the routers of routes/
    routes/         one router per area (search, recommend, users, items, dashboard, ops)
    clients.py      typed clients of the deployments (DeploymentHandle or in-process)
    deployments/    recommender, image_embedder; base: versions through Serve's user_config
    components/     query_encoder, retriever, reranker: one version's request-time parts
    catalog.py      served items + vectors + indexes (recsys.index.VectorIndex), one per version
    item_space.py   the item tower's space: similar by attributes, new products placed by theirs
    users.py        served users (train_users run): store + user tower, candidate sources, learned reranker,
                    the persona model for profile-only requests
    (item changes)  recsys.stores.item_log: a file log under state_dir, or PostgreSQL shared by every node
    versions.py     which runs are served; `python -m serve_app.versions` writes a config that moves them
    kpi.py          the dashboard payload from training/evaluation reports
    demo.py         `make demo`'s last step: serve the newest artifacts, print URL + curl lines (--check)
"""
