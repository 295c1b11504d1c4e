"""Asking a person for the connection details that are still missing.

On a terminal only what is missing is asked for (the password without echo);
in a Jupyter kernel with ipywidgets, a login form is shown instead. Nothing
here connects: the caller does, with the details it gets back.
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from flight_client import errors
from flight_client.details import Details, parse_server

LOGGER = logging.getLogger(__name__)


def in_jupyter() -> bool:
    """True in a Jupyter kernel that can draw a login form (ipywidgets installed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if type(get_ipython()).__name__ != "ZMQInteractiveShell":
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        LOGGER.warning("in Jupyter without ipywidgets: install omero-flight[jupyter] "
                       "for a login form; prompting on the console instead")
        return False
    return True


def prompt_terminal(details: Details) -> Details:
    """Ask on the terminal for what is missing, and only that."""
    host, port, tls = details.host, details.port, details.tls
    if not host:
        print("Connect to an omero-flight bridge", file=sys.stderr)
        server = input("Bridge address (host, host:port or grpc[+tls]://host:port): ").strip()
        if server:
            host, url_port, url_tls = parse_server(server)
            port, tls = url_port or port, tls if url_tls is None else url_tls
    where = replace(details, host=host, port=port, tls=tls).url if host else "the bridge"
    username = details.username or input(f"Username for {where}: ").strip() or None
    password = details.password
    if password is None and username:
        password = getpass.getpass(f"Password for {username} at {where}: ")
    return replace(details, host=host, port=port, tls=tls, username=username, password=password)


def login_form(details: Details, submit: Callable[[Details], str]) -> None:
    """Show an ipywidgets login form; ``submit(details)`` connects and returns the URL."""
    from IPython.display import display
    from ipywidgets import widgets

    server = widgets.Text(value=details.url if details.host else "", description="Bridge:")
    user = widgets.Text(value=details.username or "", description="Username:")
    password = widgets.Password(value=details.password or "", description="Password:")
    button = widgets.Button(description="Connect")
    output = widgets.Output()
    box = widgets.VBox([widgets.Label("Connect to an omero-flight bridge"),
                        server, user, password, button])

    def on_click(_: Any) -> None:
        with output:
            try:
                host, port, tls = parse_server(server.value)
                url = submit(replace(details, host=host, port=port or details.port,
                                     tls=details.tls if tls is None else tls,
                                     username=user.value or None,
                                     password=password.value or None))
            except errors.OmeroFlightError as exc:
                print(f"Could not connect: {exc}")
            else:
                print(f"Connected to {url}")
                box.close()

    button.on_click(on_click)
    display(box, output)
