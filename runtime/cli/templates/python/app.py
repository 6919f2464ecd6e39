"""{{name}}: a Warden tool. `warden tool build .` builds it (see README.md)."""

import json
from urllib.parse import urlsplit

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import context, outgoing_handler
from wit_world.imports import wasi_http_types as http
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.warden_tool_types import ToolError_Failed, ToolError_InvalidInput, ToolInfo

# The input's JSON Schema: Warden checks every input against it before `invoke` runs.
INPUT_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        # A file to read under the mount /data (uncomment [[fs]] in tool.toml).
        "file": {"type": "string"},
        # A URL to GET (uncomment [[egress]] in tool.toml for its host).
        "url": {"type": "string"},
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
        if "url" in args:
            status, body = http_get(args["url"])
            output["status"] = status
            output["body"] = body.decode("utf-8", "replace")
        return json.dumps(output)


def http_get(url: str) -> tuple[int, bytes]:
    """GET `url` through the host, which decides it by the `[[egress]]` rules in tool.toml
    and adds any credential; a request no rule allows fails with `HttpRequestDenied`."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise Err(ToolError_InvalidInput(f"{url!r} is not an http(s) URL"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = http.OutgoingRequest(http.Fields())
    try:
        request.set_scheme(http.Scheme_Https() if scheme == "https" else http.Scheme_Http())
        request.set_authority(parts.netloc)
        request.set_path_with_query(path)
    except Err:
        raise Err(ToolError_InvalidInput(f"{url!r} is not a URL the host can send"))
    try:
        future = outgoing_handler.handle(request, None)
    except Err as e:
        raise Err(ToolError_Failed(f"GET {url}: {e.value}"))
    with future:
        with future.subscribe() as ready:
            ready.block()
        outcome = future.get()  # Ok(Ok(response)), Ok(Err(error-code)) or Err(()).
    if not (isinstance(outcome, Ok) and isinstance(outcome.value, Ok)):
        raise Err(ToolError_Failed(f"GET {url}: {outcome.value}"))
    with outcome.value.value as response:
        status = response.status()
        with response.consume() as body, body.stream() as stream:
            chunks = []
            while True:
                try:
                    chunks.append(stream.blocking_read(65536))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise Err(ToolError_Failed(f"GET {url}: {e.value}"))
    return status, b"".join(chunks)
