#!/usr/bin/env python3
"""Sidecar benchmark: the bundled proxy (switchyard-proxy) against Envoy, both configured over
xDS by one `switchyard local`, against the direct path, in one run.

Driven by scripts/bench-proxy.sh (which installs oha and builds the binaries); see that file
for the knobs. Protocol: ../shared/reference/BENCH-NOTES.md section 5, cut to what fits in
about ten minutes on a 2-core box:

  D    client -> app
  B2   client -> bundled client sidecar -> bundled server sidecar (plaintext) -> app
  B2t  the same with mTLS between the sidecars (TLS 1.3, SPIFFE certificates)
  E2   client -> Envoy client sidecar -> Envoy server sidecar (plaintext) -> app
  E2t  the same with mTLS
  C2, C2t  with --proxy-base: the bundled pair again, running another build of the proxy (its
       parent commit, say), so a change to the proxy is measured against its base in one run

The four sidecars run at once, each Pod on its own loopback IP, all in front of the same app.
Every round runs every (path, load) pair once, in a shuffled order (fixed seed), so drifts in
background load hit every configuration alike; figures are medians over rounds, latency
figures are paired with the same round's D. Python 3.11 standard library only.

With --tap, every round also runs every (sidecar path, load) with a tap active on both sidecars
of that path's pair (`switchyard tap pod/<client> …` and `pod/<server> …`, two sessions, the
two proxies whose added latency is measured), shuffled with the untapped runs: before a tapped
run the pair's proxies must have acknowledged listeners with the tap's access log and each tap
must have shown a request; after it the taps end and the access log must be gone from both
before anything else runs. The tables of the untapped runs stay as they are; a tap section
follows them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "demo"
# Loopback addresses no e2e suite uses, so a test running meanwhile cannot collide.
IPS = {
    "client-b": "127.0.177.1",
    "api-b-0": "127.0.177.2",
    "client-e": "127.0.177.3",
    "api-e-0": "127.0.177.4",
}
OUTBOUND_PORT = 15001
# The extension the control plane adds to a tapped proxy's HTTP connection managers
# (adapters/src/envoy/tap.rs), as `switchyard proxy-config` shows it.
ACCESS_LOGGER = "envoy.access_loggers.http_grpc"

# Path id -> (description, data plane or None, Host header).
PATHS = {
    "D": ("direct: client -> app", None, "api-b"),
    "B2": ("bundled pair, plaintext", "bundled", "api-b-plain"),
    "B2t": ("bundled pair, mTLS", "bundled", "api-b"),
    "E2": ("Envoy pair, plaintext", "envoy", "api-e-plain"),
    "E2t": ("Envoy pair, mTLS", "envoy", "api-e"),
}
SIDECARS = {"bundled": ("client-b", "api-b-0"), "envoy": ("client-e", "api-e-0")}
# Sidecar set -> (manifest suffix, the Pods' data-plane annotation).
SUFFIX = {"bundled": ("b", "bundled"), "envoy": ("e", "envoy"), "base": ("c", "bundled")}


def add_base_pair() -> None:
    """The second bundled pair (--proxy-base): same manifests, its own Pods and Services."""
    IPS.update({"client-c": "127.0.177.5", "api-c-0": "127.0.177.6"})
    SIDECARS["base"] = ("client-c", "api-c-0")
    PATHS["C2"] = ("bundled base pair, plaintext", "base", "api-c-plain")
    PATHS["C2t"] = ("bundled base pair, mTLS", "base", "api-c")
PCTS = ("p50", "p99", "p99.9")


def log(msg: str) -> None:
    print(f"[bench-proxy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- manifests ------------------------------------------------------------------------------


def pod(name: str, sa: str, app: str, ip: str, data_plane: str) -> str:
    return (
        "apiVersion: v1\nkind: Pod\n"
        f"metadata: {{name: {name}, namespace: {NS}, labels: {{app: {app}}}, "
        f"annotations: {{switchyard.dev/data-plane: {data_plane}}}}}\n"
        f"spec: {{serviceAccountName: {sa}, containers: [{{name: app}}]}}\n"
        f"status: {{podIP: {ip}}}\n"
    )


def meshed_service(name: str, pod_name: str, ip: str, port: int) -> str:
    """A Service selecting the server Pod; its endpoint names the Pod, so clients use mTLS."""
    return (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: {name}, namespace: {NS}}}\n"
        f"spec:\n  selector: {{app: {name}}}\n"
        f"  ports: [{{name: http, port: 80, targetPort: {port}}}]\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}-1, namespace: {NS}, "
        f"labels: {{kubernetes.io/service-name: {name}}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
        f"endpoints:\n- addresses: ['{ip}']\n  conditions: {{ready: true}}\n"
        f"  targetRef: {{kind: Pod, name: {pod_name}, namespace: {NS}}}\n"
    )


def plain_service(name: str, ip: str, port: int) -> str:
    """The same address without a Pod behind it: the client sidecar sends plaintext, which the
    server sidecar's permissive inbound accepts (how e2e/benches/sidecar_latency.rs does it)."""
    return (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: {name}, namespace: {NS}}}\n"
        f"spec:\n  ports: [{{name: http, port: 80, targetPort: {port}}}]\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        f"metadata: {{name: {name}-1, namespace: {NS}, "
        f"labels: {{kubernetes.io/service-name: {name}}}}}\n"
        f"addressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
        f"endpoints: [{{addresses: ['{ip}'], conditions: {{ready: true}}}}]\n"
    )


def write_manifests(d: Path, app_port: int) -> None:
    for dp, (client, server) in SIDECARS.items():
        suffix, annotation = SUFFIX[dp]
        (d / f"pods-{suffix}.yaml").write_text(
            pod(client, "client", f"client-{suffix}", IPS[client], annotation)
            + "---\n"
            + pod(server, "api", f"api-{suffix}", IPS[server], annotation)
        )
        (d / f"api-{suffix}.yaml").write_text(
            meshed_service(f"api-{suffix}", server, IPS[server], app_port)
            + "---\n"
            + plain_service(f"api-{suffix}-plain", IPS[server], app_port)
        )


# --- /proc ----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads, live and exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages (the binary's code, libc) split among the processes
    mapping them, so two proxies running the same binary each count half of it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_ticks() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait, steal


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class RssSampler:
    """Samples VmRSS of some processes every `interval` seconds and keeps the peak of each."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1):
        self.pids, self.interval = pids, interval
        self.peak = {k: 0 for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, pid in self.pids.items():
                try:
                    self.peak[k] = max(self.peak[k], status_kib(pid, "VmRSS"))
                except OSError:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- HTTP helpers -----------------------------------------------------------------------------


def http_get(host: str, port: int, path: str, host_header: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        headers = {"Host": host_header} if host_header else {}
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def wait_for(what: str, f, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if f():
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(0.05)


# --- the mesh ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path | None = None


class Tap:
    """One `switchyard tap pod/<pod> -o json` session, counting the events (lines) it prints."""

    def __init__(self, switchyard: str, admin: str, pod: str, max_rps: int, log: Path,
                 prefix: list[str], idle: bool):
        self.pod = pod
        self.idle = idle
        self.events = 0
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            prefix + [switchyard, "tap", f"pod/{pod}", "-n", NS, "-o", "json", "--max-rps", str(max_rps),
             "--admin", admin],
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Counted, not parsed: every line of `-o json` is one request (heartbeats are not
        # printed), and parsing 1,000 lines a second would cost this process's CPU. This thread
        # stands for the user's terminal, an observer like the CLI whose lines it reads.
        if self.idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        for line in self.popen.stdout:
            if line.strip():
                self.events += 1

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> int:
        """Ends the session as Ctrl-C would; returns the events it printed."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(timeout=5)
        self._log.close()
        return self.events


@dataclass
class Bench:
    args: argparse.Namespace
    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    app_port: int = 0
    sidecar_pids: dict[str, int] = field(default_factory=dict)
    # --tap: the tap sessions running now, the control plane's admin address, and the planes
    # whose proxies never took the tap (data plane -> why).
    taps: list["Tap"] = field(default_factory=list)
    admin_addr: str = ""
    tap_unsupported: dict[str, str] = field(default_factory=dict)

    def pin(self, cpu: str) -> list[str]:
        return ["taskset", "-c", cpu] if self.args.pin else []

    def observer(self) -> list[str]:
        """The prefix of the control plane and the tap CLIs, which watch the proxies: pinned
        with the client, and with --observer-idle given only the CPU the client leaves."""
        idle = ["chrt", "--idle", "0"] if self.args.observer_idle else []
        return self.pin(self.args.client_cpu) + idle

    def spawn(self, name: str, cmd: list[str], env: dict | None = None, log: Path | None = None,
              stdout=subprocess.DEVNULL) -> subprocess.Popen:
        out = open(log, "wb") if log else subprocess.DEVNULL
        p = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=stdout, stderr=out,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(Proc(name, p, log))
        return p

    def stop_all(self) -> None:
        for t in self.taps:
            t.stop()
        self.taps = []
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                p.popen.terminate()
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                tail = ""
                if p.log and p.log.exists():
                    tail = "\n".join(p.log.read_text(errors="replace").splitlines()[-30:])
                raise SystemExit(f"{p.name} exited with {p.popen.returncode}\n{tail}")

    def start(self) -> None:
        a = self.args
        # The app: 127.0.0.1:<port>; the server sidecars' inbound listeners bind
        # <pod IP>:<port> and forward to it.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.app_port = sock.getsockname()[1]
        sock.close()
        app = self.spawn(
            "upstream",
            self.pin(a.sut_cpu) + [a.upstream, f"127.0.0.1:{self.app_port}", str(a.body)],
            log=self.workdir / "upstream.log", stdout=subprocess.PIPE,
        )
        line = app.stdout.readline().decode().strip()
        if not line.startswith("listening on"):
            raise SystemExit(f"upstream did not start: {line!r}")
        self.upstream_pid = app.pid

        mesh = self.workdir / "mesh"
        mesh.mkdir()
        write_manifests(mesh, self.app_port)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        xds_port = sock.getsockname()[1]
        sock.close()
        admin = []
        if a.tap:
            # The tap and proxy-config ask the control plane here (the default, 15014, may
            # be another `switchyard local`'s on a shared box).
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.admin_addr = f"127.0.0.1:{sock.getsockname()[1]}"
            sock.close()
            admin = ["--admin-addr", self.admin_addr]
        # Pinned, the control plane (and the tap CLIs) share the client's CPU: what a tap costs
        # the proxies is then measured apart from decoding and printing its events. That work
        # still delays the client, whose latency is the measure, unless --observer-idle leaves
        # the observers only the CPU the client does not want.
        cp = self.spawn(
            "switchyard local",
            self.observer() + [a.switchyard, "local", "--access-mode", "permissive", "--xds-addr",
             f"127.0.0.1:{xds_port}", *admin, str(mesh)],
            log=self.workdir / "switchyard-local.log",
        )
        self.control_plane_pid = cp.pid
        bootstraps = {p: mesh / ".switchyard" / f"{NS}.{p}.bootstrap.json" for p in IPS}

        def parsed(path: Path) -> bool:
            try:
                return isinstance(json.loads(path.read_text()), dict)
            except (OSError, ValueError):
                return False

        for p, path in bootstraps.items():
            wait_for(f"the bootstrap of {p}", lambda path=path: parsed(path))
        self.bootstraps = {p: str(b) for p, b in bootstraps.items()}

        threads = str(a.workers)
        for dp, pods in SIDECARS.items():
            for p in pods:
                lg = self.workdir / f"{p}.log"
                if dp == "envoy":
                    # The flags sidecars run with (adapters' ENVOY_FLAGS): an immediate drain
                    # applies a changed filter chain (the tap's access log) to the next
                    # request rather than to connections opened over the next ten minutes.
                    cmd = [a.envoy, "-c", str(bootstraps[p]), "--disable-hot-restart",
                           "--drain-strategy", "immediate", "--concurrency", threads, "-l", "warning", "--log-path", str(lg)]
                    proc = self.spawn(p, self.pin(a.sut_cpu) + cmd)
                    proc_log = lg
                else:
                    binary = a.proxy_base if dp == "base" else a.proxy
                    cmd = [binary, "--bootstrap", str(bootstraps[p]), "--threads", threads]
                    proc = self.spawn(p, self.pin(a.sut_cpu) + cmd,
                                      env={"RUST_LOG": "warn"}, log=lg)
                    proc_log = lg
                self.procs[-1].log = proc_log
                self.sidecar_pids[p] = proc.pid
        for p in IPS:
            wait_for(f"{p}'s sidecar to be ready",
                     lambda p=p: http_get(IPS[p], 15000, "/ready")[0] == 200)
        for pid, (_, dp, host) in PATHS.items():
            addr, port = self.target(pid)
            wait_for(f"{pid} ({host}) to answer 200",
                     lambda addr=addr, port=port, host=host: http_get(addr, port, "/", host)[0] == 200)
            status, body = http_get(addr, port, "/", host)
            if len(body) != a.body:
                raise SystemExit(f"{pid}: body of {len(body)} bytes, expected {a.body}")
        self.check_alive()

    def target(self, path: str) -> tuple[str, int]:
        _, dp, _ = PATHS[path]
        if dp is None:
            return "127.0.0.1", self.app_port
        return IPS[SIDECARS[dp][0]], OUTBOUND_PORT

    # --- one oha run ---

    def run(self, path: str, load: str, secs: float, taps: list["Tap"] | None = None) -> dict:
        """One oha run; `taps`, the tap sessions running meanwhile (their CPU is measured)."""
        a = self.args
        addr, port = self.target(path)
        host = PATHS[path][2]
        cmd = self.pin(a.client_cpu) + [
            a.oha, "--no-tui", "--output-format", "json", "-z", f"{secs}s",
            "-c", str(a.conns), "-w", "--host", host,
        ]
        if load != "max":
            cmd += ["-q", load, "--latency-correction"]
        cmd.append(f"http://{addr}:{port}/")
        pids = dict(self.sidecar_pids)
        cpu0 = {k: cpu_seconds(v) for k, v in pids.items()}
        app0 = cpu_seconds(self.upstream_pid)
        cp0 = cpu_seconds(self.control_plane_pid)
        tap0 = {t.pod: cpu_seconds(t.popen.pid) for t in taps or []}
        self0 = sum(os.times()[:2])
        sys0 = system_ticks()
        ch0 = children_cpu()
        t0 = time.monotonic()
        with RssSampler(pids) as rss:
            out = subprocess.run(cmd, capture_output=True, check=False)
        wall = time.monotonic() - t0
        ch1 = children_cpu()
        sys1 = system_ticks()
        self1 = sum(os.times()[:2])
        cpu1 = {k: cpu_seconds(v) for k, v in pids.items()}
        app1 = cpu_seconds(self.upstream_pid)
        cp1 = cpu_seconds(self.control_plane_pid)
        tap_cpu = {t.pod: cpu_seconds(t.popen.pid) - tap0[t.pod] for t in taps or []}
        if out.returncode != 0:
            raise SystemExit(f"oha failed ({out.returncode}): {out.stderr.decode(errors='replace')}")
        report = json.loads(out.stdout)
        self.check_alive()

        statuses = {int(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
        errors = report.get("errorDistribution", {}) or {}
        ok = statuses.get(200, 0)
        total = sum(statuses.values()) + sum(errors.values())
        lp = report.get("latencyPercentiles", {})
        summary = report.get("summary", {})
        sidecar_cpu = {k: cpu1[k] - cpu0[k] for k in pids}
        dp = PATHS[path][1]
        pair = sum(sidecar_cpu[p] for p in SIDECARS[dp]) if dp else 0.0
        busy = (sys1[0] - sys0[0]) / CLK_TCK
        steal = (sys1[2] - sys0[2]) / CLK_TCK
        total_ticks = (sys1[1] - sys0[1]) / CLK_TCK
        ours = ((ch1 - ch0) + sum(sidecar_cpu.values()) + (app1 - app0) + (cp1 - cp0)
                + (self1 - self0) + sum(tap_cpu.values()))
        flags = []
        if ok != total:
            flags.append(f"{total - ok} of {total} not 200 ({errors or statuses})")
        achieved = ok / secs
        if load != "max" and achieved < 0.99 * float(load):
            flags.append(f"rate not held: {achieved:.0f}/s of {load}/s")
        extra = {"tap_cli_cpu_seconds": tap_cpu} if taps is not None else {}
        return {
            "path": path,
            "load": load,
            "seconds": secs,
            "wall_seconds": wall,
            "requests_ok": ok,
            "requests_total": total,
            "rps": summary.get("requestsPerSec", achieved),
            "latency_us": {p: lp[p] * 1e6 for p in PCTS if lp.get(p) is not None},
            "sidecar_cpu_seconds": sidecar_cpu,
            "pair_cpu_seconds": pair,
            "upstream_cpu_seconds": app1 - app0,
            "control_plane_cpu_seconds": cp1 - cp0,
            "oha_cpu_seconds": ch1 - ch0,
            "rss_peak_kib": rss.peak,
            "system": {
                "busy_cpu_seconds": busy,
                "steal_cpu_seconds": steal,
                "capacity_cpu_seconds": total_ticks,
                # Everything busy that is none of our processes: other users of the box.
                "foreign_cpu_seconds": max(0.0, busy - ours),
            },
            "flags": flags,
            "oha": report,
            **extra,
        }


    # --- taps (--tap) ---

    def listeners(self, pod: str) -> tuple[bool, str | None]:
        """Whether `pod`'s proxy runs listeners with the tap's access log (the resources of
        its last acknowledged LDS response, per `switchyard proxy-config`), and the reason it
        gave for rejecting a later LDS version, if it did."""
        out = subprocess.run(
            [self.args.switchyard, "proxy-config", pod, "-n", NS, "--type", "lds", "-o", "json",
             "--admin", self.admin_addr],
            capture_output=True, timeout=30, check=False,
        )
        # A rejected version makes proxy-config exit 1, with the configuration printed anyway.
        try:
            lds = json.loads(out.stdout)["types"]["LDS"]
        except (ValueError, KeyError, TypeError):
            raise SystemExit(f"proxy-config {pod} failed ({out.returncode}): "
                             f"{out.stderr.decode(errors='replace')}{out.stdout[:500]!r}")
        nacked = lds.get("nacked")
        present = ACCESS_LOGGER in json.dumps(lds.get("resources", []))
        return present, (f"version {nacked['version']}: {nacked['message']}" if nacked else None)

    def access_logs(self, dp: str) -> dict[str, bool]:
        return {p: self.listeners(p)[0] for p in SIDECARS[dp]}

    def wait_access_logs(self, dp: str, present: bool, within: float) -> tuple[float | None, str | None]:
        """Seconds until every proxy of `dp` has (or has not) the access log, or None if not
        within `within` seconds or (waiting for it) once a proxy rejected it; and the
        rejection."""
        t0 = time.monotonic()
        while True:
            state = {p: self.listeners(p) for p in SIDECARS[dp]}
            if all(has == present for has, _ in state.values()):
                return time.monotonic() - t0, None
            nacks = {p: n for p, (has, n) in state.items() if n and not has}
            if present and nacks:
                return None, "; ".join(f"{p} rejected it: {n}" for p, n in nacks.items())
            if time.monotonic() - t0 > within:
                return None, None
            time.sleep(0.1)

    def warm_pair(self, dp: str) -> None:
        """A short max-rate run on each of the pair's paths: a changed listener closed the
        pair's connections (the sidecars' pools too), which the next measured run must not
        pay for; with a tap, it also opens the proxies' access-log streams."""
        for path, (_, pdp, _) in PATHS.items():
            if pdp == dp:
                w = self.run(path, "max", self.args.tap_warmup_seconds)
                if w["flags"]:
                    log(f"tap warm-up {path}: {w['flags']}")

    def tap_on(self, dp: str) -> dict | None:
        """Taps both proxies of `dp`'s pair and waits until they stream requests. None, with
        the reason in tap_unsupported, when they never do (a build without the logger)."""
        a = self.args
        t0 = time.monotonic()
        self.taps = [Tap(a.switchyard, self.admin_addr, p, a.tap_max_rps,
                         self.workdir / f"tap-{p}.log", self.observer(), a.observer_idle)
                     for p in SIDECARS[dp]]
        took, nack = self.wait_access_logs(dp, True, a.tap_wait_seconds)
        why = None
        if nack:
            why = f"the listeners with the access log were rejected: {nack}"
        elif took is None:
            why = (f"the access log never reached every proxy of the pair within "
                   f"{a.tap_wait_seconds:g} s ({self.access_logs(dp)})")
        else:
            self.warm_pair(dp)
            deadline = time.monotonic() + 3.0
            while any(t.events == 0 for t in self.taps) and time.monotonic() < deadline:
                time.sleep(0.1)
            if any(t.events == 0 for t in self.taps):
                why = ("the access log is in the proxies' listeners but a tap showed no request: "
                       + ", ".join(f"{t.pod} {t.events}" for t in self.taps))
        dead = [t.pod for t in self.taps if not t.alive()]
        if dead and not why:
            why = f"the tap of {dead} exited (see {self.workdir}/tap-*.log)"
        if why:
            self.tap_off(dp, within=a.tap_wait_seconds)
            self.tap_unsupported[dp] = why
            return None
        # Whatever the warm-up's requests still had in the proxies' buffers (sent every 200 ms).
        time.sleep(0.5)
        return {"seconds_to_access_log": took, "seconds_to_ready": time.monotonic() - t0}

    def tap_off(self, dp: str, within: float) -> dict:
        """Ends the taps and waits until the pair's access log is gone."""
        t0 = time.monotonic()
        for t in self.taps:
            t.stop()
        self.taps = []
        took, _ = self.wait_access_logs(dp, False, within)
        if took is None:
            raise SystemExit(f"{dp}: the access log is still in {self.access_logs(dp)} "
                             f"{within:g} s after the taps ended")
        self.warm_pair(dp)
        return {"seconds_to_no_access_log": took, "seconds_to_ready": time.monotonic() - t0}

    def run_tapped(self, path: str, load: str, secs: float) -> dict | None:
        """One run with `path`'s pair tapped; None when that plane cannot be tapped."""
        dp = PATHS[path][1]
        if self.args.tap_control:
            return self.run_control(path, load, secs)
        if dp in self.tap_unsupported:
            return None
        on = self.tap_on(dp)
        if on is None:
            log(f"{dp}: not tapped: {self.tap_unsupported[dp]}")
            return None
        before = {t.pod: t.events for t in self.taps}
        logs_before = self.access_logs(dp)
        r = self.run(path, load, secs, taps=self.taps)
        # The proxies send what they buffered every 200 ms; the last of it before counting.
        time.sleep(0.6)
        events = {t.pod: t.events - before[t.pod] for t in self.taps}
        logs_after = self.access_logs(dp)
        alive = all(t.alive() for t in self.taps)
        off = self.tap_off(dp, within=self.args.tap_wait_seconds)
        if not alive:
            r["flags"].append("a tap exited during the run")
        r["tap"] = {
            "active": True, "events": events, "access_log_before": logs_before,
            "access_log_after": logs_after, "on": on, "off": off,
        }
        return r

    def run_control(self, path: str, load: str, secs: float) -> dict:
        """--tap-control: the tapped arm's preparation and pauses, without a tap, so the
        tapped/untapped figures read what the bench resolves when nothing differs."""
        dp = PATHS[path][1]
        t0 = time.monotonic()
        self.warm_pair(dp)
        time.sleep(0.5)
        ready = time.monotonic() - t0
        logs_before = self.access_logs(dp)
        r = self.run(path, load, secs, taps=[])
        time.sleep(0.6)
        logs_after = self.access_logs(dp)
        t1 = time.monotonic()
        self.warm_pair(dp)
        r["tap"] = {
            "active": True, "control": True, "events": {p: 0 for p in SIDECARS[dp]},
            "access_log_before": logs_before, "access_log_after": logs_after,
            "on": {"seconds_to_access_log": 0.0, "seconds_to_ready": ready},
            "off": {"seconds_to_no_access_log": 0.0, "seconds_to_ready": time.monotonic() - t1},
        }
        if any(logs_before.values()) or any(logs_after.values()):
            r["flags"].append(f"control run, but the access log is in {logs_before} / {logs_after}")
        return r

    def run_untapped(self, path: str, load: str, secs: float) -> dict:
        """One run with no tap, checking that the pair's proxies have no access log."""
        dp = PATHS[path][1]
        logs = self.access_logs(dp) if dp else {}
        r = self.run(path, load, secs, taps=[] if dp else None)
        r["tap"] = {"active": False, "access_log_before": logs}
        if any(logs.values()):
            r["flags"].append(f"untapped, but the access log is in {logs}")
        return r


# --- counters that prove the paths are what they claim ---------------------------------------


def envoy_stats(ip: str) -> dict[str, int]:
    _, body = http_get(ip, 15000, "/stats")
    out = {}
    for line in body.decode(errors="replace").splitlines():
        k, _, v = line.partition(": ")
        if v.isdigit():
            out[k] = int(v)
    return out


def bundled_metrics(ip: str) -> list[tuple[str, float]]:
    _, body = http_get(ip, 15000, "/metrics")
    out = []
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, _, value = line.rpartition(" ")
        try:
            out.append((series, float(value)))
        except ValueError:
            pass
    return out


def path_evidence(app_port: int) -> dict:
    """TLS handshakes and upstream connections, per data plane, as each reports them."""
    ev: dict = {}
    srv, cli = IPS["api-e-0"], IPS["client-e"]
    s, c = envoy_stats(srv), envoy_stats(cli)
    ev["envoy"] = {
        "server_inbound_tls_handshakes": s.get(f"listener.{srv}_{app_port}.ssl.handshake", 0),
        "client_tls_handshakes_mtls_cluster": c.get(f"cluster.{NS}/api-e|80.ssl.handshake", 0),
        "client_tls_handshakes_plain_cluster": c.get(f"cluster.{NS}/api-e-plain|80.ssl.handshake", 0),
        "client_upstream_connections_mtls_cluster": c.get(f"cluster.{NS}/api-e|80.upstream_cx_total", 0),
        "client_upstream_connections_plain_cluster": c.get(f"cluster.{NS}/api-e-plain|80.upstream_cx_total", 0),
        "server_upstream_connections_to_app": sum(
            v for k, v in s.items() if k.startswith("cluster.") and k.endswith(".upstream_cx_total")
            and "inbound" in k),
    }
    def total(samples, name, *labels):
        return int(sum(v for k, v in samples if k.startswith(f"switchyard_proxy_{name}{{")
                       and all(lab in k for lab in labels)))

    for dp in ("bundled", "base"):
        if dp not in SIDECARS:
            continue
        cli, srv = SIDECARS[dp]
        api = f"api-{SUFFIX[dp][0]}"
        s, c = bundled_metrics(IPS[srv]), bundled_metrics(IPS[cli])
        ev[dp] = {
            "server_inbound_tls_handshakes": total(s, "tls_handshakes_total", f'listener="inbound|{app_port}"'),
            "client_tls_handshakes_mtls_cluster": total(c, "upstream_tls_handshakes_total", f'cluster="{NS}/{api}|80"'),
            "client_tls_handshakes_plain_cluster": total(c, "upstream_tls_handshakes_total", f'cluster="{NS}/{api}-plain|80"'),
        }
    return ev


# --- statistics and the report ----------------------------------------------------------------


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs: list[float]) -> tuple[float, float] | None:
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


# The issue's target: a tap adds at most 10 % to the bundled pair's added p99.
TAP_TARGET_RATIO = 1.10
# The tap target's interval: resamples of the rounds, and the two-sided coverage.
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_COVERAGE = 0.90


def bootstrap_ratio(pairs: list[tuple[float, float]], seed: int) -> tuple[float, float] | None:
    """A percentile bootstrap interval (BOOTSTRAP_COVERAGE) of median(a) / median(b) over
    rounds, `pairs` holding one round's (a, b) each: rounds are resampled whole, so what moves
    both arms of a round (the machine's noise then) stays paired. None below 3 rounds."""
    if len(pairs) < 3:
        return None
    rnd = random.Random(seed)
    ratios = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        sample = [pairs[rnd.randrange(len(pairs))] for _ in pairs]
        r = ratio(statistics.median(a for a, _ in sample), statistics.median(b for _, b in sample))
        if r is not None:
            ratios.append(r)
    if len(ratios) < BOOTSTRAP_RESAMPLES // 2:
        return None
    ratios.sort()
    tail = (1 - BOOTSTRAP_COVERAGE) / 2
    return ratios[int(tail * len(ratios))], ratios[min(len(ratios) - 1, int((1 - tail) * len(ratios)))]


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def summarize(runs: list[dict], idle_kib: dict, hwm_kib: dict, loads: list[str]) -> dict:
    by = {}
    for r in runs:
        by.setdefault((r["path"], r["load"]), []).append(r)
    rounds = sorted({r["round"] for r in runs})

    def in_round(path, load, rnd):
        return next((r for r in by.get((path, load), []) if r["round"] == rnd), None)

    out: dict = {"latency": {}, "throughput": {}, "rss": {}, "ratios": {}, "targets": []}
    for load in loads:
        table = {}
        for path in PATHS:
            row: dict = {}
            for p in PCTS:
                vals = [in_round(path, load, k)["latency_us"].get(p) for k in rounds
                        if in_round(path, load, k)]
                added = []
                for k in rounds:
                    v, d = in_round(path, load, k), in_round("D", load, k)
                    if v and d and p in v["latency_us"] and p in d["latency_us"]:
                        added.append(v["latency_us"][p] - d["latency_us"][p])
                row[p] = med(vals)
                row[f"added_{p}"] = med(added)
                row[f"added_{p}_range"] = rng(added)
            rs = by.get((path, load), [])
            reqs = sum(r["requests_ok"] for r in rs)
            pair = sum(r["pair_cpu_seconds"] for r in rs)
            row["pair_cpu_ms_per_1k"] = (pair * 1e3 / (reqs / 1e3)) if PATHS[path][1] and reqs else None
            row["rps"] = med([r["rps"] for r in rs])
            row["flags"] = [f"round {r['round']}: {f}" for r in rs for f in r["flags"]]
            table[path] = row
        out["latency"][load] = table

    for path in PATHS:
        rs = by.get((path, "max"), [])
        dp = PATHS[path][1]
        row = {
            "rps": med([r["rps"] for r in rs]),
            "rps_range": rng([r["rps"] for r in rs]),
            "flags": [f"round {r['round']}: {f}" for r in rs for f in r["flags"]],
            "oha_cores": med([r["oha_cpu_seconds"] / r["wall_seconds"] for r in rs]),
            "upstream_cores": med([r["upstream_cpu_seconds"] / r["wall_seconds"] for r in rs]),
            "foreign_cores": med([r["system"]["foreign_cpu_seconds"] / r["wall_seconds"] for r in rs]),
        }
        if dp:
            client, server = SIDECARS[dp]
            row["pair_cores"] = med([r["pair_cpu_seconds"] / r["wall_seconds"] for r in rs])
            per_core = [r["requests_ok"] / r["pair_cpu_seconds"] for r in rs if r["pair_cpu_seconds"] > 0]
            row["rps_per_core"] = med(per_core)
            row["rps_per_core_range"] = rng(per_core)
            row["pair_cpu_ms_per_1k"] = med([r["pair_cpu_seconds"] * 1e6 / r["requests_ok"] for r in rs if r["requests_ok"]])
            row["client_cpu_ms_per_1k"] = med([r["sidecar_cpu_seconds"][client] * 1e6 / r["requests_ok"] for r in rs if r["requests_ok"]])
            row["server_cpu_ms_per_1k"] = med([r["sidecar_cpu_seconds"][server] * 1e6 / r["requests_ok"] for r in rs if r["requests_ok"]])
        out["throughput"][path] = row

    for dp, pods in SIDECARS.items():
        for p in pods:
            peak = max([r["rss_peak_kib"][p] for r in runs] + [0])
            peak_max = max([r["rss_peak_kib"][p] for r in runs if r["load"] == "max"] + [0])
            out["rss"][p] = {
                "data_plane": dp,
                "idle_mb": idle_kib[p]["VmRSS"] * 1024 / 1e6,
                "idle_anon_mb": idle_kib[p]["RssAnon"] * 1024 / 1e6,
                "idle_file_mb": idle_kib[p]["RssFile"] * 1024 / 1e6,
                "idle_pss_mb": idle_kib[p]["Pss"] * 1024 / 1e6,
                "load_peak_mb": peak * 1024 / 1e6,
                "max_run_peak_mb": peak_max * 1024 / 1e6,
                "vmhwm_mb": hwm_kib[p] * 1024 / 1e6,
            }

    def path_ratios(a: str, b: str) -> dict:
        """Path a's figures over path b's, measured in the same run (none when --paths left
        either out)."""
        r = {}
        if a not in PATHS or b not in PATHS:
            return r
        for load in loads:
            la, lb = out["latency"][load][a], out["latency"][load][b]
            for p in PCTS:
                r[f"added_{p}@{load}"] = ratio(la[f"added_{p}"], lb[f"added_{p}"])
            r[f"cpu_per_1k@{load}"] = ratio(la["pair_cpu_ms_per_1k"], lb["pair_cpu_ms_per_1k"])
        ta, tb = out["throughput"][a], out["throughput"][b]
        r["max_rps"] = ratio(ta["rps"], tb["rps"])
        r["rps_per_core@max"] = ratio(ta.get("rps_per_core"), tb.get("rps_per_core"))
        r["cpu_per_1k@max"] = ratio(ta.get("pair_cpu_ms_per_1k"), tb.get("pair_cpu_ms_per_1k"))
        return r

    # bundled / Envoy; with --proxy-base, also this build / the base build.
    ratios = {"mtls": path_ratios("B2t", "E2t"), "plaintext": path_ratios("B2", "E2")}
    if "base" in SIDECARS:
        ratios["mtls_vs_base"] = path_ratios("B2t", "C2t")
        ratios["plaintext_vs_base"] = path_ratios("B2", "C2")
    rb = out["rss"]
    ratios["rss"] = {
        "idle_client": ratio(rb["client-b"]["idle_mb"], rb["client-e"]["idle_mb"]),
        "idle_server": ratio(rb["api-b-0"]["idle_mb"], rb["api-e-0"]["idle_mb"]),
        "load_peak_client": ratio(rb["client-b"]["load_peak_mb"], rb["client-e"]["load_peak_mb"]),
        "load_peak_server": ratio(rb["api-b-0"]["load_peak_mb"], rb["api-e-0"]["load_peak_mb"]),
    }
    if "base" in SIDECARS:
        ratios["rss"]["idle_client_vs_base"] = ratio(rb["client-b"]["idle_mb"], rb["client-c"]["idle_mb"])
        ratios["rss"]["idle_server_vs_base"] = ratio(rb["api-b-0"]["idle_mb"], rb["api-c-0"]["idle_mb"])
    out["ratios"] = ratios

    # The issue's targets (those against Envoy only when --paths kept both mTLS pairs).
    both = "B2t" in PATHS and "E2t" in PATHS
    for load in loads if both else []:
        b = out["latency"][load]["B2t"]["added_p99"]
        e = out["latency"][load]["E2t"]["added_p99"]
        ok = b is not None and e is not None and e > 0 and b <= 0.5 * e
        out["targets"].append({
            "target": f"mTLS added p99 at {load} rps: bundled <= 0.5 x Envoy",
            "bundled": b, "envoy": e, "ratio": ratio(b, e), "pass": ok,
        })
    if both:
        b = out["throughput"]["B2t"].get("rps_per_core")
        e = out["throughput"]["E2t"].get("rps_per_core")
        out["targets"].append({
            "target": "mTLS max RPS per core: bundled >= 1.5 x Envoy",
            "bundled": b, "envoy": e, "ratio": ratio(b, e),
            "pass": b is not None and e is not None and b >= 1.5 * e,
        })
    worst = max(rb[p]["idle_mb"] for p in SIDECARS["bundled"])
    out["targets"].append({
        "target": "bundled idle RSS <= 10 MB (each proxy)",
        "bundled": worst, "envoy": max(rb[p]["idle_mb"] for p in SIDECARS["envoy"]),
        "ratio": None, "pass": worst <= 10.0,
    })
    return out


def summarize_tap(runs: list[dict], loads: list[str], unsupported: dict[str, str],
                  control: bool = False, seed: int = 0) -> dict:
    """Tapped against untapped runs of every sidecar path, per load: added latency (paired
    with the same round's D, as the main tables), CPU per 1,000 requests of the pair, of the
    control plane and of the tap CLIs, the events the taps showed, and whether the access log
    was in the pair's listeners (it must be in every tapped run and in no untapped one)."""
    by: dict = {}
    for r in runs:
        by.setdefault((r["path"], r["load"], r["tap"]["active"]), []).append(r)
    rounds = sorted({r["round"] for r in runs})

    def one(path, load, active, rnd):
        return next((r for r in by.get((path, load, active), []) if r["round"] == rnd), None)

    def per_1k(rs, cpu) -> float | None:
        reqs = sum(r["requests_ok"] for r in rs)
        return sum(cpu(r) for r in rs) * 1e6 / reqs if reqs else None

    def added(path, load, active, rnd, p) -> float | None:
        """Percentile `p` of the path's run in round `rnd` minus the same round's D."""
        v, d = one(path, load, active, rnd), one("D", load, False, rnd)
        if v and d and p in v["latency_us"] and p in d["latency_us"]:
            return v["latency_us"][p] - d["latency_us"][p]
        return None

    out: dict = {"latency": {}, "unsupported": dict(unsupported), "targets": []}
    for load in loads:
        table = {}
        for path, (_, dp, _) in PATHS.items():
            if dp is None:
                continue
            row: dict = {"data_plane": dp}
            for state, active in (("untapped", False), ("tapped", True)):
                rs = by.get((path, load, active), [])
                x: dict = {"runs": len(rs), "requests": sum(r["requests_ok"] for r in rs),
                           "rps": med([r["rps"] for r in rs])}
                for p in PCTS:
                    xs = [added(path, load, active, k, p) for k in rounds]
                    x[f"added_{p}"] = med(xs)
                    x[f"added_{p}_range"] = rng(xs)
                x["pair_cpu_ms_per_1k"] = per_1k(rs, lambda r: r["pair_cpu_seconds"])
                x["control_plane_cpu_ms_per_1k"] = per_1k(rs, lambda r: r["control_plane_cpu_seconds"])
                x["tap_cli_cpu_ms_per_1k"] = per_1k(rs, lambda r: sum(r["tap_cli_cpu_seconds"].values()))
                # Runs whose pair had the access log in its listeners before (and, tapped, after).
                x["access_log_before"] = sum(all(r["tap"]["access_log_before"].values()) for r in rs)
                x["no_access_log_before"] = sum(not any(r["tap"]["access_log_before"].values()) for r in rs)
                if active:
                    x["access_log_after"] = sum(all(r["tap"]["access_log_after"].values()) for r in rs)
                    events: dict = {}
                    for r in rs:
                        for pod, n in r["tap"]["events"].items():
                            events[pod] = events.get(pod, 0) + n
                    x["events"] = events
                    x["events_total"] = sum(events.values())
                    # Each request passes both tapped proxies: two events, up to --tap-max-rps.
                    x["events_per_request"] = (x["events_total"] / x["requests"]) if x["requests"] else None
                x["flags"] = [f"round {r['round']}: {f}" for r in rs for f in r["flags"]]
                row[state] = x
            u, t = row["untapped"], row["tapped"]
            for p in PCTS:
                row[f"added_{p}_ratio"] = ratio(t[f"added_{p}"], u[f"added_{p}"])
                # The tap's own cost, without D: tapped minus untapped in the same round.
                delta = []
                for k in rounds:
                    v, w = one(path, load, True, k), one(path, load, False, k)
                    if v and w and p in v["latency_us"] and p in w["latency_us"]:
                        delta.append(v["latency_us"][p] - w["latency_us"][p])
                row[f"tap_delta_{p}"] = med(delta)
                row[f"tap_delta_{p}_range"] = rng(delta)
                if p == "p99":
                    row["tapped_p99_higher_rounds"] = sum(1 for x in delta if x > 0)
            # The added p99 of both arms, round by round, for the target's interval.
            pairs = [(a, b) for k in rounds
                     if (a := added(path, load, True, k, "p99")) is not None
                     and (b := added(path, load, False, k, "p99")) is not None]
            row["added_p99_ratio_ci"] = bootstrap_ratio(pairs, seed)
            row["added_p99_rounds"] = len(pairs)
            row["pair_cpu_per_1k_ratio"] = ratio(t["pair_cpu_ms_per_1k"], u["pair_cpu_ms_per_1k"])
            row["rps_ratio"] = ratio(t["rps"], u["rps"])
            table[path] = row
        out["latency"][load] = table
    for load in loads:
        if load == "max":
            continue
        for path in (p for p in ("B2t", "B2") if p in PATHS):
            r = out["latency"][load][path]
            measured = r["tapped"]["runs"] > 0 and r["added_p99_ratio"] is not None
            ci = r["added_p99_ratio_ci"]
            # A verdict only where the interval lies on one side of the target: a median ratio
            # on the other side of 1.10 from the truth is what a noisy run reads half the time.
            if control:
                verdict = "N/A"
            elif not measured or ci is None:
                verdict = "UNRESOLVED"
            elif ci[1] <= TAP_TARGET_RATIO:
                verdict = "PASS"
            elif ci[0] > TAP_TARGET_RATIO:
                verdict = "FAIL"
            else:
                verdict = "UNRESOLVED"
            out["targets"].append({
                "target": f"tap on adds <= 10 % to the bundled proxy's added p99 at {load} rps "
                          f"({PATHS[path][0]})",
                "untapped": r["untapped"]["added_p99"], "tapped": r["tapped"]["added_p99"],
                "ratio": r["added_p99_ratio"], "ratio_ci": ci, "rounds": r["added_p99_rounds"],
                "tapped_higher_rounds": r["tapped_p99_higher_rounds"],
                "verdict": verdict,
                "pass": {"PASS": True, "FAIL": False}.get(verdict),
            })
    out["control"] = control
    return out


def print_tap_report(t: dict, rates: list[str], rounds: int, max_rps: int, file=sys.stdout) -> None:
    def p(*x):
        print(*x, file=file)

    def access(x: dict, active: bool) -> str:
        if active:
            return f"{x['access_log_before']}/{x['runs']} before, {x['access_log_after']}/{x['runs']} after"
        return f"absent {x['no_access_log_before']}/{x['runs']}"

    p()
    if t.get("control"):
        p("=== CONTROL RUN (--tap-control): no tap was on; every 'tapped' run below is an untapped "
          "run prepared as a tapped one is (a max-rate warm-up of the pair before and after it, the "
          "same pauses). Its tapped/untapped figures are what the bench reads when nothing "
          "differs: the resolution of a real tap run's figures ===")
    p(f"=== tap: in a tapped run both sidecars of the path's pair are tapped (`switchyard tap "
      f"pod/<pod> -o json --max-rps {max_rps}`, one session each); the tables above are the "
      f"untapped runs ===")
    p("events = lines the two taps printed for the run's requests (2 a request when nothing is "
      "dropped); access log = runs whose pair had `" + ACCESS_LOGGER + "` in its acknowledged "
      "listeners (tapped: before and after the run; untapped: absent before it)")
    for load in rates + ["max"]:
        p()
        if load == "max":
            p("-- max throughput: RPS median over rounds; CPU ms per 1,000 requests: pair = both "
              "sidecars (sum over rounds), cp = `switchyard local`, taps = the two tap CLIs --")
            rows = [["path", "RPS", "RPS tap", "ratio", "pair CPU", "pair CPU tap", "ratio",
                     "cp CPU", "cp CPU tap", "taps CPU", "events", "ev/req", "access log (tap)",
                     "access log"]]
        else:
            p(f"-- {load} rps: +p99/+p99.9 = path minus the same round's D, µs, median over rounds "
              "[min..max]; tap-untap p50/p99 = tapped minus untapped p50/p99 of the path in the same round; CPU ms per 1,000 requests: pair = both sidecars, cp = `switchyard local`, "
              "taps = the two tap CLIs --")
            rows = [["path", "+p99", "+p99 tap", "ratio", "tap-untap p50", "tap-untap p99", "+p99.9", "+p99.9 tap", "ratio",
                     "pair CPU", "pair CPU tap", "ratio", "cp CPU", "cp CPU tap", "taps CPU",
                     "events", "ev/req", "access log (tap)", "access log"]]
        flags = []
        for path, r in t["latency"][load].items():
            u, x = r["untapped"], r["tapped"]
            tail = [fmt(u["control_plane_cpu_ms_per_1k"], ".2f"),
                    fmt(x["control_plane_cpu_ms_per_1k"], ".2f"),
                    fmt(x["tap_cli_cpu_ms_per_1k"], ".2f"), str(x.get("events_total", 0)),
                    fmt(x.get("events_per_request"), ".2f"), access(x, True), access(u, False)]
            cpu = [fmt(u["pair_cpu_ms_per_1k"], ".1f"), fmt(x["pair_cpu_ms_per_1k"], ".1f"),
                   fmt(r["pair_cpu_per_1k_ratio"], ".2f")]
            name = f"{path:<4} {PATHS[path][0]}"
            if load == "max":
                rows.append([name, fmt(u["rps"]), fmt(x["rps"]), fmt(r["rps_ratio"], ".2f")]
                            + cpu + tail)
            else:
                rows.append([name,
                             with_range(u["added_p99"], u["added_p99_range"], rounds),
                             with_range(x["added_p99"], x["added_p99_range"], rounds),
                             fmt(r["added_p99_ratio"], ".2f"),
                             with_range(r["tap_delta_p50"], r["tap_delta_p50_range"], rounds),
                             with_range(r["tap_delta_p99"], r["tap_delta_p99_range"], rounds),
                             with_range(u["added_p99.9"], u["added_p99.9_range"], rounds),
                             with_range(x["added_p99.9"], x["added_p99.9_range"], rounds),
                             fmt(r["added_p99.9_ratio"], ".2f")] + cpu + tail)
            flags += [f"{path} tapped: {f}" for f in x["flags"]]
            flags += [f"{path}: {f}" for f in u["flags"] if "access log" in f]
        table(rows, file)
        for f in flags:
            p(f"   ! {f}")
    for dp, why in t["unsupported"].items():
        p(f"   ! {dp}: not tapped: {why}")
    p()
    p(f"-- tap targets (the issue's; ratio = tapped / untapped; PASS or FAIL only when the "
      f"ratio's {BOOTSTRAP_COVERAGE:.0%} bootstrap interval over rounds lies on one side of "
      f"{TAP_TARGET_RATIO:.2f}, else UNRESOLVED: the bench cannot tell) --")
    for x in t["targets"]:
        verdict = x.get("verdict") or {True: "PASS", False: "FAIL", None: "N/A"}[x["pass"]]
        detail = []
        if x["ratio"] is not None:
            detail.append(f"ratio {x['ratio']:.2f}")
        if x.get("ratio_ci"):
            lo, hi = x["ratio_ci"]
            detail.append(f"interval [{lo:.2f}..{hi:.2f}] over {x['rounds']} rounds")
        if x.get("rounds"):
            detail.append(f"tapped p99 higher in {x['tapped_higher_rounds']} of {x['rounds']}")
        p(f"{verdict:<10}  {x['target']}: untapped {fmt(x['untapped'])} µs, tapped "
          f"{fmt(x['tapped'])} µs" + (f" ({'; '.join(detail)})" if detail else ""))


def table(rows: list[list[str]], file) -> None:
    """Rows of cells, the first a header; the first column left-aligned, the rest right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        print("  ".join(cells).rstrip(), file=file)


def with_range(x: float | None, r: tuple[float, float] | None, rounds: int) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" + (f" [{r[0]:.0f}..{r[1]:.0f}]" if r and rounds > 1 else "")


def print_report(s: dict, meta: dict, rates: list[str], file=sys.stdout) -> None:
    def p(*x):
        print(*x, file=file)

    a = meta["settings"]
    m = meta["machine"]
    rounds = a["rounds"]
    p()
    p(f"=== sidecar benchmark: bundled proxy vs Envoy, both configured by `switchyard local` "
      f"(permissive mode); {rounds} rounds, each running every (path, load) in shuffled order ===")
    p(f"client: {meta['versions']['oha']}, HTTP/1.1 keep-alive, {a['conns']} connections, GET / -> "
      f"{a['body']} B body. Fixed rates: open loop, --latency-correction, {a['rate_seconds']:g} s. "
      f"Max: closed loop, {a['max_seconds']:g} s.")
    p(f"proxies: {a['workers']} worker thread(s) each (Envoy --concurrency, bundled --threads); "
      f"HTTP/1.1 between the sidecars; mTLS = TLS 1.3 with SPIFFE certificates from the control plane. "
      f"Pinned: {'client, control plane, tap CLIs and this harness on CPU ' + a['client_cpu'] + ', proxies and upstream on CPU ' + a['sut_cpu'] if a['pin'] else 'no'}. "
      f"Control plane and tap CLIs: {'SCHED_IDLE (only the CPU the client leaves)' if a.get('observer_idle') else 'normal priority'}.")
    p(f"machine: {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}; other users of the box took "
      f"{meta['foreign_cores_median']:.2f} cores (median over runs; max {meta['foreign_cores_max']:.2f}); "
      f"steal {meta['steal_seconds_total']:.1f} CPU-s in total.")
    for load in rates:
        p()
        p(f"-- {load} rps: latency in µs. +pXX = path minus the same round's D; median over rounds "
          f"[min..max]. CPU = both sidecars, ms per 1,000 requests --")
        rows = [["path", "p50", "p99", "p99.9", "+p50", "+p99", "+p99.9", "CPU ms/1k"]]
        flags = []
        for path, (desc, _, _) in PATHS.items():
            r = s["latency"][load][path]
            direct = path == "D"
            rows.append([
                f"{path:<4} {desc}", fmt(r["p50"]), fmt(r["p99"]), fmt(r["p99.9"]),
                "" if direct else fmt(r["added_p50"]),
                "" if direct else with_range(r["added_p99"], r["added_p99_range"], rounds),
                "" if direct else with_range(r["added_p99.9"], r["added_p99.9_range"], rounds),
                fmt(r["pair_cpu_ms_per_1k"], ".1f"),
            ])
            flags += [f"{path}: {f}" for f in r["flags"]]
        table(rows, file)
        for f in flags:
            p(f"   ! {f}")
    p()
    p("-- max throughput (closed loop). RPS/core = requests / CPU-seconds of both sidecars "
      "(utime+stime, /proc/<pid>/stat); CPU ms/1k per pair and per proxy; cores = CPU-s / wall-s --")
    rows = [["path", "RPS", "RPS/core", "pair cores", "CPU ms/1k", "client", "server",
             "oha cores", "app cores", "others"]]
    flags = []
    for path, (desc, _, _) in PATHS.items():
        r = s["throughput"][path]
        rows.append([
            f"{path:<4} {desc}", with_range(r["rps"], r["rps_range"], rounds),
            with_range(r.get("rps_per_core"), r.get("rps_per_core_range"), rounds),
            fmt(r.get("pair_cores"), ".2f"), fmt(r.get("pair_cpu_ms_per_1k"), ".1f"),
            fmt(r.get("client_cpu_ms_per_1k"), ".1f"), fmt(r.get("server_cpu_ms_per_1k"), ".1f"),
            fmt(r["oha_cores"], ".2f"), fmt(r["upstream_cores"], ".2f"), fmt(r["foreign_cores"], ".2f"),
        ])
        flags += [f"{path}: {f}" for f in r["flags"]]
    table(rows, file)
    for f in flags:
        p(f"   ! {f}")
    p()
    p("-- memory per proxy, MB = 10^6 bytes. idle = VmRSS once configured, before any load "
      "= anon + file-backed; Pss splits shared code among the processes mapping it; "
      "peak = highest 100 ms VmRSS sample under load; VmHWM at the end --")
    rows = [["proxy", "idle", "anon", "file", "Pss", "peak", "VmHWM"]]
    for name, r in s["rss"].items():
        rows.append([f"{name} ({r['data_plane']})", f"{r['idle_mb']:.1f}", f"{r['idle_anon_mb']:.1f}",
                     f"{r['idle_file_mb']:.1f}", f"{r['idle_pss_mb']:.1f}", f"{r['load_peak_mb']:.1f}",
                     f"{r['vmhwm_mb']:.1f}"])
    table(rows, file)
    p()
    p("-- bundled / Envoy: below 1 means bundled is better, except max_rps and rps_per_core --")
    keys = ([f"added_{q}@{load}" for load in rates for q in PCTS]
            + [f"cpu_per_1k@{load}" for load in rates]
            + ["cpu_per_1k@max", "max_rps", "rps_per_core@max"])
    base = "mtls_vs_base" in s["ratios"]
    rows = [["figure", "mTLS", "plaintext"] + (["mTLS vs base", "plaintext vs base"] if base else [])]
    for k in keys:
        rows.append([k, fmt(s["ratios"]["mtls"].get(k), ".2f"),
                     fmt(s["ratios"]["plaintext"].get(k), ".2f")]
                    + ([fmt(s["ratios"]["mtls_vs_base"].get(k), ".2f"),
                        fmt(s["ratios"]["plaintext_vs_base"].get(k), ".2f")] if base else []))
    for k, v in s["ratios"]["rss"].items():
        rows.append([f"rss_{k}", fmt(v, ".2f"), ""] + (["", ""] if base else []))
    table(rows, file)
    if base:
        p("   (vs base: this build / the --proxy-base build, bundled pair against bundled pair)")
    p()
    p("-- targets (the issue's) --")
    for t in s["targets"]:
        val = f"bundled {fmt(t['bundled'], '.1f')} vs Envoy {fmt(t['envoy'], '.1f')}"
        if t["ratio"] is not None:
            val += f" (ratio {t['ratio']:.2f})"
        p(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {val}")
    ev = meta["evidence"]
    p()
    p(f"path check: {ev['verdict']}")
    for dp, c in ev["counters"].items():
        p(f"  {dp}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


# --- main -------------------------------------------------------------------------------------


def version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[-1] if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def git_state() -> dict:
    """The commit and the files modified in the working tree (read-only git)."""
    def git(*args: str) -> str:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
            return out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "modified_files": git("status", "--porcelain").splitlines(),
    }


def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gov = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "governor": gov.read_text().strip() if gov.exists() else None,
        "clocksource": Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .read_text().strip(),
    }


def report(path: str) -> int:
    """Prints the tap section of an earlier run's JSON again, summarized as this version does
    (the runs are kept whole in the file): a run of an older version gets today's verdict."""
    with open(path) as f:
        saved = json.load(f)
    settings = saved["meta"]["settings"]
    if not settings.get("tap"):
        raise SystemExit(f"{path}: not a --tap run (meta.settings.tap)")
    if any(p.startswith("C2") for p in settings["paths"]):
        add_base_pair()
    for p in [p for p in PATHS if p not in settings["paths"]]:
        del PATHS[p]
    control = settings.get("tap_control", False)
    tap = summarize_tap(saved["runs"], settings["rates"] + ["max"], {}, control, settings["seed"])
    print(f"{path}: {settings['rounds']} rounds of {settings['rate_seconds']} s, started "
          f"{saved['meta']['started']}")
    print_tap_report(tap, settings["rates"], settings["rounds"], settings["tap_max_rps"])
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return report(sys.argv[2])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="bench_proxy.py --report FILE.json: print a --tap run's "
                                 "tap section again from its JSON, as this version summarizes it")
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--proxy-base", help="another switchyard-proxy build, run as a third pair "
                    "(C2, C2t) interleaved with the others and reported as a ratio")
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--out", required=True, help="JSON results file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rates", default="500,2000", help="fixed rates, requests per second")
    ap.add_argument("--rate-seconds", type=float, default=8)
    ap.add_argument("--max-seconds", type=float, default=10)
    ap.add_argument("--warmup-seconds", type=float, default=2)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--body", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=20240521)
    ap.add_argument("--pin", action="store_true", help="taskset: client, control plane, tap CLIs and this harness on --client-cpu; proxies and upstream on --sut-cpu")
    ap.add_argument("--client-cpu", default="0")
    ap.add_argument("--sut-cpu", default="1")
    ap.add_argument("--observer-idle", action="store_true",
                    help="run the control plane, the tap CLIs and this harness's tap readers under "
                    "SCHED_IDLE (chrt --idle), so that they take only CPU the client leaves, as an "
                    "operator on another node would")
    ap.add_argument("--paths", default="",
                    help="the sidecar paths to run, comma-separated (B2,B2t,E2,E2t, and C2,C2t "
                    "with --proxy-base); the direct path D always runs; default: every path. "
                    "Every sidecar still starts, so memory is measured for all")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, bootstraps)")
    ap.add_argument("--tap", action="store_true",
                    help="also run every (sidecar path, load) with both sidecars of its pair tapped "
                    "(`switchyard tap pod/<pod>`), shuffled with the untapped runs")
    ap.add_argument("--tap-control", action="store_true",
                    help="with --tap: run the tapped arm without a tap but prepared as a tapped run "
                    "is (warm-ups, pauses), so the report reads the bench's own resolution")
    ap.add_argument("--tap-max-rps", type=int, default=1000,
                    help="each tap's --max-rps (events a second it shows, 1 to 1000)")
    ap.add_argument("--tap-wait-seconds", type=float, default=15,
                    help="how long the access log may take to reach (or leave) the proxies")
    ap.add_argument("--tap-warmup-seconds", type=float, default=1,
                    help="max-rate run on each of the pair's paths after a tap starts or ends")
    a = ap.parse_args()
    if a.tap_control and not a.tap:
        raise SystemExit("--tap-control needs --tap")
    if a.pin and not shutil.which("taskset"):
        raise SystemExit("--pin needs taskset")
    if a.observer_idle and not shutil.which("chrt"):
        raise SystemExit("--observer-idle needs chrt")
    if a.pin:
        # This harness reads the taps' output and polls the proxies: the observer's side.
        os.sched_setaffinity(0, {int(a.client_cpu)})
    rates = [r.strip() for r in a.rates.split(",") if r.strip()]
    if a.proxy_base:
        add_base_pair()
    if a.paths:
        keep = {p.strip() for p in a.paths.split(",") if p.strip()}
        known = [p for p in PATHS if p != "D"]
        if keep - set(known):
            raise SystemExit(f"--paths: {sorted(keep - set(known))} unknown; known: {', '.join(known)}")
        for p in known:
            if p not in keep:
                del PATHS[p]
    loads = rates + ["max"]

    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    bench = Bench(a, workdir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.time()
    try:
        log(f"starting the app, `switchyard local` and four sidecars in {workdir}")
        bench.start()
        time.sleep(1.0)
        idle = {p: {k: status_kib(pid, k) for k in ("VmRSS", "RssAnon", "RssFile")}
                for p, pid in bench.sidecar_pids.items()}
        for p, pid in bench.sidecar_pids.items():
            idle[p]["Pss"] = pss_kib(pid)
        log("idle VmRSS (KiB): " + ", ".join(f"{k} {v['VmRSS']}" for k, v in idle.items()))
        # The Envoy wrapper in .venv execs the real binary; record what actually runs.
        exes = {p: os.readlink(f"/proc/{pid}/exe") for p, pid in bench.sidecar_pids.items()}
        for path in PATHS:
            log(f"warm-up {path} ({a.warmup_seconds:g} s, max rate)")
            w = bench.run(path, "max", a.warmup_seconds)
            if w["flags"]:
                log(f"warm-up {path}: {w['flags']}")
        runs = []
        shuffler = random.Random(a.seed)
        if a.tap:
            # Every sidecar path twice, tapped and not; D once.
            plan = [(path, load, tapped) for load in loads for path in PATHS
                    for tapped in ((False, True) if PATHS[path][1] else (False,))]
        else:
            plan = [(path, load) for load in loads for path in PATHS]
        for rnd in range(1, a.rounds + 1):
            order = plan[:]
            shuffler.shuffle(order)
            for i, (path, load, *tap) in enumerate(order, 1):
                secs = a.max_seconds if load == "max" else a.rate_seconds
                if not a.tap:
                    r = bench.run(path, load, secs)
                elif tap[0]:
                    r = bench.run_tapped(path, load, secs)
                    if r is None:
                        continue
                else:
                    r = bench.run_untapped(path, load, secs)
                r["round"] = rnd
                r["order"] = i
                runs.append(r)
                lat = r["latency_us"]
                tapped = ""
                if a.tap and r["tap"]["active"]:
                    tapped = " tap " + "+".join(str(n) for n in r["tap"]["events"].values()) + " events"
                log(f"round {rnd}/{a.rounds} #{i:>2} {path:<4} {load:>5}: {r['rps']:>7.0f} rps  "
                    f"p50 {lat.get('p50', 0):>6.0f} p99 {lat.get('p99', 0):>6.0f} "
                    f"p99.9 {lat.get('p99.9', 0):>6.0f} µs  pair CPU {r['pair_cpu_seconds']:.2f} s"
                    + tapped + (f"  ! {r['flags']}" if r["flags"] else ""))
                time.sleep(0.3)
        hwm = {p: status_kib(pid, "VmHWM") for p, pid in bench.sidecar_pids.items()}
        counters = path_evidence(bench.app_port)
    finally:
        # Counters and logs are read above; stop everything started here.
        bench.stop_all()

    problems = []
    for dp, c in counters.items():
        # A plane whose mTLS path --paths left out carried no TLS to check.
        mtls_ran = any(pdp == dp and not host.endswith("-plain") for _, pdp, host in PATHS.values())
        if mtls_ran and c["server_inbound_tls_handshakes"] <= 0:
            problems.append(f"{dp}: the server saw no TLS handshake")
        if mtls_ran and c["client_tls_handshakes_mtls_cluster"] <= 0:
            problems.append(f"{dp}: the client never originated TLS to the meshed service")
        if c["client_tls_handshakes_plain_cluster"] != 0:
            problems.append(f"{dp}: the client originated TLS to the plaintext service")
    # The tables of the default run are the untapped runs'; the tapped ones get their own.
    summary = summarize([r for r in runs if not (a.tap and r["tap"]["active"])], idle, hwm, rates)
    if a.tap:
        summary["tap"] = summarize_tap(runs, loads, bench.tap_unsupported, a.tap_control, a.seed)
        for dp, why in bench.tap_unsupported.items():
            if dp == "envoy":
                problems.append(f"envoy: not tapped: {why}")
    foreign = [r["system"]["foreign_cpu_seconds"] / r["wall_seconds"] for r in runs]
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_seconds": time.time() - started,
        "settings": {
            "rounds": a.rounds, "rates": rates, "rate_seconds": a.rate_seconds,
            "max_seconds": a.max_seconds, "warmup_seconds": a.warmup_seconds, "conns": a.conns,
            "workers": a.workers, "body": a.body, "seed": a.seed, "pin": a.pin, "observer_idle": a.observer_idle, "paths": list(PATHS),
            "client_cpu": a.client_cpu, "sut_cpu": a.sut_cpu, "keepalive": True,
            **({"tap": True, "tap_control": a.tap_control, "tap_max_rps": a.tap_max_rps,
                "tap_wait_seconds": a.tap_wait_seconds,
                "tap_warmup_seconds": a.tap_warmup_seconds,
                "tapped_proxies": "both sidecars of the measured path's pair, one session each"}
               if a.tap else {}),
            "access_mode": "permissive", "http": "HTTP/1.1 everywhere (client, between sidecars, to app)",
        },
        "machine": machine(),
        "versions": {
            "oha": version([a.oha, "--version"]),
            "envoy": version([a.envoy, "--version"]),
            "switchyard-proxy": version([a.proxy, "--version"]),
            "switchyard-proxy (base)": version([a.proxy_base, "--version"]) if a.proxy_base else None,
            "switchyard": version([a.switchyard, "--version"]),
        },
        "binaries": {"switchyard": a.switchyard, "proxy": a.proxy, "proxy_base": a.proxy_base,
                     "envoy": a.envoy, "oha": a.oha, "upstream": a.upstream},
        "foreign_cores_median": statistics.median(foreign) if foreign else 0.0,
        "foreign_cores_max": max(foreign, default=0.0),
        "sidecar_executables": exes,
        "git": git_state(),
        "steal_seconds_total": sum(r["system"]["steal_cpu_seconds"] for r in runs),
        "evidence": {"verdict": "OK" if not problems else "; ".join(problems), "counters": counters},
    }
    print_report(summary, meta, rates)
    if a.tap:
        print_tap_report(summary["tap"], rates, a.rounds, a.tap_max_rps)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1)
    log(f"wrote {a.out} ({meta['duration_seconds']:.0f} s)")
    if a.keep:
        log(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    # A missed target is a result, not an error; a path that is not what it claims is.
    return 0 if not problems else 2


if __name__ == "__main__":
    sys.exit(main())
