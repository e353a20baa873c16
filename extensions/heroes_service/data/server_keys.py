"""S3 keys of single-user servers, handed to the hub (issue 17): one gateway account per server.

Why per server: the hub's pre-spawn hook used to rotate the user's single account at every spawn, so a
second server of the same user (or a restart) invalidated the keys a running server held, and that
server's notebooks answered a bare 404. Now each server (``""`` is the default one) has its own account;
a start re-keys only that server, and a stop removes only its account.

Why here and not in the hub: the service is the only component holding the S3 admin keys; the hub asks
for a server's keys over the service's REST API (``api/server_keys.py``) with its own service token.
"""
from __future__ import annotations

from ..errors import Conflict, NotFound
from . import iam
from .names import USER
from .service import DataService


def server_credentials(data: DataService, username: str, organization: str, server: str) -> dict:
    """Fresh keys of one server of ``username``, limited to the user's personal bucket."""
    if data.admin is None:
        raise Conflict("this deployment hands out no per-user S3 credentials", rule="no-user-credentials")
    bucket = data.provision_user(username, organization)
    try:
        account = data.admin.issue_server_account(username, server)
        try:
            data.grant_accounts(username, bucket)
        except NotFound:  # removed on the S3 server since it was provisioned (cached): make it again
            data.forget_provisioned(bucket)
            data.grant_accounts(username, data.provision_user(username, organization))
    except iam.AdminError as exc:
        raise Conflict(f"the S3 server refused to create the server's account: {exc}") from None
    return {"endpoint_url": data.storage.endpoint, "bucket": bucket, "access_key_id": account.access_key,
            "secret_access_key": account.secret_key, "region": "us-east-1"}


def revoke_server_credentials(data: DataService, username: str, server: str) -> bool:
    """Remove a stopped server's account and its grant (False when it had none); other servers keep theirs."""
    if data.admin is None:
        return False
    bucket = data.naming.bucket(USER, username)
    try:
        revoked = data.admin.revoke_server_account(username, server)
        if revoked and data.storage.bucket_exists(bucket):
            data.grant_accounts(username, bucket)
    except iam.AdminError as exc:
        raise Conflict(f"the S3 server refused to remove the server's account: {exc}") from None
    return revoked
