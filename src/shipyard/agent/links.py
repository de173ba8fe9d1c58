"""Stable links: a loopback port per (dependency, consumer release) that forwards to the dependency.

A consumer release gets `SHIPYARD_URL_<DEP>` = one of these ports once, in its environment, and
keeps it for its whole life; what the port reaches changes underneath it. A link is either
pinned to one release of the dependency, or following: it reaches the dependency's active
release (the one its public route serves, or the one set by `activate`). Re-pointing a link is
a route switch on its listener (the next request goes to the new release, in-flight ones
drain), so a link is a `Route` on a private port, owned here instead of by the router.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .errors import AgentRequestError
from .router import Route, Router

__all__ = ["LINK_HOST", "Link", "Links"]

LINK_HOST = "127.0.0.1"
# Drain budget of a link's previous target when it is re-pointed.
_LINK_DRAIN = 30.0
# Ports of closed links remembered (for consumers started again), oldest forgotten first.
_KEEP_CLOSED = 256


class Link:
    """One (dependency, consumer) link and its listener."""

    def __init__(self, component: str, consumer: str, pinned: Optional[str], route: Route) -> None:
        self.component = component
        self.consumer = consumer
        self.pinned = pinned  # None: following the dependency's active release
        self.route = route

    @property
    def port(self) -> int:
        return self.route.public_port

    def info(self) -> Dict[str, Any]:
        route = self.route
        return {
            "component": self.component,
            "consumer": self.consumer,
            "port": self.port,
            "mode": route.mode,
            "pinned": self.pinned is not None,
            "release": route.current.release if route.current else None,
            "upstream_port": route.current.port if route.current else None,
            "listening": route.server is not None and route.error is None,
            "error": route.error,
        }

    def to_state(self) -> Dict[str, Any]:
        return {
            "component": self.component,
            "consumer": self.consumer,
            "port": self.port,
            "mode": self.route.mode,
            "release": self.pinned,
        }


class Links:
    """Every link of the agent, by (dependency, consumer)."""

    def __init__(
        self,
        router: Router,
        logger: Optional[logging.Logger] = None,
        on_change: Callable[[str, Any], None] = lambda kind, key: None,
    ) -> None:
        self.router = router
        self.log = logger or logging.getLogger("shipyard.agent")
        # Told (kind "link" or "closed", key (dependency, consumer)) about every change to save.
        self.on_change = on_change
        self.links: Dict[Tuple[str, str], Link] = {}
        # Indexes, so that a step touches the links of one release or component, not all.
        self._of_consumer: Dict[str, Dict[str, Link]] = {}
        self._to_component: Dict[str, Dict[str, Link]] = {}
        self._ports: Set[int] = set()
        # The port a closed link had, by (dependency, consumer): a consumer release stopped
        # and started again (a rollback to it) still has that port in its environment, so a
        # new link for it takes the same port again when it can.
        self.closed_ports: Dict[Tuple[str, str], int] = {}

    def _add(self, link: Link) -> None:
        self.links[(link.component, link.consumer)] = link
        self._of_consumer.setdefault(link.consumer, {})[link.component] = link
        self._to_component.setdefault(link.component, {})[link.consumer] = link
        self._ports.add(link.port)
        self.on_change("link", (link.component, link.consumer))

    def _remove(self, link: Link) -> None:
        del self.links[(link.component, link.consumer)]
        for index, outer, inner in (
            (self._of_consumer, link.consumer, link.component),
            (self._to_component, link.component, link.consumer),
        ):
            del index[outer][inner]
            if not index[outer]:
                del index[outer]
        self._ports.discard(link.port)
        self.on_change("link", (link.component, link.consumer))
        key = (link.component, link.consumer)
        self.closed_ports.pop(key, None)
        self.closed_ports[key] = link.port
        self.on_change("closed", key)
        while len(self.closed_ports) > _KEEP_CLOSED:
            oldest = next(iter(self.closed_ports))
            del self.closed_ports[oldest]
            self.on_change("closed", oldest)

    def ports(self) -> Set[int]:
        return self._ports

    def get(self, component: str, consumer: str) -> Link:
        link = self.links.get((component, consumer))
        if link is None:
            raise AgentRequestError(
                "unknown_link",
                f"there is no link to {component!r} for {consumer!r}",
                "create it first (op `link`)",
            )
        return link

    def of_consumer(self, consumer: str) -> List[Link]:
        return list(self._of_consumer.get(consumer, {}).values())

    def to_component(self, component: str) -> List[Link]:
        """The links that reach `component` (one per consumer release)."""
        return list(self._to_component.get(component, {}).values())

    async def open(
        self, component: str, consumer: str, pinned: Optional[str], mode: str, port: int
    ) -> Link:
        """A new link listening on `port` (fails like a route: port_in_use, listen_failed)."""
        route = self.router.new_route(component, LINK_HOST, port, mode, _LINK_DRAIN)
        await self.router.listen(route, None)
        link = Link(component, consumer, pinned, route)
        self._add(link)
        self.log.info("link %s -> %s: port %d", consumer, component, port)
        return link

    def restore(
        self,
        component: str,
        consumer: str,
        pinned: Optional[str],
        mode: str,
        port: int,
    ) -> Link:
        """A link recorded in state.json, its listener not bound yet (see `listen_restored`)."""
        route = self.router.new_route(component, LINK_HOST, port, mode, _LINK_DRAIN)
        link = Link(component, consumer, pinned, route)
        self._add(link)
        return link

    async def close(self, component: str, consumer: str, drain: float = _LINK_DRAIN) -> Link:
        link = self.get(component, consumer)
        self._remove(link)
        await self._shut(link, drain)
        return link

    async def close_consumer(self, consumer: str, drain: float = _LINK_DRAIN) -> None:
        """Close every link of a consumer release, all at once.

        They leave the table before the first drain is awaited, so a second caller (another
        stop of the same release) finds nothing left to close instead of a link half gone.
        """
        links = self.of_consumer(consumer)
        for link in links:
            self._remove(link)
        await asyncio.gather(*(self._shut(link, drain) for link in links))

    async def close_all(self, drain: float) -> None:
        links = list(self.links.values())
        for link in links:
            self._remove(link)
        await asyncio.gather(*(self._shut(link, drain) for link in links))

    async def _shut(self, link: Link, drain: float) -> None:
        await link.route.close(drain)
        self.router.on_close(link.route.key)
        self.log.info("link %s -> %s: closed port %d", link.consumer, link.component, link.port)

    async def retry_listen(self) -> bool:
        """Bind links whose port could not be bound yet; True if any was."""
        bound = False
        for link in self.links.values():
            if link.route.server is None:
                try:
                    await self.router.listen(link.route, None)
                except AgentRequestError as exc:
                    link.route.error = exc.message
                    continue
                bound = True
        return bound

    def infos(self, component: Optional[str] = None) -> List[Dict[str, Any]]:
        if component is not None:
            chosen = {(component, c): lk for c, lk in self._to_component.get(component, {}).items()}
        else:
            chosen = self.links
        return [link.info() for _, link in sorted(chosen.items())]

    def to_state(self) -> List[Dict[str, Any]]:
        return [link.to_state() for link in self.links.values()]

    def closed_to_state(self) -> List[List[Any]]:
        return [[c, consumer, port] for (c, consumer), port in self.closed_ports.items()]

    def restore_closed(self, records: List[Any]) -> None:
        for component, consumer, port in records:
            self.closed_ports[(str(component), str(consumer))] = int(port)
