"""A fixed-response OpenAI-compatible server: the upstream of tests and of the gateway benchmark.

It isolates the gateway's own cost (no model runs). The request's `model` picks a behaviour,
so one server serves every test: `hang` never answers, `slow` streams one chunk every 0.2 s,
`fail` answers 500, `nousage` answers without `usage`; anything else answers at once.

    python -m cloud_gateway.fixed_upstream --port 9000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

ANSWER = "The quick brown fox jumps over the lazy dog."
PROMPT_TOKENS = 12


def _completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-fixed",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": len(ANSWER.split()),
                "total_tokens": PROMPT_TOKENS + len(ANSWER.split()),
            },
        }
    ).encode()


def _chunk(model: str, delta: dict[str, str], finish: str | None, usage: bool = False) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-fixed",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        n = len(ANSWER.split())
        body["usage"] = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": n,
            "total_tokens": PROMPT_TOKENS + n,
        }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", "fixed"))
    if model == "hang":
        await asyncio.sleep(3600)
    if model == "fail":
        error = {"error": {"message": "upstream failure", "type": "server_error", "code": "boom"}}
        return web.json_response(error, status=500)
    if not body.get("stream"):
        completion = _completion(model)
        if model == "nousage":
            completion = json.dumps({**json.loads(completion), "usage": None}).encode()
        return web.Response(body=completion, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    words = ANSWER.split(" ")
    for i, word in enumerate(words):
        text = word if i == 0 else " " + word
        delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
        await response.write(_chunk(model, delta, None))
        if model == "slow":
            await asyncio.sleep(0.2)
    await response.write(_chunk(model, {}, "stop", usage=model != "nousage"))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fixed", "object": "model"}]})


def create_fixed_upstream_app() -> web.Application:
    """The fixed upstream as an aiohttp app (`/v1/chat/completions`, `/v1/models`)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    return app


def main(argv: list[str] | None = None) -> int:
    """Serve the fixed upstream on 127.0.0.1."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    web.run_app(
        create_fixed_upstream_app(), host="127.0.0.1", port=args.port, access_log=None, print=None
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
