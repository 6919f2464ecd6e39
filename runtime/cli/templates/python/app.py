"""{{name}}: a Warden tool. `warden tool build .` builds it (see README.md)."""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import context
from wit_world.imports.types import ToolError_Failed, ToolError_InvalidInput, ToolInfo

# The input's JSON Schema: Warden checks every input against it before `invoke` runs.
INPUT_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        # A file to read under the mount /data (uncomment [[fs]] in tool.toml).
        "file": {"type": "string"},
    },
}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> ToolInfo:
        return ToolInfo(
            name="{{name}}",
            description="Greets someone by name.",
            input_schema=json.dumps(INPUT_SCHEMA),
        )

    def invoke(self, input: str) -> str:
        args = json.loads(input)
        if not args["name"].strip():
            # What the caller did wrong: `Err(ToolError_InvalidInput(...))`; what went
            # wrong here: `Err(ToolError_Failed(...))`.
            raise Err(ToolError_InvalidInput("name is blank"))
        output = {"greeting": f"Hello, {args['name']}!", "call": context.current().call_id}
        if "file" in args:
            try:
                with open(f"/data/{args['file']}") as f:
                    output["file"] = f.read()
            except OSError as e:
                raise Err(ToolError_Failed(f"reading /data/{args['file']}: {e}"))
        # HTTP requests need `wasi:http` in the world this tool targets (wit/world.wit); the
        # Rust template shows one, Python's is not vendored yet.
        return json.dumps(output)
