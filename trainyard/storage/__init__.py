"""Tenant storage: the ObjectStore interface and `open_store`, which picks the backend.

Importing this package must stay cheap (DAG files import it): the S3 backend, and with it
minio, is imported only when an S3 store is opened.
"""

from __future__ import annotations

from trainyard.storage.base import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    StorageError,
    check_key,
    check_object_key,
    join_key,
)
from trainyard.storage.config import LocalStorageConfig, StorageConfig, StorageCredentials
from trainyard.storage.local import LocalStore

__all__ = [
    "InvalidKey",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "StorageCredentials",
    "StorageError",
    "check_key",
    "check_object_key",
    "join_key",
    "open_store",
]


def open_store(cfg: StorageConfig, credentials: StorageCredentials | None = None) -> ObjectStore:
    """The store a tenant's storage config describes.

    S3 `credentials` default to the ones in this process's environment (see S3StorageConfig).
    """
    if isinstance(cfg, LocalStorageConfig):
        return LocalStore(cfg.root)
    from trainyard.storage.s3 import S3Store

    return S3Store.from_config(cfg, credentials=credentials)
