"""Ray Serve's floor: what a request costs when the application does no work at all.

Two minimal servers with the same HTTP surface, so ``bench/serve.py`` can put the real application
beside them in one run:

- *trivial bare*: one plain FastAPI/uvicorn process whose route returns a constant
  (``python -m bench.serve_floor --port N``);
- *floor*: a Serve application whose FastAPI ingress makes ``hops`` sequential DeploymentHandle
  calls to a deployment that returns a constant (``GET /floor/{hops}``), the hop structure of each
  real route (search, similar and user recommendations: one call to the Recommender; an image
  upload: two).

``floor overhead = floor(hops) - trivial bare`` is the cost of Ray's proxy, router and handle hops
that no application code can remove; ``app overhead = app - bare`` is what the application adds
over the same routes in one process.
"""
from __future__ import annotations

import argparse

from fastapi import FastAPI

CONSTANT = {"results": [], "note": "floor: constant answer"}
MAX_HOPS = 8


def trivial_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/floor/{hops}")
    async def floor(hops: int):
        return CONSTANT

    return app


def floor_app(ingress_options: dict | None = None, constant_options: dict | None = None):
    """The Serve floor application (ingress + constant deployment), ready for ``serve.run``."""
    from fastapi import HTTPException
    from ray import serve

    @serve.deployment
    class Constant:
        async def answer(self, payload: int) -> dict:
            return CONSTANT

    api = FastAPI()

    @serve.deployment
    @serve.ingress(api)
    class FloorIngress:
        def __init__(self, constant):
            self.constant = constant

        @api.get("/healthz")
        async def healthz(self):
            return {"status": "ok"}

        @api.get("/floor/{hops}")
        async def floor(self, hops: int):
            if not 0 <= hops <= MAX_HOPS:
                raise HTTPException(422, f"hops must be within 0..{MAX_HOPS}, got {hops}")
            answer = CONSTANT
            for n in range(hops):   # sequential, as the real routes' dependent calls are
                answer = await self.constant.answer.remote(n)
            return answer

    return FloorIngress.options(**(ingress_options or {})).bind(
        Constant.options(**(constant_options or {})).bind())


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="the trivial bare FastAPI process of the serving floor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(trivial_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
