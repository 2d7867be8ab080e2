/*
 * The data plane's system calls, made without letting go of the interpreter's lock.
 *
 * Python's socket methods (and os.read / os.write, select.epoll.poll) release the lock
 * around every call and take it back after: on a non-blocking socket the call never
 * waits, and the release and retake cost more than the call itself (two mutexes and a
 * condition signal each way). They also parse their arguments by format string and
 * allocate the whole read size before shrinking it. These three do none of that; the
 * pure-Python module beside this one (sockio.py) does the same with the standard
 * library, for a build without a C compiler.
 *
 *   recv(fd)            -> bytes (b"" at the end of the stream), or None if nothing waits
 *   send(fd, data)      -> bytes the socket took (0 if it took none)
 *   poll(epoll)         -> [fd, events, fd, events, ...] of the ready sockets, at once
 *
 * Errors other than "would block" raise OSError (its subclass for the errno).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define READ_SIZE (256 * 1024)
#define MAX_EVENTS 1024

/* The interpreter's lock is held throughout: one buffer of each serves every call. */
static char read_buffer[READ_SIZE];
static struct epoll_event ready_events[MAX_EVENTS];

static int
fd_of(PyObject *arg)
{
    long fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred())
        return -2;
    if (fd < -1 || fd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "not a file descriptor");
        return -2;
    }
    return (int)fd;  /* (-1: the system call says EBADF, as os.read would) */
}

static PyObject *
sockio_recv(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "recv(fd) takes one argument");
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2)
        return NULL;
    for (;;) {
        ssize_t got = recv(fd, read_buffer, READ_SIZE, 0);
        if (got >= 0)
            return PyBytes_FromStringAndSize(read_buffer, got);
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}

static PyObject *
sockio_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(fd, data) takes two arguments");
        return NULL;
    }
    int fd = fd_of(args[0]);
    if (fd == -2)
        return NULL;
    Py_buffer view;
    const char *data;
    Py_ssize_t size;
    int viewed = 0;
    if (PyBytes_CheckExact(args[1])) {
        data = PyBytes_AS_STRING(args[1]);
        size = PyBytes_GET_SIZE(args[1]);
    }
    else {
        if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
            return NULL;
        viewed = 1;
        data = view.buf;
        size = view.len;
    }
    ssize_t sent;
    for (;;) {
        sent = send(fd, data, (size_t)size, MSG_NOSIGNAL);
        if (sent >= 0)
            break;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            sent = 0;
            break;
        }
        if (errno != EINTR || PyErr_CheckSignals() < 0) {
            if (!PyErr_Occurred())
                PyErr_SetFromErrno(PyExc_OSError);
            if (viewed)
                PyBuffer_Release(&view);
            return NULL;
        }
    }
    if (viewed)
        PyBuffer_Release(&view);
    return PyLong_FromSsize_t(sent);
}

static PyObject *
sockio_poll(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "poll(epoll) takes one argument");
        return NULL;
    }
    int epfd = PyObject_AsFileDescriptor(args[0]);
    if (epfd < 0)
        return NULL;
    int count = epoll_wait(epfd, ready_events, MAX_EVENTS, 0);
    if (count < 0) {
        if (errno == EINTR)
            return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *ready = PyList_New(2 * (Py_ssize_t)count);
    if (ready == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *fd = PyLong_FromLong(ready_events[i].data.fd);
        PyObject *events = PyLong_FromUnsignedLong(ready_events[i].events);
        if (fd == NULL || events == NULL) {
            Py_XDECREF(fd);
            Py_XDECREF(events);
            Py_DECREF(ready);
            return NULL;
        }
        PyList_SET_ITEM(ready, 2 * i, fd);
        PyList_SET_ITEM(ready, 2 * i + 1, events);
    }
    return ready;
}

static PyMethodDef sockio_methods[] = {
    {"recv", (PyCFunction)(void (*)(void))sockio_recv, METH_FASTCALL,
     "recv(fd) -> bytes, b\"\" at the end, None if nothing waits"},
    {"send", (PyCFunction)(void (*)(void))sockio_send, METH_FASTCALL,
     "send(fd, data) -> how many bytes the socket took"},
    {"poll", (PyCFunction)(void (*)(void))sockio_poll, METH_FASTCALL,
     "poll(epoll) -> [fd, events, ...] of what is ready now"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sockio_module = {
    PyModuleDef_HEAD_INIT,
    "sluice.net._sockio",
    "The data plane's socket calls, made holding the interpreter's lock.",
    -1,
    sockio_methods,
};

PyMODINIT_FUNC
PyInit__sockio(void)
{
    return PyModule_Create(&sockio_module);
}
