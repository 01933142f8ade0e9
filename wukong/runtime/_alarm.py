"""One alarm on the event loop, exact to the microsecond where Linux allows it.

asyncio sleeps in `epoll_wait`, whose timeout is whole milliseconds rounded up:
a timer due in 0.1 ms fires 1 ms later, and every key that came due meanwhile
is released at once. A `RequeueAfter` promises a time, so the runtime's timers
(`Timers`) wake the loop with a Linux timerfd instead: a file descriptor that
becomes readable at an exact CLOCK_MONOTONIC time, the clock asyncio's loop
reads, so the loop wakes when the timer is due, not up to a millisecond later.

The timerfd is used only where the loop's clock is that clock (asyncio's own
loop on Linux; not a test loop with a virtual clock) and the loop can watch a
descriptor; elsewhere the alarm is a plain `loop.call_at`. Python 3.11 has no
`os.timerfd_*` (3.13 does), so the two calls go through ctypes.

The callback runs in the contextvars of the alarm's creator, not in those of
whoever set it: a reconcile that sets one (its deadline, its requeue's timer)
must not be kept alive, nor have its values seen, by the alarm.
"""

import asyncio
import contextlib
import contextvars
import ctypes
import ctypes.util
import logging
import os
import sys
import time
import weakref
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
# asyncio's loop reads time.monotonic(), which is CLOCK_MONOTONIC: two reads
# in a row agree to well within this. A loop with a clock of its own (a test's
# virtual clock) does not.
_SAME_CLOCK = 0.001


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
log = logging.getLogger("wukong.runtime.timers")


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """`loop.time`, as `time.monotonic` itself where that is all it does (asyncio's own
    loop): the runtime reads the clock several times per reconcile, and the method
    around it costs more than the read."""
    if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


class Alarm:
    """Calls `callback` once at loop time `when` (the last `set` wins) unless closed."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._context = contextvars.copy_context()  # what `callback` runs in
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was set on
        self._handle: asyncio.TimerHandle | None = None
        self._fd: _TimerFd | None = None  # None: call_at on this loop

    def set(self, when: float, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Ring at `when` on `loop` (default: the running loop; it must be running)."""
        if loop is None:
            loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()
            self._loop = loop
            # A copy: the loop's reader takes the values of whatever context is current.
            self._fd = self._context.copy().run(_TimerFd.open, loop, self._ring)
        if self._fd is not None:
            try:
                self._fd.set(when)  # replaces the last setting
                return
            except OSError as error:
                # Unexpected; the loop's own timer still works, up to a millisecond late.
                log.debug("timerfd_settime failed (%s): using the loop's timer", error)
                self._fd.close()
                self._fd = None
        if self._handle is not None:
            self._handle.cancel()
        self._handle = loop.call_at(when, self._ring, context=self._context)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd is not None:
            self._fd.close()
            self._fd = None
        self._loop = None

    def _ring(self) -> None:
        self._handle = None
        self._callback()


class _TimerFd:
    """A timerfd on `loop`'s selector; `ring` is called when it expires."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, ring: Callable[[], None]) -> None:
        self._fd = fd
        self._ring = ring
        # One setting, filled in place for each `set` (no structures built per call).
        self._spec = _Itimerspec()
        self._spec_ref = ctypes.byref(self._spec)
        self._value = self._spec.it_value  # a view into _spec
        # A timer dropped without close() still gives its descriptor back.
        self._closer = weakref.finalize(self, _close, loop, fd)

    @classmethod
    def open(cls, loop: asyncio.AbstractEventLoop, ring: Callable[[], None]) -> "_TimerFd | None":
        """A timerfd watched by `loop`, or None where that cannot work (see the module)."""
        if _LIBC is None or abs(loop.time() - time.monotonic()) > _SAME_CLOCK:
            return None
        fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            return None
        timer = cls(loop, fd, ring)
        try:
            # Through a weak reference: the loop must not keep a dropped timer alive.
            loop.add_reader(fd, _readable, weakref.ref(timer))
        except NotImplementedError:  # a loop that cannot watch descriptors
            timer.close()
            return None
        return timer

    def set(self, when: float) -> None:
        """Expire at CLOCK_MONOTONIC `when` (loop time), at once if that has passed."""
        seconds = int(when)
        # All zeros would disarm it instead: the earliest time it takes is 1 ns.
        nanoseconds = max(int((when - seconds) * 1e9), 0 if seconds > 0 else 1)
        self._value.tv_sec = seconds
        self._value.tv_nsec = nanoseconds
        assert _LIBC is not None
        if _LIBC.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None) < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    def _readable(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count; reading re-arms readiness
        except BlockingIOError:
            return  # disarmed or set again after it became readable
        self._ring()

    def close(self) -> None:
        self._closer()


def _readable(timer: "weakref.ref[_TimerFd]") -> None:
    alive = timer()
    if alive is not None:
        alive._readable()


def _close(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    if not loop.is_closed():
        with contextlib.suppress(NotImplementedError):
            loop.remove_reader(fd)
    os.close(fd)
