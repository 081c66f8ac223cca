"""The request-time parts of a served version, plain Python objects built for one version:
query encoding, retrieval over the catalog and item store, ranking. ``serve_app.deployments.recommender``
holds them together as one snapshot per replica (and ``serve_app.standalone`` in one process)."""
