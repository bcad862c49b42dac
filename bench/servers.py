"""The servers under test: iocomp (each engine backend), nginx and lighttpd,
each started on 127.0.0.1 with a performance-minded configuration, and the
/proc readings the harness takes of them (CPU ticks, resident memory)."""

import os
import signal
import socket
import subprocess
import time

HZ = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, name, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"bench: {name} exited with {proc.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on {name}'s port {port} after {limit:.0f} s")


def tree(pid):
    """pid and every descendant (nginx's workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu(pid):
    """(user, system) CPU seconds of the process tree."""
    u = s = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            u += int(fields[11])
            s += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return u / HZ, s / HZ


def rss(pid):
    """Resident bytes of the process tree (VmRSS summed)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Server:
    """One server process; `start` and `stop` may be called repeatedly."""

    def __init__(self, name, kind, h, backend=None, binary=None):
        self.name, self.kind, self.h, self.backend = name, kind, h, backend
        # An iocomp variant (another build, for an A/B of a lever) runs its own binary.
        self.binary = binary or getattr(h, "iocomp", None)
        self.proc = None
        self.port = None
        self.tls_port = None

    def start(self, cpu_list=None, capacity=20000):
        self.port = free_port()
        self.tls_port = free_port() if getattr(self.h, "tls_cert", None) and self.kind in ("iocomp", "nginx") else None
        work = os.path.join(self.h.work, self.name)
        os.makedirs(work, exist_ok=True)
        argv = self.argv(work, capacity)
        if cpu_list is not None:
            argv = ["taskset", "-c", cpu_list] + argv
        log = open(os.path.join(work, "stderr.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        wait_port(self.port, self.proc, self.name)

    def argv(self, work, capacity):
        w = str(self.h.workers)
        if self.kind == "iocomp":
            return [self.binary, "serve", self.h.www, "--bind", f"127.0.0.1:{self.port}", "--threads", w,
                    "--quiet", "--backend", self.backend, "--max-conns", str(capacity), "--idle-timeout", "600s",
                    "--open-file-cache-valid", "1s"] + self.tls_args()
        if self.kind == "nginx":
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as f:
                f.write(f"""daemon off; master_process on; worker_processes {w}; pid {work}/pid;
error_log {work}/error.log; worker_rlimit_nofile {capacity + 1000}; user root;
events {{ worker_connections {capacity}; multi_accept on; }}
http {{ access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 100000000;
  keepalive_timeout 600s; open_file_cache max=10000 inactive=60s; open_file_cache_valid 1s;
  types {{ application/octet-stream bin; }} default_type application/octet-stream;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work}; uwsgi_temp_path {work};
  scgi_temp_path {work};
  server {{ listen 127.0.0.1:{self.port} backlog=4096; root {self.h.www}; }}
{self.nginx_tls()} }}
""")
            return [self.h.nginx, "-c", conf, "-p", work]
        if self.kind == "lighttpd":
            conf = os.path.join(work, "lighttpd.conf")
            with open(conf, "w") as f:
                f.write(f"""server.document-root = "{self.h.www}"
server.port = {self.port}
server.bind = "127.0.0.1"
server.max-worker = {self.h.workers if self.h.workers > 1 else 0}
server.max-fds = {2 * capacity + 1000}
server.max-connections = {capacity}
server.max-keep-alive-requests = 100000000
server.max-keep-alive-idle = 600
server.listen-backlog = 4096
server.network-backend = "sendfile"
server.errorlog = "{work}/error.log"
mimetype.assign = ( ".bin" => "application/octet-stream" )
""")
            return [self.h.lighttpd, "-D", "-f", conf]
        raise ValueError(self.kind)

    def tls_args(self):
        """iocomp's TLS listener: no tickets (no resumption), and no kernel TLS, so
        that iocomp, like nginx, encrypts in user space (the issue's comparison)."""
        if not self.tls_port:
            return []
        return ["--tls-bind", f"127.0.0.1:{self.tls_port}", "--tls-cert", self.h.tls_cert,
                "--tls-key", self.h.tls_key, "--tls-no-tickets", "--ktls", "off"]

    def nginx_tls(self):
        """nginx's TLS server block: TLS 1.3 with AES-128-GCM only, no
        resumption (no tickets, no session cache), as the iocomp side runs."""
        if not self.tls_port:
            return ""
        return f"""  server {{ listen 127.0.0.1:{self.tls_port} ssl backlog=4096; root {self.h.www};
    ssl_certificate {self.h.tls_cert}; ssl_certificate_key {self.h.tls_key};
    ssl_protocols TLSv1.3; ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    ssl_session_tickets off; ssl_session_cache off; }}"""

    def tls_url(self, path):
        return f"https://127.0.0.1:{self.tls_port}/{path}"

    def stop(self):
        if self.proc is None:
            return
        sig = signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM
        try:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def cpu(self):
        return cpu(self.proc.pid)

    def rss(self):
        return rss(self.proc.pid)

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/{path}"


def versions(h):
    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    return {
        "iocomp": out([h.iocomp, "--version"]),
        "nginx": out([h.nginx, "-v"]),
        "lighttpd": out([h.lighttpd, "-v"]),
        "wrk": out(["wrk", "-v"]),
        "curl": out(["curl", "--version"]),
        "kernel": os.uname().release,
        "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
                    "unknown"),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
