"""ZeroMQ on the Twisted reactor, with txZMQ 1.0.0's API for every socket type.

Code written for txZMQ runs with only its imports changed::

    from stageflow.transport import ZmqEndpoint, ZmqEndpointType, ZmqFactory, ZmqPullConnection
"""

from stageflow.transport.connection import ZmqConnection
from stageflow.transport.endpoint import ZmqEndpoint, ZmqEndpointType
from stageflow.transport.factory import ZmqFactory
from stageflow.transport.pubsub import ZmqPubConnection, ZmqSubConnection
from stageflow.transport.pull import ZmqPullConnection
from stageflow.transport.push import ZmqPushConnection
from stageflow.transport.req_rep import ZmqREPConnection, ZmqREQConnection, ZmqRequestTimeoutError
from stageflow.transport.router_dealer import ZmqDealerConnection, ZmqRouterConnection

__all__ = [
    "ZmqConnection",
    "ZmqDealerConnection",
    "ZmqEndpoint",
    "ZmqEndpointType",
    "ZmqFactory",
    "ZmqPubConnection",
    "ZmqPullConnection",
    "ZmqPushConnection",
    "ZmqREPConnection",
    "ZmqREQConnection",
    "ZmqRequestTimeoutError",
    "ZmqRouterConnection",
    "ZmqSubConnection",
]
