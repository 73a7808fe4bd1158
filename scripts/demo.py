"""`make run`: the demo gateway. Starts the demo function service and the dev OIDC issuer on
loopback, then mitmweb with the gateway in front of the service, and prints the URLs and
ready-to-paste curl commands. The dev tokens they use are in `.toolgate/tokens.env` (0600),
for `source`. Ctrl-C stops everything.

Ports can be moved with TOOLGATE_DEMO_PROXY_PORT, _WEB_PORT, _SERVICE_PORT, _ISSUER_PORT and
_ADMIN_PORT.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

from toolgate.scripts.demo_service import DemoService
from toolgate.scripts.dev_issuer import DevIssuer
from toolgate.scripts.harness import GATEWAY_SCRIPT, MITMWEB, ROOT, start_mitmdump

STATE = Path(os.environ.get("TOOLGATE_DEMO_STATE", ROOT / ".toolgate"))
AUDIENCE = "toolgate-demo"
HOST = "127.0.0.1"
DEFAULT_ADMIN = f"http://{HOST}:8090"  # the toolgate CLI's default --admin


def port(name: str, default: int) -> int:
    return int(os.environ.get(f"TOOLGATE_DEMO_{name}_PORT", default))


def ensure_free(*ports: int) -> None:
    for number in ports:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, number)) == 0:
                sys.exit(
                    f"port {number} on {HOST} is in use (an earlier `make run`?). Stop it, or "
                    "move the demo with TOOLGATE_DEMO_<PROXY|WEB|SERVICE|ISSUER|ADMIN>_PORT."
                )


def shown(path: Path) -> str:
    """A path as the user types it in the shell `make run` was started from (the project's
    folder), absolute when it is elsewhere."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def write_tokens(issuer: DevIssuer, path: Path) -> None:
    """alice's, bob's and carol's dev tokens as `export NAME=...` lines, readable by the user
    only: the curl commands use them as $ALICE, $BOB and $CAROL."""
    keys = issuer.keys
    tokens = {
        "ALICE": keys.mint("alice", ["support"], ttl=8 * 3600),
        "BOB": keys.mint("bob", ["sre"], alg="ES256", ttl=8 * 3600),
        "CAROL": keys.mint("carol", ["sre-leads"], ttl=8 * 3600),
    }
    text = ("# toolgate demo dev tokens (8 hours; alice: support, bob: sre, carol: sre-leads)\n"
            + "".join(f"export {name}={token}\n" for name, token in tokens.items()))
    path.unlink(missing_ok=True)  # a new file gets the mode: an old one may be readable
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def banner(proxy: str, web: str, service: str, issuer: DevIssuer, admin: str,
           tokens: Path) -> str:
    mcp_call = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_customer","arguments":{"id":1}}}'
    toolgate = ".venv/bin/toolgate"
    at_admin = "" if admin == DEFAULT_ADMIN else f" --admin {admin}"
    dev_user = f"{issuer.oauth.user} ({', '.join(issuer.oauth.groups) or 'no groups'})"
    return f"""
toolgate demo is running
  gateway (reverse proxy)   {proxy}  ->  demo function service {service}
  mitmweb (watch, approve)  {web}
  admin API                 {admin}
  dev OIDC issuer           {issuer.url}
  session store             {STATE / 'demo.duckdb'}

In another shell, load the dev tokens (alice: support, bob: sre, carol: sre-leads), then
paste the commands below:

  source {shown(tokens)}

  # allowed: an MCP tool list
  curl -s {proxy}/mcp -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \\
       -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'; echo

  # masked: alice reads a customer; the SSN, card and IBAN come back partial, the email hashed
  curl -s {proxy}/customers/1 -H "Authorization: Bearer $ALICE"; echo

  # masked, over MCP
  curl -s {proxy}/mcp -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \\
       -d {shlex.quote(mcp_call)}; echo

  # blocked: a bulk export (403, with the rule and its message)
  curl -s "{proxy}/customers/export?limit=500" -H "Authorization: Bearer $ALICE"; echo

  # held for approval: bob starts a deploy; it waits (watch it in mitmweb)...
  curl -s {proxy}/deploy -H "Authorization: Bearer $BOB" -H 'Content-Type: application/json' \\
       -d '{{"service":"api","version":"2.1"}}'; echo
  # ...until carol, in sre-leads, approves it from another shell (or Resume in mitmweb)
  {toolgate} approvals list --token $CAROL{at_admin}
  {toolgate} approvals approve <ID> --reason "release 2.1" --token $CAROL{at_admin}

  # refused: no token (401, with the reason, and where to log in)
  curl -s -i {proxy}/customers/1; echo

  # an MCP client logs in by itself (OAuth): point it at {proxy}/mcp; the gateway's metadata
  # names the dev issuer, which logs everyone in as {dev_user}
  curl -s {proxy}/.well-known/oauth-protected-resource/mcp; echo

  # afterwards: the recorded calls (while the demo runs, through the admin API)
  {toolgate} sessions list --token $CAROL{at_admin}
  # ...and after Ctrl-C, from the file itself
  {toolgate} sessions list --db {shown(STATE / 'demo.duckdb')}

  # more tokens: {toolgate} dev token --sub NAME --groups a,b --keys {STATE / 'dev-issuer.json'}

Ctrl-C stops the demo.
"""


def main() -> int:
    proxy_port, web_port = port("PROXY", 8080), port("WEB", 8081)
    service_port, issuer_port = port("SERVICE", 9001), port("ISSUER", 9002)
    admin_port = port("ADMIN", 8090)
    ensure_free(proxy_port, web_port, service_port, issuer_port, admin_port)
    STATE.mkdir(exist_ok=True)

    service = DemoService(HOST, service_port).start()
    issuer = DevIssuer(HOST, issuer_port, keys_path=STATE / "dev-issuer.json",
                       audience=AUDIENCE).start()
    args = [
        "-s", str(GATEWAY_SCRIPT),
        "--mode", f"reverse:{service.url}",
        "--listen-host", HOST, "--listen-port", str(proxy_port),
        "--web-host", HOST, "--web-port", str(web_port), "--no-web-open-browser",
        "--set", f"confdir={STATE / 'mitmproxy'}",
        "--set", f"toolgate_oidc_issuer={issuer.url}",
        "--set", f"toolgate_oidc_audience={AUDIENCE}",
        # MCP clients log in by themselves: tokens for this resource are accepted too
        "--set", f"toolgate_resource=http://{HOST}:{proxy_port}/mcp",
        "--set", f"toolgate_db={STATE / 'demo.duckdb'}",
        "--set", f"toolgate_admin_listen={HOST}:{admin_port}",
    ]
    tokens = STATE / "tokens.env"
    write_tokens(issuer, tokens)
    banner_text = banner(f"http://{HOST}:{proxy_port}", f"http://{HOST}:{web_port}",
                         service.url, issuer, f"http://{HOST}:{admin_port}", tokens)
    printed = False

    def echo(line: str) -> None:
        """mitmweb's output to ours, with the banner once the proxy listens."""
        nonlocal printed
        sys.stdout.write(line)
        if not printed and "listening at" in line and "Web server" not in line:
            print(banner_text, flush=True)
            printed = True

    mitmweb = start_mitmdump(args, program=MITMWEB, wait=False, echo=echo)
    proc = mitmweb.proc
    # SIGTERM stops the demo like Ctrl-C. The main thread only sleeps: a signal that the OS
    # delivers to another thread (the demo servers') is still acted on within a moment, which
    # a main thread blocked reading mitmweb's output would not do. SIGINT is set too: Python
    # leaves it ignored when the demo was started with it ignored (a shell's background job,
    # and every process that job starts), and then Ctrl-C or `kill -INT` would not stop it.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while proc.poll() is None:
            time.sleep(0.2)
        return proc.returncode
    except KeyboardInterrupt:
        return 0
    finally:
        mitmweb.stop()
        sys.stdout.flush()
        service.stop()
        issuer.stop()


if __name__ == "__main__":
    sys.exit(main())
