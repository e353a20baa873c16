"""Per-user S3 accounts on Versity Gateway's internal IAM store, and the bucket policy that scopes them.

Why this design (least privilege the gateway allows):

* Every bucket is created and **owned by the root account**. A gateway account of role ``user`` that owns
  a bucket may rewrite that bucket's policy (checked: it can make it public), so users own nothing.
* Each user gets one account (role ``user``: cannot create buckets, cannot list other buckets) and the
  root puts a bucket policy on the user's personal bucket granting that account object-level actions
  only (get/put/delete/list/multipart). The account cannot read or change policies or ACLs, cannot
  delete the bucket, and sees no other bucket (checked against the running gateway).
* The shared organization buckets get no account grants: the single-user servers do not need them, so
  only the service (root) touches them, after its own role checks.

The admin API lives on the S3 port (``PATCH /create-user`` etc.), signed with SigV4 by the root keys.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import requests

#: object-level actions a user's own account gets on the user's personal bucket; nothing bucket-level
USER_ACTIONS = [
    "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation",
    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads",
]


class AdminError(RuntimeError):
    """The gateway's admin API refused a call (status and S3 error code in the message)."""


@dataclass(frozen=True)
class Account:
    access_key: str
    secret_key: str


def account_name(user: str, namespace: str = "heroes") -> str:
    """The gateway account id of a user in one deployment (``namespace`` = the bucket base).

    A digest keeps odd user names out of the IAM store; the namespace keeps two deployments sharing one
    S3 server (e.g. the tests' and the live service) from rotating each other's keys.
    """
    return "hx" + hashlib.sha256(f"{namespace}/{user}".encode("utf-8")).hexdigest()[:18]


def server_account_name(user: str, server: str, namespace: str = "heroes") -> str:
    """The gateway account id of one single-user server of ``user`` ("" is the default server).

    One account per server, so that starting (and re-keying) one server never changes the keys another
    running server of the same user holds. The first 14 characters are the same for every server of a user
    (``server_account_prefix``): the bucket policy finds them all by that prefix.
    """
    digest = hashlib.sha256(f"{namespace}/{user}/{server}".encode("utf-8")).hexdigest()[:6]
    return server_account_prefix(user, namespace) + digest


def server_account_prefix(user: str, namespace: str = "heroes") -> str:
    return "hs" + hashlib.sha256(f"{namespace}/{user}".encode("utf-8")).hexdigest()[:12]


def user_policy(bucket: str, access_key: str | list[str]) -> str:
    """Bucket policy granting ``access_key`` (one or several) the object-level actions on ``bucket`` only."""
    keys = [access_key] if isinstance(access_key, str) else sorted(access_key)
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "HeroesOwnerObjects",
            "Effect": "Allow",
            "Principal": {"AWS": keys},
            "Action": USER_ACTIONS,
            "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        }],
    })


class GatewayAdmin:
    """Client of Versity Gateway's admin API (root-signed PATCH requests on the S3 endpoint)."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1",
                 timeout: float = 10.0, namespace: str = "heroes"):
        self.endpoint = endpoint.rstrip("/")
        self.namespace = namespace
        self._creds = botocore.credentials.Credentials(access_key, secret_key)
        self.region = region
        self.timeout = timeout

    def _call(self, path: str, body: bytes = b"", params: dict | None = None,
              headers: dict | None = None) -> requests.Response:
        url = self.endpoint + path
        if params:
            url += "?" + "&".join(f"{k}={requests.utils.quote(str(v), safe='')}" for k, v in params.items())
        hdrs = {"X-Amz-Content-Sha256": hashlib.sha256(body).hexdigest(), **(headers or {})}
        req = botocore.awsrequest.AWSRequest(method="PATCH", url=url, data=body, headers=hdrs)
        botocore.auth.SigV4Auth(self._creds, "s3", self.region).add_auth(req)
        prepared = req.prepare()
        return requests.request("PATCH", prepared.url, headers=dict(prepared.headers), data=body,
                                timeout=self.timeout)

    @staticmethod
    def _check(resp: requests.Response, what: str) -> None:
        if resp.status_code >= 400:
            code = ""
            try:
                code = ET.fromstring(resp.content).findtext("Code") or ""
            except ET.ParseError:
                pass
            raise AdminError(f"{what}: HTTP {resp.status_code} {code}".strip())

    def accounts(self) -> dict[str, str]:
        """access key -> secret of every account (the gateway is the only place secrets are kept)."""
        resp = self._call("/list-users")
        self._check(resp, "list-users")
        root = ET.fromstring(resp.content)
        return {acc.findtext("Access") or "": acc.findtext("Secret") or "" for acc in root.iter("Accounts")}

    def list_accounts(self) -> list[str]:
        return list(self.accounts())

    def create_account(self, access_key: str, secret_key: str, role: str = "user") -> None:
        body = (f"<Account><Access>{escape(access_key)}</Access><Secret>{escape(secret_key)}</Secret>"
                f"<Role>{escape(role)}</Role></Account>").encode()
        self._check(self._call("/create-user", body), "create-user")

    def update_secret(self, access_key: str, secret_key: str) -> None:
        body = f"<MutableProps><Secret>{escape(secret_key)}</Secret></MutableProps>".encode()
        self._check(self._call("/update-user", body, params={"access": access_key}), "update-user")

    def delete_account(self, access_key: str) -> None:
        self._check(self._call("/delete-user", params={"access": access_key}), "delete-user")

    def ensure_user_account(self, user: str, *, rotate: bool = False) -> Account:
        """The user's account keys, creating the account on first use; ``rotate`` issues a new secret.

        The service stores no secret: the gateway's IAM store already holds it (0700, root's). Not rotating
        by default keeps a running server's keys valid when the same user asks again.
        """
        access = account_name(user, self.namespace)
        existing = self.accounts()
        if access in existing and not rotate and existing[access]:
            return Account(access, existing[access])
        secret = secrets.token_urlsafe(30)
        if access in existing:
            self.update_secret(access, secret)
        else:
            self.create_account(access, secret, "user")
        return Account(access, secret)

    def issue_server_account(self, user: str, server: str) -> Account:
        """Fresh keys for one server of ``user`` (a new secret each start: only that server held the old one)."""
        access = server_account_name(user, server, self.namespace)
        secret = secrets.token_urlsafe(30)
        if access in self.accounts():
            self.update_secret(access, secret)
        else:
            self.create_account(access, secret, "user")
        return Account(access, secret)

    def revoke_server_account(self, user: str, server: str) -> bool:
        """Delete the account of a stopped server (False when it had none)."""
        access = server_account_name(user, server, self.namespace)
        if access not in self.accounts():
            return False
        self.delete_account(access)
        return True

    def user_access_keys(self, user: str) -> list[str]:
        """Every account of ``user`` the gateway holds: the personal one and one per running server."""
        personal = account_name(user, self.namespace)
        prefix = server_account_prefix(user, self.namespace)
        return sorted(a for a in self.accounts() if a == personal or a.startswith(prefix))
