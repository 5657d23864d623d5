"""Decoding in a child process that cancel and timeout can kill.

A decoder call cannot be interrupted from another thread: a large or hostile progressive JPEG
kept the only worker busy for half a minute after its job was cancelled. Here the decode runs in
a child process forked from a small, clean ``forkserver`` (never from the server itself, which
holds threads and torch); the worker waits on the result while watching the job's cancel event
and kills the child at once when it is set. The decoded pixels come back through the pipe into
a preallocated buffer (one copy, no pickling of arrays).

Memory: the child holds the decoder's working set, the server only the finished pixels, so a
decoder's peak never adds to the server's resident set.
"""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from restora.errors import Cancelled, CorruptImage, RestoraError
from restora.io.image import Image
from restora.io.limits import Limits

_CTX_LOCK = threading.Lock()
_CTX: Any = None


def _context() -> Any:
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = multiprocessing.get_context("forkserver")
            # the forkserver imports the decoders once; each decode is then a cheap fork of it
            ctx.set_forkserver_preload(["restora.io", "restora.io.pillow_decode"])
            _CTX = ctx
        return _CTX


def _child(conn: Connection, limits: tuple[int, int, int]) -> None:
    """Child side: receive the file, decode, send metadata then the raw arrays (or the error)."""
    from restora.io import decode

    try:
        data = conn.recv_bytes()
        image = decode(data, limits=Limits(*limits))
    except RestoraError as exc:
        conn.send(("error", type(exc).__name__, exc.code, exc.http_status, exc.message,
                   {k: v for k, v in exc.details.items() if isinstance(v, (int, float, str))}))
        return
    except MemoryError:
        conn.send(("error", "CorruptImage", "corrupt_image", 422,
                   "The image needs more memory than is available.", {}))
        return
    arrays = [image.pixels] + ([image.alpha] if image.alpha is not None else [])
    meta = {"format": image.format, "bit_depth": image.bit_depth, "exif": image.exif,
            "icc_profile": image.icc_profile, "info": image.info,
            "arrays": [(a.shape, a.dtype.str) for a in arrays]}
    conn.send(("ok", meta))
    for a in arrays:
        conn.send_bytes(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)


def _rebuild_error(name: str, code: str, status: int, message: str,
                   details: dict[str, Any]) -> RestoraError:
    from restora import errors

    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RestoraError):
        err = cls.__new__(cls)
        RestoraError.__init__(err, message, code=code, http_status=status, **details)
        if "field" in details:
            err.field = details["field"]  # type: ignore[attr-defined]
        return err
    return RestoraError(message, code=code, http_status=status, **details)


def decode_killable(data: bytes, limits: Limits, cancel: threading.Event | None = None,
                    *, poll_s: float = 0.05) -> Image:
    """``restora.io.decode(data, limits=limits)`` in a child process; :class:`Cancelled` (the
    child killed) as soon as ``cancel`` is set."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_child, args=(child, (limits.max_bytes, limits.max_pixels,
                                                    limits.max_frames)), daemon=True)
    proc.start()
    child.close()
    try:
        try:
            parent.send_bytes(data)
        except OSError:  # the child died before reading (it could not even start)
            raise CorruptImage("The decoder process stopped before reading the image.") from None
        while not parent.poll(poll_s):
            if cancel is not None and cancel.is_set():
                raise Cancelled("The job was cancelled.")
            if not proc.is_alive() and not parent.poll(0):
                raise CorruptImage("The decoder stopped without an answer (the image may need "
                                   "more memory than is available).")
        try:
            msg = parent.recv()
        except EOFError:
            raise CorruptImage("The decoder stopped without an answer.") from None
        if msg[0] == "error":
            raise _rebuild_error(*msg[1:])
        meta = msg[1]
        arrays = []
        for shape, dtype in meta["arrays"]:
            dt = np.dtype(dtype)
            buf = bytearray(int(np.prod(shape)) * dt.itemsize)
            parent.recv_bytes_into(buf)
            arrays.append(np.frombuffer(buf, dtype=dt).reshape(shape))
        return Image(pixels=arrays[0], alpha=arrays[1] if len(arrays) > 1 else None,
                     format=meta["format"], bit_depth=meta["bit_depth"], exif=meta["exif"],
                     icc_profile=meta["icc_profile"], info=meta["info"])
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        proc.join(5)
