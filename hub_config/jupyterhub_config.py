"""JupyterHub 6 configuration of the HEROES gateway.

Layered (see heroes_layers.py): built-in defaults -> optional site YAML (HEROES_HUB_SITE_CONFIG) ->
environment. The embedded stack's ``jupyterhub`` component passes ports, Keycloak URLs and the secrets
(OAuth client secret, JUPYTERHUB_CRYPT_KEY) through the environment; nothing secret lives in this file.

Run: ``jupyterhub -f hub_config/jupyterhub_config.py`` (cwd = the hub's data dir).
"""
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from heroes_auth import HeroesKeycloakAuthenticator  # noqa: E402
from heroes_layers import load_settings, split_list  # noqa: E402
from heroes_spawner.local import HeroesLocalSpawner  # noqa: E402
import heroes_spawner.api  # noqa: E402,F401 (strict POST /hub/api/batchspawner; must be imported before the hub starts)
from heroes_spawner.spawner import HeroesSpawner  # noqa: E402

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
s, site_extra = load_settings()
data_dir = Path(s.data_dir or Path.cwd())
public = urlsplit(s.public_url)
venv_bin = Path(sys.executable).parent

# --- network: everything on loopback ------------------------------------------------------------------
c.JupyterHub.bind_url = f"{public.scheme}://{public.hostname}:{public.port or 80}/"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{s.hub_api_port}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{s.proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")

# --- state ------------------------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
# servers outlive a hub restart (cluster jobs keep running; state restored from the DB). Stop them through
# the API (or `heroes dev down` of the servers' owners) instead.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = True

# --- login: Keycloak (realm heroes) -------------------------------------------------------------------
c.JupyterHub.authenticator_class = HeroesKeycloakAuthenticator
auth = c.HeroesKeycloakAuthenticator
auth.client_id = s.oauth_client_id
auth.client_secret = s.oauth_client_secret
auth.oauth_callback_url = f"{s.public_url.rstrip('/')}/hub/oauth_callback"
auth.authorize_url = f"{s.oidc_base}/auth"
auth.token_url = f"{s.oidc_base}/token"
auth.userdata_url = f"{s.oidc_base}/userinfo"
auth.scope = ["openid", "profile", "email"]
auth.username_claim = "preferred_username"
auth.enable_pkce = True
auth.manage_groups = True
auth.auth_state_groups_key = "oauth_user.groups"
auth.allowed_groups = split_list(s.allowed_groups)
auth.allowed_roles = split_list(s.allowed_roles)
auth.admin_roles = split_list(s.admin_roles)
auth.enable_auth_state = True  # keeps the id_token (single logout); needs JUPYTERHUB_CRYPT_KEY
auth.auto_login = True  # the hub's front page goes straight to Keycloak
auth.end_session_url = f"{s.oidc_base}/logout"
auth.post_logout_redirect_url = f"{s.public_url.rstrip('/')}/hub/"

# --- single-user servers: JupyterLab + Voila on the gateway, one Unix account per user -------------------
# HeroesSpawner: the spawn form chooses the gateway (delegates to HeroesLocalSpawner, also the default for
# spawns without options) or a Slurm job on a cluster of the user's organization (extensions/heroes_spawner).
c.JupyterHub.spawner_class = HeroesSpawner
c.HeroesSpawner.node_bind_ip = "127.0.0.1"  # the embedded clusters' nodes are this machine
c.HeroesSpawner.poll_interval = int(os.environ.get("HEROES_SPAWNER_POLL_S", "15"))
c.HeroesSpawner.start_timeout = 300  # a cluster job may wait in the queue
# the default server stays on the gateway (no form); named servers get the form: gateway or a cluster
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 3
c.HeroesLocalSpawner.homes_root = s.homes_dir or str(data_dir / "homes")
c.HeroesLocalSpawner.dashboards_dir = s.notebooks_dir
# remote Slurm kernels for gateway servers (heroes_kernels + per-organization kernelspecs, world-readable)
c.HeroesSpawner.kernels_dir = str(Path(c.HeroesLocalSpawner.homes_root).parent / "heroes-kernels")
user_bin = Path(s.singleuser_env) / "bin" if s.singleuser_env else venv_bin
c.Spawner.cmd = [str(user_bin / "jupyterhub-singleuser")]
# a login lands on the start page (notebooks/welcome.ipynb: a card per app, what is ready); JupyterLab is one
# click away in its navigation bar
c.Spawner.default_url = "/voila/render/welcome.ipynb"
# JupyterHub >= 5.2 keeps only JUPYTERHUB_SINGLEUSER_APP by default (pitfalls file); keep PATH and
# override it below with the user environment first. Secrets in the hub's environment are NOT listed
# here, so they never reach a user's server.
c.Spawner.env_keep = ["PATH", "LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP"]
c.Spawner.environment = {
    "PATH": f"{user_bin}:/usr/local/bin:/usr/bin:/bin",
    "VIRTUAL_ENV": str(user_bin.parent),
    # the launcher's Desktop (jupyter-remote-desktop-proxy): openbox + a terminal, the session the stack writes
    # into the venv (heroes_widgets.launcher.DESKTOP_SESSION) instead of the package's Xfce default
    "JUPYTER_REMOTE_DESKTOP_PROXY_XSTARTUP": str(user_bin / "heroes-desktop-session"),
}
if s.singleuser_pythonpath:
    c.Spawner.environment["PYTHONPATH"] = s.singleuser_pythonpath
# Notebooks live in the user's own S3 bucket (s3contents, keys of that one server, scoped to that bucket): the
# hub asks the HEROES service for them with the token of its token-only service "hub-server-keys" (a 0600 file
# in the hub's data dir), so the hub itself holds no S3 admin keys (hub_config/heroes_data.py).
# HEROES_NOTEBOOKS_IN_S3=0 keeps them in the home directory instead.
if os.environ.get("HEROES_NOTEBOOKS_IN_S3", "1") != "0":
    import secrets as _secrets

    from heroes_data import SERVICE_NAME as _KEYS_SERVICE, make_hook, make_stop_hook  # noqa: E402

    _keys_token_file = data_dir / "server-keys-token"
    if not _keys_token_file.exists():
        with os.fdopen(os.open(_keys_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as _out:
            _out.write(_secrets.token_hex(32))
    _keys_token = _keys_token_file.read_text().strip()
    _api = f"http://127.0.0.1:{s.service_port}/services/heroes/api/v1"
    c.Spawner.pre_spawn_hook = make_hook(s.notebooks_dir or "", _api, _keys_token)
    c.Spawner.post_stop_hook = make_stop_hook(_api, _keys_token)
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 60

# --- the HEROES service ---------------------------------------------------------------------------------
# Users may call it with their hub token (JupyterHub 6: extra_user_scopes instead of redefining 'user').
c.JupyterHub.extra_user_scopes = {"access:services!service=heroes"}
service_env = {"HEROES_SERVICE_HOST": "127.0.0.1", "HEROES_SERVICE_PORT": str(s.service_port)}
if s.state_dir:
    service_env["HEROES_STATE_DIR"] = s.state_dir
if os.environ.get("HEROES_S3_ENDPOINT"):
    service_env["HEROES_SERVICE_S3_ENDPOINT"] = os.environ["HEROES_S3_ENDPOINT"]
# Keycloak: tokens' issuer, the login client (direct grant), the admin API; the admin password is read by the
# service from the stack's 0600 file under HEROES_STATE_DIR (or HEROES_SERVICE_KEYCLOAK_ADMIN_PASSWORD).
service_env.update({
    "HEROES_SERVICE_KEYCLOAK_URL": s.keycloak_url,
    "HEROES_SERVICE_KEYCLOAK_REALM": s.keycloak_realm,
    "HEROES_SERVICE_KEYCLOAK_CLIENT_ID": s.oauth_client_id,
    "HEROES_SERVICE_TOKEN_AUDIENCES": s.oauth_client_id,
})
if s.oauth_client_secret:
    service_env["HEROES_SERVICE_KEYCLOAK_CLIENT_SECRET"] = s.oauth_client_secret
# Workflow settings of the service (e.g. the energy hook the embedded stack sets) pass through as they are.
service_env.update({k: v for k, v in os.environ.items() if k.startswith("HEROES_SERVICE_WORKFLOWS_")})
# Single-user servers (widgets, notebooks, scripts) call the service with their own JUPYTERHUB_API_TOKEN:
# that token gets the service's access scope besides the default 'server' role scopes, and the API's URL.
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server",
                                 "access:services!service=heroes"]
c.Spawner.environment["HEROES_API_URL"] = f"http://127.0.0.1:{s.service_port}/services/heroes/api/v1"
c.JupyterHub.services = [
    {
        "name": "heroes",
        "url": f"http://127.0.0.1:{s.service_port}",
        "command": [str(venv_bin / "python"), "-m", "uvicorn", "heroes_service.app:app",
                    "--host", "127.0.0.1", "--port", str(s.service_port), "--no-access-log",
                    # the only websocket is the desktop bridge, whose VNC data is compressed already:
                    # deflating it again cost 0.27 vs 0.17 cores at 2.2 MB/s for no gain in frames
                    "--ws-per-message-deflate", "false"],
        "cwd": str(data_dir),
        "environment": service_env,
        "display": False,
    }
]

if os.environ.get("HEROES_NOTEBOOKS_IN_S3", "1") != "0":
    # no scopes: the service only asks the hub whose token this is (GET /hub/api/user)
    c.JupyterHub.services.append({"name": _KEYS_SERVICE, "api_token": _keys_token})

c.JupyterHub.load_roles = [
    {
        "name": "heroes-service",
        "description": "What the HEROES service needs from the hub: resolve users, and mirror the Keycloak groups "
                       "an admin changes through the API into hub groups at once (admin:groups).",
        "scopes": ["list:users", "read:users", "read:groups", "admin:groups"],
        "services": ["heroes"],
    }
]
if s.admin_token:
    # token-only service for the stack's tooling and tests (stop servers, read groups); no URL, no process
    c.JupyterHub.services.append({"name": "stack-admin", "api_token": s.admin_token})
    c.JupyterHub.load_roles.append({
        "name": "stack-admin",
        "description": "The embedded stack's tooling: manage users, servers and groups.",
        "scopes": ["admin:users", "admin:servers", "admin:groups", "tokens", "list:users", "read:users", "read:groups"],
        "services": ["stack-admin"],
    })

# --- idle culling: jupyterhub-idle-culler as a service with the least-privilege role ----------------------------
# Its token is a 0600 file in the hub's data dir (tests run a second culler with it and short timeouts).
_culler_token_file = data_dir / "idle-culler-token"
if not _culler_token_file.exists():
    import secrets as _secrets

    _fd = os.open(_culler_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(_fd, "w") as _out:
        _out.write(_secrets.token_hex(32))
c.JupyterHub.services.append({
    "name": "idle-culler",
    "api_token": _culler_token_file.read_text().strip(),
    "command": [str(venv_bin / "python"), "-m", "jupyterhub_idle_culler",
                f"--timeout={int(os.environ.get('HEROES_CULL_TIMEOUT_S', '3600'))}",
                f"--cull-every={int(os.environ.get('HEROES_CULL_EVERY_S', '300'))}"],
})
c.JupyterHub.load_roles.append({
    "name": "idle-culler",
    "description": "Cull idle servers: list users, read their activity and servers, stop servers. Nothing else.",
    "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    "services": ["idle-culler"],
})

# --- the hub acts for users through the service, never by itself --------------------------------------------
# Cluster JupyterLab servers and remote kernels are cluster jobs of the HEROES service: the spawner and the
# kernel API call its hub-only routes (/heroes/hub/cluster-jobs) with the token of the hub's token-only service
# (the one the pre-spawn hook uses for S3 keys). The hub holds no database URL, user CA or cluster key.
_hub_token_file = data_dir / "server-keys-token"
if not _hub_token_file.exists():
    import secrets as _secrets

    with os.fdopen(os.open(_hub_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as _out:
        _out.write(_secrets.token_hex(32))
_hub_token = _hub_token_file.read_text().strip()
if not any(svc.get("name") == "hub-server-keys" for svc in c.JupyterHub.services):
    c.JupyterHub.services.append({"name": "hub-server-keys", "api_token": _hub_token})
c.HeroesSpawner.service_api_url = f"http://127.0.0.1:{s.service_port}/services/heroes/api/v1"
c.HeroesSpawner.service_token = _hub_token

# --- site YAML sections for other classes, last ---------------------------------------------------------
c.merge(site_extra)
