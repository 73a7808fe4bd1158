"""A stand-in for the gateway's admin API (built elsewhere): holds the store with a Writer and
serves the session routes by running `sessions.api.handle` on the writer's connection, as the
real admin server does through `Recorder.query`. Run as a process: it prints its port."""

from __future__ import annotations

import sys
import urllib.parse

from toolgate.scripts.harness import StubHandler, StubServer
from toolgate.sessions import api
from toolgate.sessions.writer import Writer

TOKEN = "admin-test-token"


def main(db: str) -> None:
    writer = Writer(db).start()

    class Handler(StubHandler):
        def do_GET(self):  # noqa: N802
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.send_json({"error": {"code": "identity", "message": "no token"}}, 401)
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            path = urllib.parse.unquote(url.path)
            status, body = writer.run_query(
                lambda con: api.handle(con, path, params, writer.head_file)).result(30)
            self.send_json(body, status)

    server = StubServer(Handler)
    writer.run_query(lambda con: None).result(30)  # the store is open (and locked)
    print(server.server_port, flush=True)
    try:
        server.serve_forever()
    finally:
        writer.stop()


if __name__ == "__main__":
    main(sys.argv[1])
