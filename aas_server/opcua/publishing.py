"""Prompt publishing: a data change reaches subscribers at once, still one message per publishing interval at most.

asyncua's subscriptions publish on a fixed clock: every publishing interval a task wakes and sends
what was queued since its last tick. A change therefore waits for the next tick, on average half
the publishing interval (5 ms at the hub's 10 ms minimum, half a second for a client asking 1 s),
and an idle subscription still wakes every interval to count its keep-alive.

:class:`PromptSubscription` keeps the pace of OPC 10000-4 §5.13.1 (at most one NotificationMessage
per publishing interval while changes keep coming, the keep-alive after ``MaxKeepAliveCount`` quiet
intervals, the lifetime counted in intervals without a Publish request) but lets a quiet subscription
sleep until a notification is queued or the keep-alive is due. A notification queued one interval or
more after the last tick starts a new cycle at once; one queued sooner waits for the end of the
current interval, as before. :func:`use_prompt_publishing` makes a server create its subscriptions so.

Left out: a publishing interval of 0 keeps asyncua's behaviour (a message per queued notification,
no clock); the hub revises intervals to at least 10 ms (:mod:`aas_server.opcua.processor`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asyncua import ua
from asyncua.common import utils
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_subscription import InternalSubscription
from asyncua.server.subscription_service import SubscriptionService


class PromptSubscription(InternalSubscription):
    """A subscription that sends a notification queued after a quiet interval at once (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queued_event = asyncio.Event()
        self._last_message = float("-inf")

    async def _trigger_publish(self) -> None:
        """Called by asyncua when the first notification of a monitored item (or a status change) is queued."""
        if self._task is None:
            await super()._trigger_publish()
        else:
            self._queued_event.set()

    def _quiet(self) -> bool:
        """Nothing to send at the next tick: no notification queued, no keep-alive due, not the first message."""
        if self._startup or self._triggered_statuschanges:
            return False
        if self._publishing_enabled and (self._triggered_datachanges or self._triggered_events):
            return False
        return bool(self._keep_alive_count + 1 < self.data.RevisedMaxKeepAliveCount)

    async def publish_results(self, requestdata: Any = None) -> bool:
        """asyncua's ``publish_results``, noting when a message (notifications or a keep-alive) went out."""
        sent = await super().publish_results(requestdata)
        if sent:
            self._last_message = asyncio.get_running_loop().time()
        return sent

    async def _subscription_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.data.RevisedPublishingInterval / 1000.0
        await self.publish_results()
        tick = loop.time()
        while not self._closing:
            self._queued_event.clear()
            woken = False
            if self._quiet():
                keep_alive_due = tick + period * (self.data.RevisedMaxKeepAliveCount - self._keep_alive_count)
                try:
                    async with asyncio.timeout_at(keep_alive_due):
                        await self._queued_event.wait()
                    woken = True
                except TimeoutError:
                    pass
            now = loop.time()
            # The quiet intervals slept through count towards the keep-alive as asyncua's ticks would.
            quiet_intervals = int((now - tick) / period)
            if woken:
                # A notification after a quiet spell goes out now, or one interval after the last message.
                self._keep_alive_count += quiet_intervals
                due = self._last_message + period
            else:
                self._keep_alive_count += max(quiet_intervals - 1, 0)
                due = tick + period
            if due > now:
                await asyncio.sleep(due - now)
            tick = loop.time()
            await self.publish_results()


class PromptSubscriptionService(SubscriptionService):
    """asyncua's subscription service making a :class:`PromptSubscription` (``create_subscription`` of asyncua 2.1)."""

    async def create_subscription(
        self,
        params: ua.CreateSubscriptionParameters,
        callback: Callable[..., Any],
        session_id: ua.NodeId,
        request_callback: Callable[..., Any] | None = None,
    ) -> ua.CreateSubscriptionResult:
        maximum = self.iserver.max_subscriptions if self.iserver else 1_000
        if len(self.subscriptions) >= maximum:
            raise utils.ServiceError(ua.StatusCodes.BadTooManySubscriptions)
        result = ua.CreateSubscriptionResult()
        result.RevisedPublishingInterval = params.RequestedPublishingInterval
        result.RevisedLifetimeCount = self._clamp_lifetime_count(params.RequestedLifetimeCount)
        result.RevisedMaxKeepAliveCount = self._clamp_keep_alive_count(params.RequestedMaxKeepAliveCount)
        self._sub_id_counter += 1
        result.SubscriptionId = self._sub_id_counter
        subscription = PromptSubscription(
            result,
            self.aspace,
            callback,
            session_id,
            request_callback=request_callback,
            delete_callback=lambda: self.subscriptions.pop(result.SubscriptionId, None),
            no_acks_limit=self.iserver.max_unacked_messages_per_subscription if self.iserver else 5000,
            max_queue_size=self.iserver.max_monitored_item_queue_size if self.iserver else 10_000,
            publishing_enabled=params.PublishingEnabled,
        )
        await subscription.start()
        self.subscriptions[result.SubscriptionId] = subscription
        return result


def use_prompt_publishing(iserver: InternalServer) -> None:
    """Give a server not initialised yet a :class:`PromptSubscriptionService` (its own and its internal session's)."""
    if iserver.subscription_service.subscriptions:
        raise RuntimeError("prompt publishing must be set up before the server has subscriptions")
    service = PromptSubscriptionService(iserver.aspace, iserver=iserver)
    iserver.subscription_service = service
    iserver.isession.subscription_service = service
