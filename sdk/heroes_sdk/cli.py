"""The ``heroes`` command line for users: log in, look around, decide, submit, follow, fetch results.

The gateway's own ``heroes`` command (``heroes dev ...``, ``heroes decision ...``) registers these commands
with :func:`register`; on a laptop with only the SDK installed, :func:`main` is the whole command.

Exit codes (scripts may rely on them):

| code | meaning |
| --- | --- |
| 0 | success |
| 1 | any other failure |
| 2 | usage error: an unknown option, a bad ``key=value``, an unreadable parameters file |
| 3 | not logged in, or the credential was refused (HTTP 401): run ``heroes login`` |
| 4 | not found or not yours (HTTP 404, 403) |
| 5 | the service refused the request (HTTP 400, 409, 413, 422): the message says which rule |
| 6 | the service, a cluster or S3 did not answer (HTTP 5xx, no answer); a submit whose answer was lost |
| 7 | ``--wait``: the instance ended FAILED or CANCELLED |
| 8 | ``--wait --timeout``: the instance had not ended in time |

``--json`` on every listing prints JSON (one document) instead of a table. Errors go to stderr as
``heroes: <message>``; progress goes to stderr, so stdout carries only results.
"""
from __future__ import annotations

import argparse
import functools
import sys

from . import errors

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6
EXIT_INSTANCE_FAILED, EXIT_TIMEOUT = 7, 8
EXIT_CODES_HELP = """exit codes: 0 ok; 1 other failure; 2 usage; 3 not logged in / credential refused (401);
4 not found or not yours (403, 404); 5 request refused (400, 409, 413, 422); 6 service, cluster or S3
unavailable, or a submit's answer lost; 7 --wait: instance FAILED or CANCELLED; 8 --wait: timed out"""

#: top-level commands this module adds to a parser (the gateway's CLI checks it has none of them already)
COMMANDS = ("login", "logout", "whoami", "clusters", "templates", "decide", "submit", "status", "logs", "cancel",
            "outputs", "data", "energy")


class UsageError(Exception):
    """A mistake on the command line the parser could not see (``key=value`` syntax, a YAML file)."""


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an exception raised by a command."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, errors.InstanceFailed):
        return EXIT_INSTANCE_FAILED
    if isinstance(exc, errors.WaitTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, errors.AuthenticationError):
        return EXIT_AUTH
    if isinstance(exc, (errors.NotFound, errors.PermissionDenied)):
        return EXIT_NOT_FOUND
    if isinstance(exc, (errors.InvalidRequest, errors.Conflict, errors.QuotaExceeded)):
        return EXIT_REFUSED
    if isinstance(exc, (errors.ServiceUnavailable, errors.SubmitUncertain)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, errors.HeroesError) and exc.status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def guarded(func):
    """Run a command; a failure becomes one line on stderr and its exit code (no traceback for users)."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args) or EXIT_OK
        except (errors.HeroesError, UsageError) as exc:
            print(f"heroes: {exc}", file=sys.stderr)
            return exit_code(exc)
        except KeyboardInterrupt:
            print("heroes: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return EXIT_OK

    return run


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway (http://host:8000) or its API URL; default: HEROES_API_URL, "
                                      "else the one you logged in to")
    return common


def _listing(sub, name: str, help_text: str, common) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text, parents=[common], epilog=EXIT_CODES_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


class _Intermixed(argparse.ArgumentParser):
    """A parser whose options may come between ``key=value`` words (``submit t -f p.yaml points=3 --wait``);
    plain argparse stops at the first option after the positionals and calls the rest unrecognized."""

    _mixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._mixing:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def _params(parser: argparse.ArgumentParser) -> None:
    parser.__class__ = _Intermixed  # made by the caller's add_subparsers; same state, mixing parse
    parser.add_argument("template", help="template name (latest version) or a version's id")
    parser.add_argument("values", nargs="*", metavar="key=value",
                        help="parameter values (YAML scalars: 200, 0.5, true, text; s3://bucket/key for files)")
    parser.add_argument("-f", "--file", help="a YAML or JSON file of parameter values (key=value wins over it)")


def register(groups) -> None:
    """Add the user commands to the ``heroes`` command's sub-parsers (``groups`` from add_subparsers)."""
    from . import cli_commands as c

    common = _common()
    login = groups.add_parser("login", help="log in to a gateway (Keycloak) and keep the tokens (mode 0600)",
                              parents=[common], epilog=EXIT_CODES_HELP)
    login.add_argument("-u", "--username", help="your gateway user name (asked when missing)")
    login.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    login.set_defaults(func=guarded(c.login))
    logout = groups.add_parser("logout", help="end the session and delete the stored tokens", parents=[common])
    logout.set_defaults(func=guarded(c.logout))
    _listing(groups, "whoami", "the user you are logged in as", common).set_defaults(func=guarded(c.whoami))
    _listing(groups, "clusters", "your organization's clusters, partitions and prices", common).set_defaults(
        func=guarded(c.clusters))
    templates = _listing(groups, "templates", "templates you may submit; with a NAME, its parameters", common)
    templates.add_argument("name", nargs="?")
    templates.add_argument("--all-versions", action="store_true")
    templates.set_defaults(func=guarded(c.templates))

    decide = _listing(groups, "decide", "where a template would run best: time, energy, cost per cluster", common)
    _params(decide)
    decide.add_argument("--policy", choices=["performance", "energy", "cost", "balanced"])
    decide.add_argument("--deadline", type=float, metavar="SECONDS", help="must finish within this many seconds")
    decide.add_argument("--budget", type=float, help="largest acceptable cost")
    decide.add_argument("--currency", help="currency of the budget (ISO 4217, e.g. EUR)")
    decide.add_argument("--cluster", action="append", dest="clusters", help="only these clusters (repeatable)")
    decide.set_defaults(func=guarded(c.decide))

    submit = _listing(groups, "submit", "submit a template; prints the instance id", common)
    _params(submit)
    submit.add_argument("--cluster", default="auto", help="cluster name, or auto (the decision module chooses)")
    submit.add_argument("--name", help="a label for the instance")
    submit.add_argument("--accept-rightsizing", action="store_true", help="apply the decision's right-sizing")
    submit.add_argument("--cpu-freq", type=int, metavar="KHZ", help="CPU frequency for every step (kHz)")
    submit.add_argument("--wait", action="store_true", help="follow it to the end (exit 7 unless COMPLETED)")
    submit.add_argument("--timeout", type=float, metavar="SECONDS", help="with --wait: give up after (exit 8)")
    submit.set_defaults(func=guarded(c.submit))

    status = _listing(groups, "status", "your instances; with an ID, its steps and events", common)
    status.add_argument("instance", nargs="?")
    status.add_argument("--state", help="only instances in this state (RUNNING, COMPLETED, ...)")
    status.add_argument("--limit", type=int, default=50)
    status.set_defaults(func=guarded(c.status))

    logs = groups.add_parser("logs", help="a step's log (every step's when no STEP)", parents=[common],
                             epilog=EXIT_CODES_HELP)
    logs.add_argument("instance")
    logs.add_argument("step", nargs="?")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the instance ends")
    logs.add_argument("--tail", type=int, default=65536, help="bytes from the end (default 65536)")
    logs.set_defaults(func=guarded(c.logs))

    cancel = _listing(groups, "cancel", "cancel an instance (scancel every step)", common)
    cancel.add_argument("instance")
    cancel.set_defaults(func=guarded(c.cancel))

    outputs = groups.add_parser("outputs", help="an instance's outputs")
    out_sub = outputs.add_subparsers(dest="outputs_command", required=True)
    out_ls = _listing(out_sub, "ls", "list an instance's outputs", common)
    out_ls.add_argument("instance")
    out_ls.set_defaults(func=guarded(c.outputs_ls))
    out_get = out_sub.add_parser("get", help="download an output (streamed, with progress)", parents=[common],
                                 epilog=EXIT_CODES_HELP)
    out_get.add_argument("instance")
    out_get.add_argument("name", help="output key relative to the instance folder, e.g. outputs/summary.txt")
    out_get.add_argument("-o", "--output", help="local path or folder ('-': stdout); default: its file name")
    out_get.set_defaults(func=guarded(c.outputs_get))

    _register_data(groups, common, c)
    energy = _listing(groups, "energy", "energy your steps used (one instance's with an ID)", common)
    energy.add_argument("instance", nargs="?")
    energy.add_argument("--limit", type=int, default=100)
    energy.set_defaults(func=guarded(c.energy))


def _register_data(groups, common, c) -> None:
    data = groups.add_parser("data", help="your buckets: ls, put, get, rm")
    sub = data.add_subparsers(dest="data_command", required=True)
    ls = _listing(sub, "ls", "folders and objects below a prefix (your default bucket unless --bucket)", common)
    ls.add_argument("prefix", nargs="?", default="")
    ls.add_argument("--bucket")
    ls.add_argument("-r", "--recursive", action="store_true")
    ls.set_defaults(func=guarded(c.data_ls))
    buckets = _listing(sub, "buckets", "the buckets you may use", common)
    buckets.set_defaults(func=guarded(c.data_buckets))
    put = sub.add_parser("put", help="upload a file (streamed, with progress)", parents=[common],
                         epilog=EXIT_CODES_HELP)
    put.add_argument("path")
    put.add_argument("key", nargs="?", help="object key (default: the file's name)")
    put.add_argument("--bucket")
    put.add_argument("--no-overwrite", action="store_true", help="refuse (exit 5) when the key exists")
    put.set_defaults(func=guarded(c.data_put))
    get = sub.add_parser("get", help="download an object (streamed, with progress)", parents=[common],
                         epilog=EXIT_CODES_HELP)
    get.add_argument("key")
    get.add_argument("path", nargs="?", default=".", help="local path or folder ('-': stdout)")
    get.add_argument("--bucket")
    get.set_defaults(func=guarded(c.data_get))
    rm = sub.add_parser("rm", help="delete an object, or a folder (key ending with '/')", parents=[common])
    rm.add_argument("key")
    rm.add_argument("--bucket")
    rm.set_defaults(func=guarded(c.data_rm))


def build_parser() -> argparse.ArgumentParser:
    """The SDK's own ``heroes`` command (when the gateway's CLI is not installed)."""
    parser = argparse.ArgumentParser(prog="heroes", description="HEROES gateway: the command line for users",
                                     epilog=EXIT_CODES_HELP)
    register(parser.add_subparsers(dest="group", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
