"""Run the app with Uvicorn: loopback by default, SIGTERM/SIGINT drain and exit 0.

On a signal the engine stops taking requests (new ones get 503) and Uvicorn stops accepting
connections; in-flight requests get `grace_s` to finish, then the ones left are aborted (their
streams end with finish_reason "abort") and the process exits with status 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn

from batchsim.serve.events import EngineHandle

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Uvicorn's server whose exit signal also drains the engine, and is not re-raised."""

    def __init__(self, config: uvicorn.Config, engine: EngineHandle, grace_s: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.grace_s = grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.engine.drain(self.grace_s)
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Uvicorn re-raises a captured SIGTERM after serving (exit status 143): a drained,
        # clean shutdown exits 0 here instead.
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def run_server(app: Any, engine: EngineHandle, host: str, port: int, grace_s: float,
               on_ready: Callable[[], None] | None = None) -> int:
    """Serve until a signal; returns the exit status (0 after a clean drain)."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=max(int(grace_s), 1), access_log=False)
    server = _Server(config, engine, grace_s)
    engine.start()

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started and on_ready is not None:
            on_ready()
        await task

    asyncio.run(serve())
    engine.drain(0.0)  # connections are closed: abort whatever is left
    if not engine.join(30.0):
        logger.error("the engine thread did not stop within 30 s")
        return 1
    if not server.started:
        return 2  # e.g. the port was taken (Uvicorn logged why)
    return 0
