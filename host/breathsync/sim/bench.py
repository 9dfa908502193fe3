"""Several virtual straps on one Bumble ``LocalLink``, optionally served to another process over HCI.

In-process (tests, ``breathsync demo``)::

    async with await VirtualBench.start([StrapConfig(a, role="therapist"), StrapConfig(b, role="client")]) as vb:
        async with await BumbleBench.open(vb.link) as host:          # the central, same process
            options = host.ble_options()
            ...  BleStrapLink("therapist", vb.straps["therapist"].name, sink, options) ...

For another process (``breathsync sim``): ``VirtualBench.start(configs, serve="tcp-server:127.0.0.1:0")``
serves a virtual controller of the link on loopback TCP; the other process uses the adapter
moniker ``vb.adapter`` (``bumble:tcp-client:127.0.0.1:PORT``), e.g. ``breathsync stream --ble ...``.
Only loopback addresses are accepted (``HciServer``).

From synchronous code, or when the host runs in its own event loop or process: :class:`BenchThread`
runs a served bench on an event loop in a background thread; ``call`` runs fault switches there::

    with BenchThread(configs) as served:
        subprocess.run(["breathsync", "stream", "--ble", served.adapter, ...])
        served.call(lambda vb: vb["client"].power_off(2.0))
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bumble.link import LocalLink

from ..link.bumble_backend import new_link
from .strap import SimError, StrapConfig, VirtualStrap, radio_address

if TYPE_CHECKING:  # imported when serving: `python -m breathsync.sim.peripheral` runs that module as __main__
    from .peripheral import HciServer

__all__ = ["BenchThread", "VirtualBench"]

_T = TypeVar("_T")


class VirtualBench:
    """Virtual straps (by role, or by name when roles repeat) on one link, plus an optional HCI server."""

    def __init__(self, link: LocalLink) -> None:
        self.link = link
        self.straps: dict[str, VirtualStrap] = {}
        self.server: HciServer | None = None

    @classmethod
    async def start(
        cls,
        configs: Sequence[StrapConfig],
        *,
        link: LocalLink | None = None,
        serve: str | None = None,
        micropython: str | None = None,
    ) -> VirtualBench:
        """Start every strap (in parallel), then the HCI server if ``serve`` (``tcp-server:127.0.0.1:PORT``).

        Straps are keyed by role; a second strap of the same role is keyed by its name. Two straps may share a name
        (every new strap is called "breathsync"), not a radio address, nor a name and a role.
        """
        keys: list[str] = []
        for c in configs:
            keys.append(c.role if c.role not in keys else c.strap_name)
        if len(set(keys)) != len(keys):
            raise SimError(f"two virtual straps of one role would share a name: {[c.strap_name for c in configs]}")
        addresses = [radio_address(c.strap_mac) for c in configs]
        if len(set(addresses)) != len(addresses):
            raise SimError(f"two virtual straps would share a radio address (give each its own mac): {addresses}")
        bench = cls(link if link is not None else new_link())
        try:
            started = await asyncio.gather(
                *(VirtualStrap.start(c, bench.link, micropython=micropython) for c in configs), return_exceptions=True
            )
            errors = [s for s in started if isinstance(s, BaseException)]
            for strap in started:
                if isinstance(strap, VirtualStrap):
                    key = strap.role if strap.role not in bench.straps else strap.name
                    bench.straps[key] = strap
            if errors:
                raise errors[0]
            if serve is not None:
                from .peripheral import HciServer

                bench.server = await HciServer.start(bench.link, serve)
        except BaseException:
            await bench.close()
            raise
        return bench

    @property
    def adapter(self) -> str:
        """The ``--ble`` adapter moniker for another process (needs ``serve``)."""
        if self.server is None:
            raise SimError("this bench is not served over HCI (start it with serve='tcp-server:127.0.0.1:0')")
        return f"bumble:{self.server.host_moniker}"

    def __getitem__(self, key: str) -> VirtualStrap:
        return self.straps[key]

    async def close(self) -> dict[str, dict[str, Any] | None]:
        """Stop the HCI server and every strap; returns each firmware's exit summary."""
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.close()
            self.server = None
        results = await asyncio.gather(*(s.close() for s in self.straps.values()), return_exceptions=True)
        return {
            key: (r if not isinstance(r, BaseException) else None) for key, r in zip(self.straps, results, strict=True)
        }

    async def __aenter__(self) -> VirtualBench:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class BenchThread:
    """A served :class:`VirtualBench` on its own event loop in a daemon thread (a context manager)."""

    def __init__(
        self, configs: Sequence[StrapConfig], *, serve: str = "tcp-server:127.0.0.1:0", start_timeout_s: float = 30.0
    ) -> None:
        self.configs = list(configs)
        self.serve = serve
        self.start_timeout_s = start_timeout_s
        self.loop = asyncio.new_event_loop()
        self._bench: VirtualBench | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="virtual-bench", daemon=True)
        self.summaries: dict[str, dict[str, Any] | None] = {}

    @property
    def bench(self) -> VirtualBench:
        if self._bench is None:
            raise SimError("the bench is not running")
        return self._bench

    @property
    def adapter(self) -> str:
        """``bumble:tcp-client:127.0.0.1:PORT`` for ``--ble`` / ``ble_adapter()``."""
        return self.bench.adapter

    def _main(self) -> None:
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            self._bench = await VirtualBench.start(self.configs, serve=self.serve)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        self.summaries = await self._bench.close()

    def start(self) -> BenchThread:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise SimError(f"the virtual straps did not start within {self.start_timeout_s} s")
        if self._error is not None:
            self._thread.join(5)
            raise self._error
        return self

    def call(self, fn: Callable[[VirtualBench], Awaitable[_T] | _T], timeout_s: float = 10.0) -> _T:
        """Run ``fn(bench)`` on the bench's loop (awaited if it returns an awaitable); returns its result."""

        async def run() -> _T:
            result = fn(self.bench)
            if inspect.isawaitable(result):
                return await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    def __enter__(self) -> BenchThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
