"""Naming rules the API enforces (a request that breaks one gets 422 naming the rule)."""
from __future__ import annotations

#: organizations, groups, OAuth clients, storage servers: DNS-label-like, so they fit bucket, hub and client names
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
NAME_RULE = "2-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"
#: usernames: also Unix account names (jh-<name>) on the gateway and the clusters
USERNAME_PATTERN = r"^[a-z][a-z0-9_-]{1,30}$"
USERNAME_RULE = "2-31 characters: lowercase letters, digits, '_' and '-', starting with a letter"
#: roles an organization admin may grant within their organization
ORG_ROLES = ("org-admin", "user")
#: e-mail addresses: ASCII local part, '@', a dotted domain ending in letters
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}$"

from ..errors import RULES  # noqa: E402

RULES.update({NAME_PATTERN: NAME_RULE, USERNAME_PATTERN: USERNAME_RULE,
              EMAIL_PATTERN: "an e-mail address: name@domain with a dot in the domain"})
