"""The simulator's typed application keys, in one place for the modules that share them."""

from __future__ import annotations

import asyncio
from typing import Final

import aiohttp
from aiohttp import web

from .state import SimState

__all__ = ["JOBS", "SESSION", "STATE"]

STATE: Final = web.AppKey("sim_state", SimState)
SESSION: Final = web.AppKey("sim_session", aiohttp.ClientSession)
#: The running tasks (completion, then callbacks), cancelled at shutdown.
JOBS: Final = web.AppKey[set[asyncio.Task[None]]]("sim_jobs")
