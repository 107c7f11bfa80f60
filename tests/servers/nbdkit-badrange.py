# nbdkit Python plugin (API 2): serves a raw file like nbdkit's file plugin, but every read
# and/or write that touches a bad sector range fails with EIO (the I/O is not done), for
# tests that need errors at exact places. nbdkit 1.32's error filter fails requests at a
# rate, not by offset; this plugin does the offset part, and the error and delay filters
# still stack on top of it.
#
#   nbdkit python nbdkit-badrange.py file=IMG bad=START-END[,START-END...] [ops=read,write]
#
# START-END are 512-byte sectors, both inclusive. ops: which requests fail (read, write,
# trim, zero; default read,write). Flush, trim and zero are passed through (fallocate).
import ctypes
import ctypes.util
import errno
import os

import nbdkit

API_VERSION = 2

path = None
ranges = []
ops = {"read", "write"}


def config(key, value):
    global path, ops
    if key == "file":
        path = value
    elif key == "bad":
        for r in value.split(","):
            a, b = r.split("-")
            ranges.append((int(a, 0) * 512, (int(b, 0) + 1) * 512))
    elif key == "ops":
        ops = set(value.split(","))
        unknown = ops - {"read", "write", "trim", "zero"}
        if unknown:
            raise ValueError("unknown ops: %s" % ",".join(sorted(unknown)))
    else:
        raise ValueError("unknown parameter %s" % key)


def config_complete():
    if path is None:
        raise ValueError("file= is required")


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def open(readonly):
    fd = os.open(path, os.O_RDONLY if readonly else os.O_RDWR)
    return {"fd": fd}


def close(h):
    os.close(h["fd"])


def get_size(h):
    return os.fstat(h["fd"]).st_size


def can_multi_conn(h):
    return True


def can_flush(h):
    return True


def can_trim(h):
    return True


def can_zero(h):
    return True


def can_fua(h):
    return nbdkit.FUA_NATIVE


def check(op, offset, count):
    if op not in ops:
        return
    for a, b in ranges:
        if offset < b and a < offset + count:
            nbdkit.set_error(errno.EIO)
            raise IOError(errno.EIO, "injected: %s of %d bytes at %d touches bad range" % (op, count, offset))


def pread(h, buf, offset, flags):
    check("read", offset, len(buf))
    data = os.pread(h["fd"], len(buf), offset)
    if len(data) != len(buf):
        nbdkit.set_error(errno.EIO)
        raise IOError(errno.EIO, "short read")
    buf[:] = data


def pwrite(h, buf, offset, flags):
    check("write", offset, len(buf))
    n = os.pwrite(h["fd"], buf, offset)
    if n != len(buf):
        nbdkit.set_error(errno.EIO)
        raise IOError(errno.EIO, "short write")
    if flags & nbdkit.FLAG_FUA:
        os.fdatasync(h["fd"])


def flush(h, flags):
    os.fdatasync(h["fd"])


def trim(h, count, offset, flags):
    check("trim", offset, count)
    # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: reads back as zeroes, like the file plugin
    _fallocate(h["fd"], 0x02 | 0x01, offset, count)
    if flags & nbdkit.FLAG_FUA:
        os.fdatasync(h["fd"])


def zero(h, count, offset, flags):
    check("zero", offset, count)
    _fallocate(h["fd"], 0x02 | 0x01, offset, count)
    if flags & nbdkit.FLAG_FUA:
        os.fdatasync(h["fd"])


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _fallocate(fd, mode, offset, count):
    if _libc.fallocate(fd, mode, offset, count) != 0:
        e = ctypes.get_errno()
        if e in (errno.EOPNOTSUPP, errno.ENOSYS):
            os.pwrite(fd, bytes(count), offset)
        else:
            nbdkit.set_error(e)
            raise OSError(e, os.strerror(e))
