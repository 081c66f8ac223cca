"""Ray Serve application (deployments composed behind a FastAPI ingress).

Nothing is served yet: the serving layer is built on top of the index and model artifacts that the
later pipeline stages produce. See README.md, section "Roadmap".
"""
