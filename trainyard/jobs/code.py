"""The job's own copy of its code, taken at validate so that every attempt and rerun runs
exactly the code the job was submitted with."""

from __future__ import annotations

from trainyard.data.packaging import ARCHIVE_FIX, PackagingError, is_archive, unpack_archive
from trainyard.failures import UserError
from trainyard.jobs.layout import JobLayout
from trainyard.manifest.schema import JobManifest
from trainyard.storage import ObjectNotFound, ObjectStore


def snapshot_code(store: ObjectStore, manifest: JobManifest, layout: JobLayout) -> None:
    """Copy the job's code into the job's own prefix so a rerun uses exactly this code.

    `code.uri` names a prefix, or a code archive, which is checked whole and then unpacked.

    Raises:
        UserError: no code there, or an archive that is not a safe one.
    """
    source = manifest.code.uri
    if source is None:
        raise UserError(
            "code.path: a local directory can only be packaged by 'trainyard submit'",
            "submit with the CLI, or upload the code with 'trainyard data upload' and set code.uri",
        )
    if is_archive(source):
        try:
            archive = store.get_bytes(source)
        except ObjectNotFound as missing:
            raise UserError(
                f"code.uri: no archive {source!r} in {store.describe()}",
                "upload the archive first, or name the prefix that holds the code",
            ) from missing
        store.delete_prefix(layout.code)
        try:
            unpack_archive(store, archive, source, layout.code, "code.uri")
        except PackagingError as error:
            raise UserError(str(error), ARCHIVE_FIX) from error
    elif source != layout.code:
        store.delete_prefix(layout.code)
        store.copy_prefix(source, layout.code)
    if not any(True for _ in store.list(layout.code)):
        raise UserError(
            f"code.uri: no files under {source!r} in {store.describe()}",
            "upload the code first ('trainyard data upload DIR PATH --tenant T')",
        )
