"""The storage policy a tenant's S3 (MinIO) keys need: its own bucket or prefix, nothing else.

One rendering for everyone: `trainyard tenants policy` prints it for an operator to attach
(`mc admin policy create ALIAS trainyard-<tenant> policy.json`, then `mc admin policy attach`
to the tenant's user), and the tests create their IAM users on the authenticating S3 server
with it, so the policy that is documented is the policy that is tested.
"""

from __future__ import annotations

from typing import Any

from trainyard.storage.config import S3StorageConfig


def tenant_storage_policy(storage: S3StorageConfig) -> dict[str, Any]:
    """An IAM policy document (AWS and MinIO syntax) for the keys of a tenant with `storage`.

    It may list its bucket (under its prefix only, when it has one) and read, write and
    delete objects there, with multipart uploads; no other bucket and no admin call.
    """
    bucket = f"arn:aws:s3:::{storage.bucket}"
    prefix = storage.prefix.strip("/")
    objects = f"{bucket}/{prefix}/*" if prefix else f"{bucket}/*"
    listing: dict[str, Any] = {
        "Sid": "ListItsOwnObjects",
        "Effect": "Allow",
        "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
        "Resource": [bucket],
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [
            listing,
            {
                "Sid": "ReadWriteItsOwnObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [objects],
            },
            {
                # A batch delete (DeleteObjects, how retention prunes a checkpoint) is a POST
                # to the bucket: S3 and MinIO check s3:DeleteObject on each object named, but
                # some S3 implementations (moto among them) check it on the bucket's ARN.
                "Sid": "BatchDeleteItsOwnObjects",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": [bucket],
            },
        ],
    }
