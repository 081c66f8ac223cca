"""The application's deployments as plain classes (Serve wraps them in ``serve_app.app``; the
bare-uvicorn baseline of ``bench/serve.py`` calls them in-process)."""
