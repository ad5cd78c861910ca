"""`python -m devkit.moto_server ARGS`: moto's server, with conditional PUTs atomic.

S3 and MinIO apply If-Match / If-None-Match atomically with the write. moto checks the
condition and then stores the object, in a threaded server and without a lock between the
two, so two racing conditional writes could both succeed there; ObjectStore.write_if relies
on exactly that not happening. One lock around moto's PutObject restores S3's behaviour.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_put_lock = threading.Lock()
_put_object = S3Response.put_object


def _atomic_put_object(self: S3Response) -> Any:
    with _put_lock:
        return _put_object(self)


S3Response.put_object = _atomic_put_object  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
