"""``omero-flight user ...`` and ``omero-flight group ...``: the embedded store's accounts."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the store loads when a command runs: it needs the server extra
    from flight_server.backends.local import LocalStore

#: Group permission levels (flight_server.backends.local.catalog.PERMISSIONS, kept here so
#: that building the parser does not load the store).
PERMISSIONS = ("private", "read-only", "read-annotate", "read-write")

USER_EXAMPLES = """\
examples:
  omero-flight user add alice --group lab          asks for alice's password twice
  echo "$PW" | omero-flight user add bob --group lab --group imaging --password-stdin
  omero-flight user add admin2 --admin             another administrator
  omero-flight user passwd alice                   set a new password
  omero-flight user list
  omero-flight user remove bob                     only a user who owns no files

The last administrator cannot be removed. --store (or $OMERO_FLIGHT_HOME) names the
store folder; these commands need the server extra: pip install 'omero-flight[server]'.
"""

GROUP_EXAMPLES = """\
examples:
  omero-flight group add lab                       read-only: members read each other's tables
  omero-flight group add secret --permissions private
  omero-flight group list                          groups and their members

These commands need the server extra: pip install 'omero-flight[server]'.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    store_help = "store folder (default $OMERO_FLIGHT_HOME or ~/.local/share/omero-flight)"
    raw = argparse.RawDescriptionHelpFormatter

    user = subparsers.add_parser("user", help="manage users of the embedded store",
                                 description="Add, list and remove users of the embedded "
                                             "store, and set their passwords.",
                                 epilog=USER_EXAMPLES, formatter_class=raw)
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_sub.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--group", action="append", default=[], dest="groups",
                     help="group to join (repeat; the first is the default group)")
    add.add_argument("--admin", action="store_true", help="make the user an administrator")
    passwd = user_sub.add_parser("passwd", help="set a user's password")
    passwd.add_argument("username")
    for p in (add, passwd):
        p.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")
    remove = user_sub.add_parser("remove", help="remove a user who owns no files")
    remove.add_argument("username")
    listing = user_sub.add_parser("list", help="list users")

    group = subparsers.add_parser("group", help="manage groups of the embedded store",
                                  description="Add and list groups of the embedded store.",
                                  epilog=GROUP_EXAMPLES, formatter_class=raw)
    group_sub = group.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    gadd = group_sub.add_parser("add", help="create a group")
    gadd.add_argument("name")
    gadd.add_argument("--permissions", choices=PERMISSIONS, default="read-only")
    glist = group_sub.add_parser("list", help="list groups and their members")

    for p in (add, passwd, remove, listing, gadd, glist):
        p.add_argument("--store", help=store_help)
        p.add_argument("--config", help="TOML config file")
    add.set_defaults(func=_user_add)
    passwd.set_defaults(func=_user_passwd)
    remove.set_defaults(func=_user_remove)
    listing.set_defaults(func=_user_list)
    gadd.set_defaults(func=_group_add)
    glist.set_defaults(func=_group_list)


def _cli_error(message: str) -> Exception:
    from flight_server.cli import CliError

    return CliError(message)


def _store(args: argparse.Namespace) -> LocalStore:
    from flight_server.backends.local import LocalStore
    from flight_server.config import ConfigError, load_settings

    try:
        return LocalStore(load_settings({"store": args.store}, args.config).store)
    except ConfigError as exc:
        raise _cli_error(str(exc)) from None


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin is None or not sys.stdin.isatty():
        raise _cli_error(f"no terminal to ask for {args.username}'s password: run this on a "
                         "terminal, or pipe it in with --password-stdin")
    else:
        try:
            password = getpass.getpass(f"Password for {args.username}: ")
            again = getpass.getpass("Again: ")
        except EOFError:
            raise _cli_error("no password given (end of input)") from None
        if again != password:
            raise _cli_error("the passwords differ")
    if not password:
        raise _cli_error("the password is empty")
    return password


def _run(func, *args):  # noqa: ANN001, ANN202 - small adapter
    from flight_server.errors import BridgeError

    try:
        return func(*args)
    except BridgeError as exc:
        raise _cli_error(str(exc)) from None


def _user_add(args: argparse.Namespace) -> int:
    store = _store(args)
    info = _run(store.add_user, args.username, _password(args), args.groups, args.admin)
    print(f"created user {info.username} (default group {info.default_group})")
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    store = _store(args)
    _run(store.set_password, args.username, _password(args))
    print(f"password of {args.username} changed")
    return 0


def _user_remove(args: argparse.Namespace) -> int:
    _run(_store(args).remove_user, args.username)
    print(f"removed user {args.username}")
    return 0


def _user_list(args: argparse.Namespace) -> int:
    for u in _store(args).list_users():
        admin = " (admin)" if u.admin else ""
        print(f"{u.username}{admin}\tgroups: {', '.join(u.groups)}\tdefault: {u.default_group}")
    return 0


def _group_add(args: argparse.Namespace) -> int:
    _run(_store(args).add_group, args.name, args.permissions)
    print(f"created group {args.name} ({args.permissions})")
    return 0


def _group_list(args: argparse.Namespace) -> int:
    for g in _store(args).list_groups():
        print(f"{g.name}\t{g.permissions}\tmembers: {', '.join(g.members)}")
    return 0
