"""A real MCP client (the official Python SDK) driven by tests/mcp.rs.

    python client.py PLAN_JSON

PLAN: {"transport": "stdio", "command": [...]} or {"transport": "http", "url": ..., "token": ...,
"headers": {...}, "stateless": true (MCP 2026-07-28: no initialize, no MCP session)}, and "steps":
a list of
  {"op": "list"}
  {"op": "call", "tool": T, "arguments": {...}, "meta": {...}}  ("{approval}" in meta values is
      replaced by the approval id of the last call that asked for one, "{session}" by the
      Warden session the last call that named one ran in)
  {"op": "run", "command": [...]}                               (same replacement)
  {"op": "wait", "file": PATH}      (until the test makes PATH: lets a test act between steps)
Prints one JSON line per step.
"""

import asyncio
import json
import os
import subprocess
import sys

import httpx2
import mcp_types
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client


def substitute(value, approval, session=None):
    if isinstance(value, str):
        return value.replace("{approval}", approval or "").replace("{session}", session or "")
    if isinstance(value, list):
        return [substitute(v, approval, session) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, approval, session) for k, v in value.items()}
    return value


async def run_steps(session, steps, stateless=False):
    if stateless:
        session.adopt(
            mcp_types.DiscoverResult(
                supported_versions=["2026-07-28"],
                capabilities=mcp_types.ServerCapabilities(),
                result_type="complete",
                ttl_ms=0,
                cache_scope="public",
            )
        )
    else:
        await session.initialize()
    approval = None
    warden_session = None
    for step in steps:
        if step["op"] == "list":
            listed = await session.list_tools()
            out = {
                "tools": [
                    {
                        "name": t.name,
                        "description": t.description,
                        "input_schema": t.input_schema,
                        "read_only": t.annotations.read_only_hint if t.annotations else None,
                        "destructive": t.annotations.destructive_hint if t.annotations else None,
                    }
                    for t in listed.tools
                ]
            }
        elif step["op"] == "call":
            try:
                result = await session.call_tool(
                    step["tool"],
                    step.get("arguments", {}),
                    meta=substitute(step.get("meta"), approval, warden_session),
                )
                text = "".join(getattr(c, "text", "") for c in result.content)
                structured = result.structured_content
                if isinstance(structured, dict) and structured.get("approval"):
                    approval = structured["approval"]
                meta = getattr(result, "meta", None) or {}
                if meta.get("warden/session"):
                    warden_session = meta["warden/session"]
                out = {
                    "is_error": bool(result.is_error),
                    "text": text,
                    "structured": structured,
                    "session": meta.get("warden/session"),
                    "call": meta.get("warden/call"),
                }
            except Exception as e:  # a JSON-RPC error
                out = {"rpc_error": str(e)}
        elif step["op"] == "wait":
            for _ in range(1200):
                if os.path.exists(step["file"]):
                    break
                await asyncio.sleep(0.1)
            out = {"waited": os.path.exists(step["file"])}
        elif step["op"] == "run":
            done = subprocess.run(substitute(step["command"], approval), capture_output=True, text=True)
            out = {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        else:
            raise ValueError(step["op"])
        print(json.dumps(out), flush=True)


async def main(plan):
    if plan["transport"] == "stdio":
        command = plan["command"]
        params = StdioServerParameters(command=command[0], args=command[1:], env=plan.get("env"))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await run_steps(session, plan["steps"])
    else:
        headers = dict(plan.get("headers", {}))
        headers["authorization"] = "Bearer " + plan["token"]
        async with httpx2.AsyncClient(headers=headers, timeout=60) as client:
            async with streamable_http_client(plan["url"], http_client=client) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    await run_steps(session, plan["steps"], plan.get("stateless", False))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
