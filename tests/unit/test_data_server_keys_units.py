"""S3 keys per single-user server (issue 17), without the stack: account names, the bucket policy naming
every account of a user, and issue/revoke leaving the user's other servers alone. The gateway's admin API
and the bucket store are in-memory stand-ins here; tests/integration/test_data_server_keys.py runs the same
against Versity Gateway and two real servers."""
from __future__ import annotations

import json

from heroes_service.api.access import ACCESS
from heroes_service.auth import Principal, allowed
from heroes_service.data import iam, server_keys
from heroes_service.data.names import Naming
from heroes_service.data.service import DataService, QuotaPolicy
from heroes_service.errors import NotFound


class MemoryAdmin(iam.GatewayAdmin):
    """GatewayAdmin whose account store is a dict (the real one is Versity's IAM file)."""

    def __init__(self):
        super().__init__("http://s3.invalid", "root", "root-secret", namespace="heroes")
        self.store: dict[str, str] = {}

    def accounts(self) -> dict[str, str]:
        return dict(self.store)

    def create_account(self, access_key, secret_key, role="user"):
        assert access_key not in self.store
        self.store[access_key] = secret_key

    def update_secret(self, access_key, secret_key):
        self.store[access_key] = secret_key

    def delete_account(self, access_key):
        del self.store[access_key]


class MemoryStorage:
    endpoint = "http://s3.invalid"

    def __init__(self):
        self.buckets: dict[str, dict] = {}
        self.policies: dict[str, str] = {}

    def bucket_exists(self, bucket):
        return bucket in self.buckets

    def create_bucket(self, bucket, tags=None, policy=None):
        self.buckets.setdefault(bucket, dict(tags or {}))

    def bucket_tags(self, bucket):
        return self.buckets.get(bucket, {})

    def put_policy(self, bucket, policy):
        if bucket not in self.buckets:
            raise NotFound(f"no bucket {bucket!r}")
        self.policies[bucket] = policy

    def delete_policy(self, bucket):
        self.policies.pop(bucket, None)


def domain() -> DataService:
    return DataService(MemoryStorage(), Naming("heroes"), QuotaPolicy(), admin=MemoryAdmin())


def granted(data: DataService, bucket: str) -> set[str]:
    if bucket not in data.storage.policies:
        return set()
    (statement,) = json.loads(data.storage.policies[bucket])["Statement"]
    return set(statement["Principal"]["AWS"])


def test_each_server_has_its_own_account_under_the_users_prefix():
    default, second = iam.server_account_name("bob", ""), iam.server_account_name("bob", "second")
    assert default != second and len(default) == len(second) == 20
    prefix = iam.server_account_prefix("bob")
    assert default.startswith(prefix) and second.startswith(prefix)
    assert not iam.server_account_name("carol", "").startswith(prefix)
    assert iam.server_account_name("bob", "", namespace="other") != default  # two deployments, one S3 server
    assert iam.account_name("bob") not in (default, second)


def test_starting_a_second_server_keeps_the_first_servers_keys():
    data = domain()
    first = server_keys.server_credentials(data, "bob", "acme", "")
    second = server_keys.server_credentials(data, "bob", "acme", "second")
    assert first["bucket"] == second["bucket"] == "heroes-u-bob"
    assert first["access_key_id"] != second["access_key_id"]
    assert data.admin.store[first["access_key_id"]] == first["secret_access_key"]  # not rotated
    assert granted(data, "heroes-u-bob") == {first["access_key_id"], second["access_key_id"]}
    # restarting the second server re-keys that server only
    again = server_keys.server_credentials(data, "bob", "acme", "second")
    assert again["access_key_id"] == second["access_key_id"] and again["secret_access_key"] != second[
        "secret_access_key"]
    assert data.admin.store[first["access_key_id"]] == first["secret_access_key"]


def test_stopping_a_server_revokes_its_keys_only():
    data = domain()
    first = server_keys.server_credentials(data, "bob", "acme", "")
    second = server_keys.server_credentials(data, "bob", "acme", "second")
    carol = server_keys.server_credentials(data, "carol", "globex", "")
    assert server_keys.revoke_server_credentials(data, "bob", "second") is True
    assert second["access_key_id"] not in data.admin.store
    assert granted(data, "heroes-u-bob") == {first["access_key_id"]}
    assert granted(data, "heroes-u-carol") == {carol["access_key_id"]}
    assert server_keys.revoke_server_credentials(data, "bob", "second") is False  # already gone
    assert server_keys.revoke_server_credentials(data, "bob", "") is True
    assert granted(data, "heroes-u-bob") == set() and "heroes-u-bob" not in data.storage.policies


def test_a_bucket_removed_behind_the_services_back_is_made_again():
    """The domain remembers a provisioned bucket for a while; a server's keys still come with their bucket."""
    data = domain()
    server_keys.server_credentials(data, "bob", "acme", "")
    del data.storage.buckets["heroes-u-bob"]
    keys = server_keys.server_credentials(data, "bob", "acme", "")
    assert "heroes-u-bob" in data.storage.buckets and granted(data, "heroes-u-bob") == {keys["access_key_id"]}


def test_the_personal_account_and_server_accounts_share_the_policy():
    data = domain()
    server = server_keys.server_credentials(data, "bob", "acme", "")
    personal = data.user_credentials(Principal(username="bob", organization="acme", roles=frozenset({"user"})))
    assert granted(data, "heroes-u-bob") == {server["access_key_id"], personal["access_key_id"]}


def test_only_the_hub_service_level_guards_the_routes():
    for method in ("POST", "DELETE"):
        assert ACCESS[(method, "/organization/data/server-credentials")] == "hub-service"
    admin = Principal(username="root", organization=None, roles=frozenset({"platform-admin", "user"}))
    assert not allowed("hub-service", admin)
