"""Held-call flows for the approvals addon's tests under mitmproxy's test context (the
single gateway's, `return` holds' and a fleet's): a flow policy marked `approve`, and waiting
for the addon to hold it."""

import asyncio
import json
import uuid

from mitmproxy.test import tflow, tutils


def approval_flow(subject="bob", body=b'{"service": "api"}', path="/deploy", timeout=None,
                  approvers=("sre-leads",), rule="deploys-need-approval", mcp=False):
    if mcp:
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": "deploy", "arguments": {"service": "api"}}}).encode()
        path = "/mcp"
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=path.encode(), content=body))
    flow.client_conn.timestamp_end = None  # a live client
    flow.metadata["toolgate.call_id"] = uuid.uuid4().hex
    flow.metadata["toolgate.identity"] = {"subject": subject, "issuer": "i", "groups": ["sre"],
                                          "token_id": None, "anonymous": subject is None}
    flow.metadata["toolgate.approval"] = {
        "rule": rule, "function": "deploy.start", "approvers": list(approvers),
        "timeout": timeout, "message": "deploys need an approval", "field": "$",
    }
    return flow


async def until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if value := predicate():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


async def hold(approvals, flow):
    task = asyncio.create_task(approvals.request(flow))
    held = await until(lambda: next((h for h in approvals.held.pending()
                                     if h.call_id == flow.metadata["toolgate.call_id"]), None))
    return task, held


def error_of(flow):
    return json.loads(flow.response.content)["error"]
