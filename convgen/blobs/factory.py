"""Opens the blob store the settings choose and makes sure its buckets exist."""

from __future__ import annotations

from pydantic import SecretStr

from convgen.blobs.filesystem import FileBlobStore
from convgen.blobs.port import BlobStore
from convgen.blobs.s3 import S3BlobStore
from convgen.settings import Settings


async def open_blob_store(settings: Settings) -> BlobStore:
    """The configured blob store, opened, with the conversation, log and dataset buckets ensured."""
    store: BlobStore
    if settings.blob_store == "s3":
        store = await S3BlobStore.open(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.aws_region,
            access_key_id=_plain(settings.aws_access_key_id),
            secret_access_key=_plain(settings.aws_secret_access_key),
            create_buckets=settings.s3_create_buckets,
        )
    else:
        store = FileBlobStore(settings.blob_root, fsync=settings.blob_fsync)
    try:
        await store.ensure_buckets([settings.conversation_bucket, settings.log_bucket, settings.dataset_bucket])
    except BaseException:
        await store.close()
        raise
    return store


def _plain(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
