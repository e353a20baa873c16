"""Keycloak login for the hub: GenericOAuthenticator plus realm roles and a real single logout.

* Groups come from the plain ``groups`` claim of Keycloak's userinfo (``manage_groups``); hub access is
  granted by realm role (``allowed_roles``, e.g. ``user``) or by group (``allowed_groups``).
* Admin comes from the realm roles in the ``roles`` claim: a user with one of ``admin_roles`` is a hub
  admin; a user without is not (Keycloak is the source of truth, unless listed in ``admin_users``).
* Logout ends the Keycloak session as well: the hub redirects to the realm's end-session endpoint with
  ``client_id``, ``post_logout_redirect_uri`` and the user's ``id_token_hint`` (kept in the encrypted
  auth_state), so Keycloak logs out without a confirmation page and the next visit asks for the password.
"""
from __future__ import annotations

from urllib.parse import urlencode

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from traitlets import Set, Unicode


class KeycloakLogoutHandler(OAuthLogoutHandler):
    """Clear the hub's cookies, then send the browser to Keycloak's end-session endpoint."""

    async def get(self):
        # read the id_token before the hub forgets who is logging out
        self._heroes_id_token = None
        user = self.current_user
        if user is not None and self.authenticator.enable_auth_state:
            auth_state = await user.get_auth_state() or {}
            self._heroes_id_token = auth_state.get("id_token")
        await super().get()

    async def render_logout_page(self):
        self.redirect(self.authenticator.end_session_redirect(getattr(self, "_heroes_id_token", None)))


class HeroesKeycloakAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator for the ``heroes`` realm: groups, role-based admin, single logout."""

    login_service = Unicode("HEROES (Keycloak)", config=True, help="Name shown on the hub's login button.")

    roles_claim = Unicode(
        "roles",
        config=True,
        help="Userinfo claim that lists the user's Keycloak realm roles (a plain list of role names).",
    )
    admin_roles = Set(
        Unicode(),
        {"platform-admin"},
        config=True,
        help="Realm roles that make a user a hub admin. Checked at every login, so removing the role in "
             "Keycloak removes hub admin at the next login (users in admin_users always stay admin).",
    )
    end_session_url = Unicode(
        "",
        config=True,
        help="Keycloak's OIDC end-session endpoint, "
             "e.g. http://127.0.0.1:8080/realms/heroes/protocol/openid-connect/logout. "
             "Empty: logging out of the hub leaves the Keycloak session alive.",
    )
    post_logout_redirect_url = Unicode(
        "",
        config=True,
        help="Where Keycloak sends the browser after logout; must match the client's "
             "post.logout.redirect.uris in the realm (e.g. http://127.0.0.1:8000/hub/).",
    )

    allowed_roles = Set(
        Unicode(),
        set(),
        config=True,
        help="Realm roles whose holders may log in (in addition to allowed_groups / allowed_users). A role "
             "rather than a fixed group list, so organizations created later need no hub change.",
    )

    logout_handler = KeycloakLogoutHandler

    async def check_allowed(self, username, auth_model):
        """Allowed by the usual rules, or by holding one of ``allowed_roles`` in Keycloak."""
        if await super().check_allowed(username, auth_model):
            return True
        return bool(self.user_roles((auth_model or {}).get("auth_state")) & self.allowed_roles)

    def user_roles(self, auth_state: dict | None) -> set[str]:
        """The realm roles in the userinfo response stored in auth_state."""
        user_info = (auth_state or {}).get(self.user_auth_state_key) or {}
        roles = user_info.get(self.roles_claim) or []
        return {str(r) for r in roles} if isinstance(roles, (list, tuple, set)) else set()

    async def update_auth_model(self, auth_model):
        """Make the user admin exactly when Keycloak gives them one of ``admin_roles``."""
        auth_model = await super().update_auth_model(auth_model)
        if auth_model.get("admin") is not True:  # True only via admin_users: keep it
            auth_model["admin"] = bool(self.user_roles(auth_model.get("auth_state")) & self.admin_roles)
        return auth_model

    def end_session_redirect(self, id_token: str | None) -> str:
        """The URL that ends the Keycloak session (or the hub's login page if none is configured)."""
        if not self.end_session_url:
            return self.logout_redirect_url or "/hub/login"
        params = {"client_id": self.client_id}
        if self.post_logout_redirect_url:
            params["post_logout_redirect_uri"] = self.post_logout_redirect_url
        if id_token:
            params["id_token_hint"] = id_token
        return f"{self.end_session_url}?{urlencode(params)}"
