"""The canary demo's moving parts that are not Switchyard: two tiny HTTP backends that answer
with their version, and a client that sends a steady trickle of requests through the Envoy
sidecar and prints the split it observes, once a second."""
import http.client
import http.server
import sys
import threading
import time
from collections import Counter


def backend(name, port):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = name.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def client(proxy, host, seconds, rate):
    deadline = time.time() + seconds if seconds > 0 else float("inf")
    while time.time() < deadline:
        window, counts, errors = time.time() + 1.0, Counter(), 0
        while time.time() < window:
            try:
                conn = http.client.HTTPConnection(proxy, 15001, timeout=2)
                conn.request("GET", "/", headers={"host": host})
                resp = conn.getresponse()
                body = resp.read().decode()
                if resp.status == 200:
                    counts[body] += 1
                else:
                    errors += 1
                conn.close()
            except OSError:
                errors += 1
            time.sleep(1.0 / rate)
        total = sum(counts.values()) + errors
        shares = "  ".join(f"{k}: {100 * v / max(total, 1):5.1f}%" for k, v in sorted(counts.items()))
        print(f"{time.strftime('%H:%M:%S')}  {total:3d} requests  {shares}  errors: {errors}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "backends":
        backend("v1", 18081)
        backend("v2", 18082)
        while True:
            time.sleep(3600)
    else:
        client(sys.argv[2], sys.argv[3], float(sys.argv[4]), 50)
