"""``systemctl`` inside a local instance: hands its arguments to the instance's init and prints the answer.

The runner puts a ``systemctl`` shim in the instance's PATH that runs this file
(``python -S``, standard library only, ~20 ms). The init (``infra.local.init``)
listens on the abstract unix socket named by ``IMGREC_INIT_SOCKET``; ``stop`` and
``restart`` return once the unit has stopped, as systemd's do.
"""

from __future__ import annotations

import json
import os
import socket
import sys

EXIT_NO_INIT = 1
QUERIES = frozenset({"is-active", "is-failed", "is-enabled", "status"})


def main(argv: list[str]) -> int:
    name = os.environ.get("IMGREC_INIT_SOCKET", "")
    if not name:
        print("systemctl: not inside a local instance (IMGREC_INIT_SOCKET unset)", file=sys.stderr)
        return EXIT_NO_INIT
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect("\0" + name)
        except OSError as err:
            print(f"systemctl: the instance's init does not answer ({err})", file=sys.stderr)
            return EXIT_NO_INIT
        sock.sendall(json.dumps({"args": argv}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data or b"{}")
    except ValueError:
        reply = {}
    if "code" not in reply:
        print("systemctl: the instance's init hung up without an answer", file=sys.stderr)
        return EXIT_NO_INIT
    if reply.get("out"):
        # A query's answer is stdout whatever its exit status, as systemd's ("inactive" with exit 3).
        query = next((a for a in argv if not a.startswith("-")), "") in QUERIES
        print(reply["out"], file=sys.stdout if query or not reply["code"] else sys.stderr)
    return int(reply["code"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
