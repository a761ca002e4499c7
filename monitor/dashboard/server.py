"""The dashboard's web server (aiohttp): the page, its assets, a WebSocket feed, a state endpoint and the
two controls.

    GET  /                    the page (static/index.html)
    GET  /static/...          its script, uPlot (vendored: labs are often offline), styles
    GET  /api/layout          what to draw (layout.py), the mode, whether controls are possible
    GET  /api/state           everything the page shows, as JSON (tests, scripts), with the refused controls
    GET  /ws                  live: a frame every 1/FRAME_HZ s; recorded: a window per {"t": s} the page asks for
    POST /api/control/ACTION  hold | release | mark ({"text"}): token required (header X-Spikewire-Token or
                              ?token=), else 403, counted; forwarded to the supervisor

The catch: a page that stops reading must not hold the server: frames go out with a bounded send and a
closed socket ends its loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from pathlib import Path

import zmq
from aiohttp import WSMsgType, web

from spikewire.monitor.dashboard.control import check_request, send_control

log = logging.getLogger("spikewire.dashboard")

STATIC = Path(__file__).resolve().parent / "static"
FRAME_HZ = 10.0
TOKEN_HEADER = "X-Spikewire-Token"
LOG_KEEP = 50


class Dashboard:
    """The server's state: its source (live or recorded), the token, the control log."""

    def __init__(self, source, token: str, say=print):
        self.source = source
        self.token = token
        self.forbidden = 0
        self.actions: list[dict] = []
        self.say = say
        self.ctx = zmq.Context()

    def control_state(self) -> dict:
        return {"enabled": self.source.control is not None, "forbidden": self.forbidden,
                "log": self.actions[-LOG_KEEP:], "last": self.actions[-1] if self.actions else None}

    def allowed(self, request: web.Request) -> bool:
        given = request.headers.get(TOKEN_HEADER) or request.query.get("token") or ""
        return secrets.compare_digest(given.encode(), self.token.encode())

    def record(self, action: str, peer: str, result: dict, text: str | None = None) -> dict:
        entry = {"time": time.strftime("%H:%M:%S"), "action": action, "peer": peer, "ok": bool(result.get("ok")),
                 "error": result.get("error"), "t": result.get("t")}
        if text is not None:
            entry["text"] = text
        self.actions.append(entry)
        del self.actions[:-LOG_KEEP]
        words = "ok" if entry["ok"] else f"refused: {entry['error']}"
        self.say(f"dashboard: control {action}{f' {text!r}' if text else ''} from {peer}: {words}")
        return entry

    # --- handlers ----------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def layout(self, request: web.Request) -> web.Response:
        return web.json_response({**self.source.layout, "mode": self.source.mode,
                                  "controls": self.source.control is not None,
                                  "end": getattr(self.source, "end", None)})

    async def state(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, self.source.state)
        return web.json_response({**body, "control": self.control_state()}, dumps=_dumps)

    async def control(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        peer = request.remote or "?"
        if not self.allowed(request):
            self.forbidden += 1
            self.say(f"dashboard: control {action} from {peer} refused: no valid token ({self.forbidden} refused)")
            return web.json_response({"ok": False, "error": "forbidden: the token printed at start is required"},
                                     status=403)
        text = None
        if action == "mark":
            try:
                body = await request.json()
            except ValueError:
                body = None
            text = body.get("text") if isinstance(body, dict) else None
        problem = check_request(action, text)
        if problem is not None:
            return web.json_response({"ok": False, "error": problem}, status=400)
        target = self.source.control
        if target is None:
            entry = self.record(action, peer, {"ok": False, "error": "no running supervisor to send it to"}, text)
            return web.json_response({"ok": False, "error": entry["error"]}, status=409)
        endpoint, secret = target
        reply = await asyncio.get_running_loop().run_in_executor(
            None, lambda: send_control(self.ctx, endpoint, secret, action, text))
        self.record(action, peer, reply, text)
        return web.json_response(reply, status=200 if reply.get("ok") else 502)

    async def feed(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=1 << 16)
        await ws.prepare(request)
        if self.source.mode == "recorded":
            await self._recorded(ws)
        else:
            await self._live(ws)
        return ws

    async def _live(self, ws: web.WebSocketResponse) -> None:
        cursor: dict = {}
        loop = asyncio.get_running_loop()
        reader = asyncio.ensure_future(ws.receive())
        try:
            while not ws.closed:
                frame = await loop.run_in_executor(None, self.source.frame, cursor)
                frame["control"] = self.control_state()
                await asyncio.wait_for(ws.send_str(_dumps(frame)), timeout=5.0)
                done, _ = await asyncio.wait({reader}, timeout=1.0 / FRAME_HZ)
                if done:
                    msg = reader.result()
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                        return
                    reader = asyncio.ensure_future(ws.receive())
        except (ConnectionResetError, asyncio.TimeoutError):
            return
        finally:
            reader.cancel()

    async def _recorded(self, ws: web.WebSocketResponse) -> None:
        loop = asyncio.get_running_loop()
        send = self._window_sender(ws, loop)
        await send(self.source.end)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                t = float(json.loads(msg.data).get("t"))
            except (ValueError, TypeError, AttributeError):
                continue
            await send(t)

    def _window_sender(self, ws, loop):
        async def send(t: float) -> None:
            frame = await loop.run_in_executor(None, self.source.window, t)
            frame["control"] = self.control_state()
            await ws.send_str(_dumps(frame))
        return send


def _dumps(obj) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=_plain)
    except ValueError:  # a NaN or infinity somewhere (a gauge not known yet): null for the page
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False, default=_plain)


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _plain(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON: {type(x).__name__}")


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def make_app(dash: Dashboard) -> web.Application:
    app = web.Application()
    app.router.add_get("/", dash.index)
    app.router.add_get("/favicon.ico", _no_icon)
    app.router.add_get("/api/layout", dash.layout)
    app.router.add_get("/api/state", dash.state)
    app.router.add_post("/api/control/{action}", dash.control)
    app.router.add_get("/ws", dash.feed)
    app.router.add_static("/static/", STATIC, append_version=False)
    return app
