"""``omero-flight`` server commands and parsing, as users meet them: no traceback, one line.

Every case runs as a subprocess with no terminal; where a prompt or Ctrl-C matters,
on a pseudo-terminal as well.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from flight_server.backends.local import LocalStore
from flight_server.backends.local.catalog import PERMISSIONS
from flight_server.cli import users
from tests.flight_server.cli.terminal import (
    CLI,
    CTRL_C,
    CTRL_D,
    cli_env,
    run_cli,
    run_on_terminal,
)


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    s = LocalStore(path)
    s.add_group("lab", "read-only")
    s.add_user("root", "root-pw", admin=True)
    s.close()
    return str(path)


def test_version():
    done = run_cli(["--version"])
    assert done.status == 0 and re.fullmatch(r"omero-flight \S+\n", done.out), done


@pytest.mark.parametrize("command", [["user"], ["group"]])
def test_user_and_group_help_have_examples(command):
    done = run_cli([*command, "--help"])
    assert done.status == 0 and "examples:" in done.out and "omero-flight" in done.out


def test_permissions_listed_without_the_store_match_the_store():
    assert users.PERMISSIONS == PERMISSIONS


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_subcommand(store, where):
    args = ["user", "list", "--store", store]
    done = run_cli(["-v", *args] if where == "before" else [*args, "-v"])
    assert done.status == 0 and "root (admin)" in done.out, done


def test_usage_error_is_one_line():
    run_cli(["ls", "--port", "eighty"]).assert_user_error("--port")
    run_cli(["nonsense"]).assert_user_error("invalid choice")


def test_user_add_without_a_terminal(store):
    run_cli(["user", "add", "alice", "--group", "lab", "--store", store]).assert_user_error(
        "--password-stdin")
    run_cli(["user", "add", "alice", "--group", "lab", "--store", store, "--password-stdin"],
            stdin="").assert_user_error("password is empty")


def test_user_add_on_a_terminal(store):
    args = ["user", "add", "alice", "--group", "lab", "--store", store]
    done = run_on_terminal(args, answers=[("Password for alice", b"pw-1\n"),
                                          ("Again", b"pw-1\n")])
    assert done.status == 0 and "created user alice" in done.out, done
    ended = run_on_terminal(["user", "add", "bob", "--group", "lab", "--store", store],
                            answers=[("Password for bob", CTRL_D)])
    ended.assert_user_error("no password")
    stopped = run_on_terminal(["user", "add", "carl", "--group", "lab", "--store", store],
                              answers=[("Password for carl", CTRL_C)])
    assert stopped.status == 130 and stopped.error_lines == ["omero-flight: interrupted"]
    stopped.assert_no_traceback()


def test_last_admin_cannot_be_removed(store):
    run_cli(["user", "remove", "root", "--store", store]).assert_user_error(
        "last administrator")
    assert run_cli(["user", "add", "root2", "--admin", "--password-stdin", "--store", store],
                   stdin="pw\n").status == 0
    assert run_cli(["user", "remove", "root", "--store", store]).status == 0
    run_cli(["user", "remove", "root2", "--store", store]).assert_user_error(
        "last administrator")
    assert "root2 (admin)" in run_cli(["user", "list", "--store", store]).out


@pytest.mark.parametrize("run", [run_cli, run_on_terminal], ids=["no-terminal", "terminal"])
def test_serve_bad_log_level(tmp_path, run):
    run(["serve", "--store", str(tmp_path / "s"), "--log-level", "LOUD"]).assert_user_error(
        "LOUD")
    done = run_cli(["serve", "--store", str(tmp_path / "s"), "--port", "0"],
                   env={"OMERO_FLIGHT_LOG_LEVEL": "LOUD"})
    done.assert_user_error("log_level", "LOUD")


@pytest.mark.parametrize("run", [run_cli, run_on_terminal], ids=["no-terminal", "terminal"])
def test_serve_on_a_port_in_use(tmp_path, run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        store = tmp_path / "s"
        done = run(["serve", "--store", str(store), "--port", str(port)])
    done.assert_user_error("in use", str(port))
    assert "password" not in done.out + done.err
    assert not (store / "root-password").exists()


@pytest.mark.parametrize("delay", [0.5, 0.8, 1.2])
def test_ctrl_c_during_start_up(tmp_path, delay):
    """Ctrl-C while the bridge starts (imports, store, server): it ends without a traceback
    (130, or 0 once up). Not covered: a press within the interpreter's own start-up and the
    import of flight_server.cli (~0.1 s), before ``main`` can hold the signal."""
    proc = subprocess.Popen([*CLI, "serve", "--store", str(tmp_path / "s"), "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), (proc.returncode, out, err)
    if proc.returncode == 130:  # its last word (after the service's own log lines, if any)
        assert err.strip().splitlines()[-1] == "omero-flight: interrupted", err
    assert "Traceback" not in out + err


def test_ctrl_c_on_a_terminal_while_serving(tmp_path):
    done = run_on_terminal(["serve", "--store", str(tmp_path / "s"), "--port", "0"],
                           answers=[("omero-flight serving", CTRL_C)])
    assert done.status == 0 and "stopping" in done.out, done
    done.assert_no_traceback()


def test_server_log_has_timestamps_and_failed_sign_ins(tmp_path):
    import pyarrow.flight as flight

    proc = subprocess.Popen([*CLI, "serve", "--store", str(tmp_path / "s"), "--port", "0"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        url = re.search(r"on (grpc://\S+)", line).group(1)
        client = flight.FlightClient(url)
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token("root", "not-the-password")
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    failed = [x for x in err.splitlines() if "failed sign-in for user 'root'" in x]
    assert failed, err
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING ", failed[0]), failed[0]
    assert "Traceback" not in out + err


BLOCK_SERVER_EXTRAS = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tables', 'h5py', 'omero', 'Ice'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
    "from flight_server.cli import main\n"
    "sys.exit(main())\n"
)


@pytest.mark.parametrize("args", [["--help"], ["ls", "--help"], ["info", "--help"],
                                  ["download", "--help"], ["upload", "--help"]])
def test_client_commands_parse_without_the_server_extra(args):
    done = run_cli(args, command=[sys.executable, "-c", BLOCK_SERVER_EXTRAS])
    assert done.status == 0 and "usage: omero-flight" in done.out, done


@pytest.mark.parametrize("args", [["serve", "--port", "0", "--store", "{tmp}/s"],
                                  ["user", "list", "--store", "{tmp}/s"],
                                  ["group", "list", "--store", "{tmp}/s"],
                                  ["demo", "--rows", "10"]])
def test_server_commands_name_the_extra(args, tmp_path):
    args = [a.format(tmp=tmp_path) for a in args]
    done = run_cli(args, command=[sys.executable, "-c", BLOCK_SERVER_EXTRAS])
    done.assert_user_error("pip install 'omero-flight[server]'")
