"""ZmqPushConnection: a PUSH socket that ``push()``es to the next peer in round-robin."""

from __future__ import annotations

import zmq

from stageflow.transport.connection import ZmqConnection


class ZmqPushConnection(ZmqConnection):
    """A PUSH socket: ``push()`` a message to the next peer in ZeroMQ's round-robin.

    ``push()`` never drops and never raises EAGAIN; the connection is an IConsumer that
    pauses its producer while messages wait (see ``ZmqConnection.send``).
    """

    socketType = zmq.PUSH

    # txZMQ's push() calls send(); the alias saves a call per message on the hot path.
    push = ZmqConnection.send
