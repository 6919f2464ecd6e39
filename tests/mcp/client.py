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
  {"op": "log_level", "level": L}   (logging/setLevel; a call's output then has the "logs" it
      heard, and a call with "progress": true the "progress" notifications)
  {"op": "inbox", "url": ORIGIN, "key": PATH}  (signs in to the approval inbox in a headless
      Chromium with that key file and prints what it shows: the sign-in error, or the cards)
Prints one JSON line per step.

"oauth": {"client_id": AGENT, "key": PATH, "issuer": URL} in an http plan authenticates as the
SDK's PrivateKeyJWTOAuthProvider does (no Warden code: discovery from the 401, an EdDSA client
assertion signed with the agent's key, a client_credentials token), instead of "token".

"elicit": {"key": PATH, "decision": "approve"|"deny", "screenshot": PATH} in the plan declares
URL-mode elicitation: the server's link is opened in the browser, the key loaded, the card of
the approval decided, then the elicitation accepted; the handler's findings are printed as a
line {"elicited": ...} before the call's own.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time


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


BROWSER = None


def browser():
    """One headless Chromium for the whole plan (Debian's, driven by its chromedriver)."""
    global BROWSER
    if BROWSER is None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in [
            "--headless=new",
            "--no-sandbox",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--window-size=1100,900",
        ]:
            options.add_argument(arg)
        service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
        BROWSER = webdriver.Chrome(service=service, options=options)
    return BROWSER


def until(condition, what, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(what)


def sign_in(url, key):
    """Opens `url` and loads `key`; returns the sign-in error, or None once signed in."""
    from selenium.webdriver.common.by import By

    driver = browser()
    driver.get(url)
    driver.find_element(By.ID, "key-file").send_keys(os.path.abspath(key))

    def outcome():
        error = driver.find_element(By.ID, "sign-in-error").text
        if error:
            return ("error", error)
        if driver.find_element(By.ID, "inbox").is_displayed():
            return ("in", None)
        return None

    return until(outcome, "the sign-in never ended")[1]


def cards():
    """What the inbox shows, read in one script (the page re-renders as it refreshes)."""
    return browser().execute_script(
        """
        return [...document.querySelectorAll('.approval')].map((card) => {
          const approve = card.querySelector('button.approve');
          return {
            id: card.dataset.approval,
            text: card.innerText,
            input: card.querySelector('pre.input').textContent,
            status: card.querySelector('dd.status').textContent,
            verifiable: !card.querySelector('.unverifiable'),
            approve_enabled: !!approve && !approve.disabled,
            focused: card.classList.contains('focused'),
          };
        });
        """
    )


def click(selector):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        browser().find_element(By.CSS_SELECTOR, selector).click()
        return True
    except StaleElementReferenceException:
        return False


def decide_in_inbox(url, plan):
    """The elicitation's link, opened as an approver would: sign in, read, decide."""
    from selenium.webdriver.common.by import By

    driver = browser()
    approval = url.split("#approval=", 1)[1]
    error = sign_in(url, plan["key"])
    if error:
        return {"sign_in_error": error}
    selector = f'.approval[data-approval="{approval}"]'
    until(lambda: driver.find_elements(By.CSS_SELECTOR, selector), "the approval never showed")
    seen = next(c for c in cards() if c["id"] == approval)
    if plan.get("screenshot"):
        driver.save_screenshot(plan["screenshot"])
    # A decision takes two clicks on the same button.
    button = selector + " button." + plan["decision"]
    until(lambda: click(button), "the button never took the click")
    until(lambda: driver.find_elements(By.CSS_SELECTOR, button + ".armed"), "the button never armed")
    until(lambda: click(button), "the button never took the second click")
    until(
        lambda: any(c["id"] == approval and not c["status"].startswith("pending") for c in cards()),
        "the decision never showed",
    )
    seen["after"] = next(c for c in cards() if c["id"] == approval)["status"]
    seen["notice"] = driver.find_element(By.ID, "notice").text
    return seen


def elicitation_handler(plan, elicited):
    async def handle(context, params):
        if not isinstance(params, mcp_types.ElicitRequestURLParams):
            return mcp_types.ErrorData(code=mcp_types.INVALID_REQUEST, message="URL mode only")
        seen = await asyncio.to_thread(decide_in_inbox, params.url, plan)
        elicited.append({"url": params.url, "message": params.message, "seen": seen})
        return mcp_types.ElicitResult(action="accept")

    return handle


LOGS = []


async def on_log(params):
    LOGS.append({"level": params.level, "logger": params.logger, "data": params.data})


async def run_steps(session, steps, stateless=False, elicited=None):
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
    logging = False
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
            progress = []

            async def on_progress(done, total, message):
                progress.append({"progress": done, "message": message})

            try:
                result = await session.call_tool(
                    step["tool"],
                    step.get("arguments", {}),
                    progress_callback=on_progress if step.get("progress") else None,
                    meta=substitute(step.get("meta"), approval, warden_session),
                )
                if logging:
                    # Notifications are handled apart from the response: wait until they stop.
                    heard = -1
                    for _ in range(30):
                        if len(LOGS) == heard:
                            break
                        heard = len(LOGS)
                        await asyncio.sleep(0.3)
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
                    "logs": list(LOGS),
                    "progress": progress,
                }
                LOGS.clear()
            except Exception as e:  # a JSON-RPC error
                out = {"rpc_error": str(e)}
            while elicited:
                print(json.dumps({"elicited": elicited.pop(0)}), flush=True)
        elif step["op"] == "wait":
            for _ in range(1200):
                if os.path.exists(step["file"]):
                    break
                await asyncio.sleep(0.1)
            out = {"waited": os.path.exists(step["file"])}
        elif step["op"] == "log_level":
            await session.set_logging_level(step["level"])
            logging = True
            # Notifications of earlier calls still being handled are not this level's.
            await asyncio.sleep(0.5)
            LOGS.clear()
            out = {"level": step["level"]}
        elif step["op"] == "inbox":
            error = await asyncio.to_thread(sign_in, step["url"] + "/", step["key"])
            if not error:
                await asyncio.sleep(0.5)
            out = {"sign_in_error": error, "cards": [] if error else await asyncio.to_thread(cards)}
        elif step["op"] == "run":
            done = subprocess.run(substitute(step["command"], approval), capture_output=True, text=True)
            out = {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        else:
            raise ValueError(step["op"])
        print(json.dumps(out), flush=True)


class MemoryStorage:
    """Where the SDK keeps its token for the plan's length."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


def oauth_provider(url, oauth):
    from mcp.client.auth.extensions.client_credentials import (
        PrivateKeyJWTOAuthProvider,
        SignedJWTParameters,
    )

    with open(oauth["key"]) as f:
        key = f.read()
    signer = SignedJWTParameters(
        issuer=oauth["client_id"],
        subject=oauth["client_id"],
        signing_key=key,
        signing_algorithm="EdDSA",
        lifetime_seconds=60,
    )
    return PrivateKeyJWTOAuthProvider(
        server_url=url,
        storage=MemoryStorage(),
        client_id=oauth["client_id"],
        assertion_provider=signer.create_assertion_provider(),
        issuer=oauth["issuer"],
    )


async def main(plan):
    if plan["transport"] == "stdio":
        command = plan["command"]
        params = StdioServerParameters(command=command[0], args=command[1:], env=plan.get("env"))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                await run_steps(session, plan["steps"])
    else:
        headers = dict(plan.get("headers", {}))
        auth = None
        if plan.get("oauth"):
            auth = oauth_provider(plan["url"], plan["oauth"])
        else:
            headers["authorization"] = "Bearer " + plan["token"]
        elicited = []
        callbacks = {"logging_callback": on_log}
        if plan.get("elicit"):
            callbacks["elicitation_callback"] = elicitation_handler(plan["elicit"], elicited)
        async with httpx2.AsyncClient(headers=headers, timeout=60, auth=auth) as client:
            async with streamable_http_client(plan["url"], http_client=client) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write, **callbacks) as session:
                    await run_steps(session, plan["steps"], plan.get("stateless", False), elicited)


if __name__ == "__main__":
    try:
        asyncio.run(main(json.loads(sys.argv[1])))
    finally:
        if BROWSER is not None:
            BROWSER.quit()
