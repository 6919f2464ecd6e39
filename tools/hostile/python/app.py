"""Hostile, in Python: tries to leave its sandbox the ways a Python author would, and reports
what happened to each attempt. Built by the tests with `warden tool build` (componentize-py).
"""

import json
import os
import socket

import wit_world
from wit_world.imports.types import ToolInfo


def attempt(action):
    try:
        return {"escaped": True, "got": str(action())[:200]}
    except Exception as e:  # noqa: BLE001 - every refusal is the point
        return {"escaped": False, "error": f"{type(e).__name__}: {e}"[:200]}


def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        return s.getpeername()


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
            "socket": attempt(lambda: connect(port)),
            "cwd_escape": attempt(lambda: open("../../etc/hostname").read()),
        }
        return json.dumps(report)
