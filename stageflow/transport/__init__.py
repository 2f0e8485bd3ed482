"""ZeroMQ PUSH/PULL on the Twisted reactor, with the txZMQ API the seed describes.

Code written for txZMQ's push/pull API runs with only its imports changed::

    from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection
"""

from stageflow.transport.connection import ZmqConnection
from stageflow.transport.endpoint import ZmqEndpoint, ZmqEndpointType
from stageflow.transport.factory import ZmqFactory
from stageflow.transport.pull import ZmqPullConnection
from stageflow.transport.push import ZmqPushConnection

__all__ = [
    "ZmqConnection",
    "ZmqEndpoint",
    "ZmqEndpointType",
    "ZmqFactory",
    "ZmqPullConnection",
    "ZmqPushConnection",
]
