"""Who may use which bucket: the data domain's grant rules (no S3 call is made for these)."""
from __future__ import annotations

import pytest

from heroes_service.auth import Principal
from heroes_service.data.names import ORG, USER, Naming
from heroes_service.data.service import READ, WRITE, DataService, QuotaPolicy
from heroes_service.errors import Forbidden, NotFound


def who(name, org, *roles, groups=()):
    return Principal(username=name, organization=org, groups=list(groups) + ([org] if org else []),
                     roles=frozenset(roles or ("user",)))


ALICE = who("alice", "acme", "org-admin", "user")
BOB = who("bob", "acme")
DANA = who("dana", "acme", groups=["data-readonly"])
CAROL = who("carol", "globex")
ROOT = who("root", None, "platform-admin", "user")


@pytest.fixture
def data():
    return DataService(storage=None, naming=Naming("heroes"), quotas=QuotaPolicy())


def test_personal_space_is_the_owners_alone(data):
    assert data.resolve(BOB, "heroes-u-bob", WRITE).access == WRITE
    assert data.resolve(BOB, "heroes-u-bob.extra", WRITE).manage
    for other in (ALICE, DANA, CAROL, ROOT):
        with pytest.raises(NotFound):
            data.resolve(other, "heroes-u-bob")


def test_shared_space_by_role(data):
    assert data.resolve(BOB, "heroes-o-acme", WRITE).access == WRITE
    assert not data.resolve(BOB, "heroes-o-acme.x").manage
    assert data.resolve(ALICE, "heroes-o-acme.x").manage
    assert data.resolve(DANA, "heroes-o-acme").access == READ
    with pytest.raises(Forbidden):
        data.resolve(DANA, "heroes-o-acme", WRITE)
    # an org admin in the read-only group still writes
    admin_ro = who("eve", "acme", "org-admin", "user", groups=["data-readonly"])
    assert data.resolve(admin_ro, "heroes-o-acme", WRITE).access == WRITE


@pytest.mark.parametrize("bucket", ["heroes-o-acme", "heroes-o-acme.x", "heroes-u-bob", "other-o-globex",
                                    "../heroes-o-globex", "heroes-o-globex/..", "", "HEROES-O-GLOBEX"])
def test_other_organization_sees_nothing(data, bucket):
    with pytest.raises(NotFound) as err:
        data.resolve(CAROL, bucket)
    assert "acme" not in err.value.detail and "bob" not in err.value.detail


def test_platform_admin_has_no_tenant_data(data):
    with pytest.raises(NotFound):
        data.resolve(ROOT, "heroes-o-acme")
    assert data.resolve(ROOT, "heroes-u-root").access == WRITE
    assert data.default_buckets(ROOT) == ["heroes-u-root"]


def test_name_lookalikes_do_not_match(data):
    # a user literally named like another's slug form cannot reach the other's bucket
    odd = who("Bob", "acme")
    assert data.naming.bucket(USER, "Bob") != "heroes-u-bob"
    with pytest.raises(NotFound):
        data.resolve(odd, "heroes-u-bob")
    org_lookalike = who("x", "ACME")
    with pytest.raises(NotFound):
        data.resolve(org_lookalike, data.naming.bucket(ORG, "acme"))


def test_quota_policy():
    q = QuotaPolicy(default=100, per_org={"acme": 5})
    assert q.of("acme") == 5 and q.of("globex") == 100
