"""kombu transports with the two fixes PMR needs.

- Filesystem (the laptop default), made safe for several producers: the stock
  transport creates the message file, then writes it; a consumer listing the folder in
  between moves away an empty file and dies on the JSON decode ("Unrecoverable error").
  Here a message is written under a name no consumer matches, then renamed into place:
  a rename is atomic, so a consumer sees whole messages or none.
- Redis: a worker survives the server going away (see ``RedisQoS``).
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

import redis
from kombu.transport import filesystem
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

logger = logging.getLogger(__name__)


class FilesystemChannel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = f"{final}.part"  # consumers only take names ending in "<queue>.msg"
        try:
            with open(partial, "wb") as stream:
                stream.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc


class FilesystemTransport(filesystem.Transport):
    Channel = FilesystemChannel


class RedisQoS(kombu_redis.QoS):
    def restore_unacked_once(self, stderr=None):
        # kombu's Redis channel, closing after the server went away, tries to put its
        # unacknowledged messages back with a connection it no longer has, and the
        # AttributeError kills the worker ("Unrecoverable error"). The messages stay in
        # Redis's unacked set (restored after the visibility timeout), and PMR's watchdog
        # resends lost work anyway: log it and let the worker reconnect.
        try:
            return super().restore_unacked_once(stderr)
        except (AttributeError, redis.RedisError, OSError) as exc:
            logger.warning("could not restore unacknowledged messages: %s", exc)
            return None


    def ack(self, delivery_tag):
        # A task that outlived its connection (Redis restarted while it ran) acknowledges
        # on the old channel: kombu raises, and the worker dies. The work is done and its
        # result stored; if Redis kept the message, it comes back after the visibility
        # timeout and finds its job finished.
        try:
            return super().ack(delivery_tag)
        except (AttributeError, redis.RedisError, OSError) as exc:
            logger.warning("could not acknowledge message %s: %s", delivery_tag, exc)
            return None

    def reject(self, delivery_tag, requeue=False):
        try:
            return super().reject(delivery_tag, requeue=requeue)
        except (AttributeError, redis.RedisError, OSError) as exc:
            logger.warning("could not reject message %s: %s", delivery_tag, exc)
            return None


class RedisChannel(kombu_redis.Channel):
    QoS = RedisQoS


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport, whose worker survives the Redis server going away."""

    Channel = RedisChannel
