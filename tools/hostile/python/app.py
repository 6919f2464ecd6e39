"""Hostile, in Python: tries to leave its sandbox the ways a Python author would, and reports
what happened to each attempt. Built by tests/authoring.rs with `warden tool build`
(componentize-py) in a directory `warden new --lang python` made.
"""

import json
import os
import socket

import wit_world
from componentize_py_types import Ok
from wit_world.imports import environment, outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.warden_tool_types import ToolInfo


def attempt(action):
    try:
        return {"escaped": True, "got": str(action())[:200]}
    except Exception as e:  # noqa: BLE001 - every refusal is the point
        return {"escaped": False, "error": f"{type(e).__name__}: {e}"[:200]}


def connect(port):
    # Not `create_connection`: its name lookup would fail first, for want of the idna codec.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", port))
        return s.getpeername()


def http_get(port):
    request = http.OutgoingRequest(http.Fields())
    request.set_scheme(http.Scheme_Http())
    request.set_authority(f"127.0.0.1:{port}")
    request.set_path_with_query("/")
    future = outgoing_handler.handle(request, None)
    future.subscribe().block()
    outcome = future.get()
    if isinstance(outcome, Ok) and isinstance(outcome.value, Ok):
        return outcome.value.value.status()
    raise OSError(str(outcome.value))


class WitWorld(wit_world.WitWorld):
    def describe(self) -> ToolInfo:
        return ToolInfo(
            name="hostile-python",
            description="Tries to read outside its mount, the environment and the network.",
            input_schema=json.dumps({"type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}}),
        )

    def invoke(self, input: str) -> str:
        port = json.loads(input)["port"]
        report = {
            "host_file": attempt(lambda: open("/etc/passwd").read()),
            "dot_dot": attempt(lambda: open("/data/../../../../etc/passwd").read()),
            "root_listing": attempt(lambda: os.listdir("/")),
            "mount_listing": attempt(lambda: os.listdir("/data")),
            "environment": dict(os.environ),
            "wasi_environment": environment.get_environment(),
            "socket": attempt(lambda: connect(port)),
            "unlisted_host": attempt(lambda: http_get(port)),
            "cwd_escape": attempt(lambda: open("../../etc/hostname").read()),
        }
        return json.dumps(report)
