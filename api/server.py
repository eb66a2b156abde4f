"""Read timeouts: a client must send its request in time, or lose the connection.

uvicorn closes a connection only when it stays idle after a response (`timeout_keep_alive`);
a client that connects and sends nothing, or part of a request head, or a body a byte now and
then, holds its socket for ever (slowloris). Two guards, one per stage of a request:

- `ReadTimeoutProtocol` (uvicorn's h11 protocol, passed by `opsledger serve`): the request
  head must be complete within `OPSLEDGER_REQUEST_READ_TIMEOUT_SECONDS` of the connection or
  of the previous response; otherwise a partial head gets `408` and the connection closes.
- `BodyTimeout` (ASGI middleware, installed by `create_app`): while a route reads the body,
  the next bytes must come within that same time, and the whole body within
  `OPSLEDGER_REQUEST_BODY_TIMEOUT_SECONDS` of the request; otherwise `408` and the connection
  closes. Routes read the whole body before they act on it, so a 408 has written nothing.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Final

import h11
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

#: h11 states of the server while it owes the client a response.
_ANSWERING: Final = (h11.SEND_RESPONSE, h11.SEND_BODY)
_HEAD_LATE: Final = b"the request head did not arrive in time\n"


class ReadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head is late."""

    read_timeout: ClassVar[float] = 30.0
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[ReadTimeoutProtocol]:
        """This protocol with another time limit (uvicorn takes a class, not an instance)."""
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request head."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Stop the clock once a whole request head has arrived."""
        super().data_received(data)
        if self.conn.our_state in _ANSWERING:
            self._disarm()

    def on_response_complete(self) -> None:
        """Start the clock for the next request head (unless one is already in)."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.our_state not in _ANSWERING:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the clock."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.read_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.our_state in _ANSWERING:
            return
        partial = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial and self.conn.our_state is h11.IDLE:
            # Only a client that began a request is told why: an idle keep-alive connection
            # simply closes, as it would after uvicorn's own keep-alive timeout.
            try:
                head = h11.Response(
                    status_code=408,
                    reason=b"Request Timeout",
                    headers=[
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(_HEAD_LATE)).encode()),
                        (b"connection", b"close"),
                    ],
                )
                self.transport.write(self.conn.send(head) or b"")
                self.transport.write(self.conn.send(h11.Data(data=_HEAD_LATE)) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
            except h11.LocalProtocolError:  # h11 cannot answer in this state: just close
                pass
        self.transport.close()


class RequestTimeout(HTTPException):
    """A request body that did not arrive in time (408; the connection is closed after it)."""

    def __init__(self, detail: str) -> None:
        super().__init__(408, detail, headers={"Connection": "close"})


class BodyTimeout:
    """ASGI middleware bounding how long a route may wait for the request body."""

    def __init__(self, app: ASGIApp, idle_seconds: float, total_seconds: float) -> None:
        self.app = app
        self.idle_seconds = idle_seconds
        self.total_seconds = total_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a `receive` that gives up on a late body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total_seconds
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done or started:
                # After the body, or once the answer has begun, receive() only waits for a
                # disconnect (a streamed answer listens for one): no deadline applies.
                return await receive()
            left = deadline - loop.time()
            try:
                async with asyncio.timeout(max(min(self.idle_seconds, left), 0.0)):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body stalled for {self.idle_seconds:g} s "
                    "(OPSLEDGER_REQUEST_READ_TIMEOUT_SECONDS); nothing was written"
                    if self.idle_seconds < left
                    else f"the request body took over {self.total_seconds:g} s "
                    "(OPSLEDGER_REQUEST_BODY_TIMEOUT_SECONDS); nothing was written"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except RequestTimeout as exc:
            # Routes answer it through the app's error handler; this is for a body read
            # outside any route's reach.
            if started:
                raise
            await _send_timeout(send, exc)
        except ClientDisconnect:
            # The client went away mid-body: there is no one to answer, and nothing to log.
            pass


async def _send_timeout(send: Send, exc: RequestTimeout) -> None:
    body = orjson.dumps({"detail": exc.detail, "errors": []})
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
