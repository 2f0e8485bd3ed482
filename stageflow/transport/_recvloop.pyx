# cython: language_level=3, boundscheck=False, wraparound=False
"""The multipart-safe receive loop, compiled: libzmq's zmq_msg_* called directly.

pyzmq asks ZeroMQ whether more frames follow only through a Frame object or an
option lookup, each of which costs more than the receive itself; here a message's frames
are read with zmq_msg_recv and zmq_msg_more into bytes, with no Python object in between.
Nothing is linked at build time: stageflow.transport.compiled hands over the addresses of
the functions in the libzmq that pyzmq has loaded, so both use the very same library.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR
from libc.stdint cimport uintptr_t

import zmq
from twisted.python.failure import Failure


ctypedef struct zmq_msg_t:
    # libzmq's zmq_msg_t: 64 opaque bytes, pointer-aligned.
    void *_[8]

ctypedef int (*msg_init_t)(zmq_msg_t *) noexcept nogil
ctypedef int (*msg_recv_t)(zmq_msg_t *, void *, int) noexcept nogil
ctypedef int (*msg_close_t)(zmq_msg_t *) noexcept nogil
ctypedef int (*msg_more_t)(const zmq_msg_t *) noexcept nogil
ctypedef void *(*msg_data_t)(zmq_msg_t *) noexcept nogil
ctypedef size_t (*msg_size_t)(const zmq_msg_t *) noexcept nogil
ctypedef int (*errno_t)() noexcept nogil

cdef msg_init_t msg_init = NULL
cdef msg_recv_t msg_recv = NULL
cdef msg_close_t msg_close = NULL
cdef msg_more_t msg_more = NULL
cdef msg_data_t msg_data = NULL
cdef msg_size_t msg_size = NULL
cdef errno_t zmq_errno = NULL

FUNCTIONS = (
    "zmq_msg_init",
    "zmq_msg_recv",
    "zmq_msg_close",
    "zmq_msg_more",
    "zmq_msg_data",
    "zmq_msg_size",
    "zmq_errno",
)


def bind(dict addresses):
    """Take the addresses of FUNCTIONS in the loaded libzmq."""
    global msg_init, msg_recv, msg_close, msg_more, msg_data, msg_size, zmq_errno
    msg_init = <msg_init_t><uintptr_t>addresses["zmq_msg_init"]
    msg_recv = <msg_recv_t><uintptr_t>addresses["zmq_msg_recv"]
    msg_close = <msg_close_t><uintptr_t>addresses["zmq_msg_close"]
    msg_more = <msg_more_t><uintptr_t>addresses["zmq_msg_more"]
    msg_data = <msg_data_t><uintptr_t>addresses["zmq_msg_data"]
    msg_size = <msg_size_t><uintptr_t>addresses["zmq_msg_size"]
    zmq_errno = <errno_t><uintptr_t>addresses["zmq_errno"]


def read_batch(object connection, uintptr_t handle, object deliver, int batch):
    """Deliver up to ``batch`` whole messages from the socket at ``handle``.

    The same contract as ZmqConnection._read_batch: True once ZeroMQ has no more, False
    when the batch is used up or the handler stopped the connection's reading.
    """
    cdef zmq_msg_t msg
    cdef void *socket = <void *>handle
    cdef int rc, more, err, count
    cdef list message
    for count in range(batch):
        message = []
        while True:
            msg_init(&msg)
            rc = msg_recv(&msg, socket, 1)  # ZMQ_DONTWAIT
            if rc < 0:
                err = zmq_errno()
                msg_close(&msg)
                if err == EINTR:
                    continue
                if err == EAGAIN and not message:
                    return True
                raise zmq.ZMQError(err)
            message.append(PyBytes_FromStringAndSize(<char *>msg_data(&msg), msg_size(&msg)))
            more = msg_more(&msg)
            msg_close(&msg)
            if not more:
                break
        try:
            deliver(message)
        except Exception:
            connection._route_error(message, Failure())
        if not connection._reading:
            return False
    return False
