"""A stand-in for the gateway's admin API (built elsewhere): holds the store with a Writer and
serves the session routes by running `sessions.api.handle` on the writer's connection, as the
real admin server does through `Recorder.query`. Run as a process: it prints its port."""

from __future__ import annotations

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from toolgate.sessions import api
from toolgate.sessions.writer import Writer

TOKEN = "admin-test-token"


def main(db: str) -> None:
    writer = Writer(db).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, {"error": {"code": "identity", "message": "no token"}})
            url = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(url.query))
            path = urllib.parse.unquote(url.path)
            status, body = writer.run_query(
                lambda con: api.handle(con, path, params, writer.head_file)).result(30)
            self._send(status, body)

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    writer.run_query(lambda con: None).result(30)  # the store is open (and locked)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    finally:
        writer.stop()


if __name__ == "__main__":
    main(sys.argv[1])
