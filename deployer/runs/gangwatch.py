"""deployer's gang watcher: runs on every node of a multi-node job, beside the rank's container.

This file is not imported by deployer: runs.multinode copies it to each node (standard library
only, python3 >= 3.7) and starts it detached (setsid), so fail-fast works with the workstation gone.

Rank 0's watcher is the hub: it listens on MASTER_PORT + 1 and every worker's watcher connects to
it. Each watcher waits on its own container (`docker wait`). A rank that exits non-zero (or a
worker whose link to the hub stays down for LOST_S, or never says hello) makes the hub stop its own
container and tell every worker to stop theirs; the hub records that in the node's history log.
A worker that loses the hub for LOST_S stops its own container: the job cannot go on without rank 0.
Every wait is bounded, except the one on the container itself, which lasts as long as the job.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

LOST_S = 20.0  # a link to the hub (or a worker's) down this long means that node is gone
HELLO_S = 60.0  # every worker's watcher must have connected by then
START_S = 180.0  # the watcher starts before its container does; it gives up if that never happens
LINGER_S = 600.0  # after rank 0's container ended, how long the hub waits for the workers' reports


def log(msg):
    sys.stdout.write(time.strftime("%Y-%m-%dT%H:%M:%S ") + msg + "\n")
    sys.stdout.flush()


class Node:
    def __init__(self, cfg):
        self.cfg = cfg
        self.docker = list(cfg["docker"])
        self.cid = cfg["container_id"]
        self.rank = int(cfg["rank"])
        self.stop_all = cfg.get("policy", "stop-all") == "stop-all"
        self.exit_code = None
        self.exited = threading.Event()

    def docker_run(self, *args, timeout=60):
        try:
            return subprocess.run(self.docker + list(args), check=False, capture_output=True, timeout=timeout, text=True)
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"docker {args[0]} failed: {exc}")
            return None

    def wait_started(self):
        """Whether the container left the created state within START_S (`docker wait` on a created
        container returns at once, so it must not be asked before)."""
        end = time.monotonic() + START_S
        while time.monotonic() < end:
            res = self.docker_run("inspect", "--format", "{{.State.Status}}", self.cid)
            if res is not None and res.returncode != 0 and "no such" in res.stderr.lower():
                return False
            if res is not None and res.returncode == 0 and res.stdout.strip() != "created":
                return True
            time.sleep(0.2)
        return False

    def wait_container(self):
        """Block until the container ends; its exit code (None: it is gone)."""
        while True:
            res = self.docker_run("wait", self.cid, timeout=None)
            if res is not None and res.returncode == 0 and res.stdout.strip().isdigit():
                self.exit_code = int(res.stdout.strip())
                break
            res = self.docker_run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.cid)
            if res is not None and res.returncode != 0 and "no such" in res.stderr.lower():
                self.exit_code = None
                break
            if res is not None and res.returncode == 0 and res.stdout.split()[0] in ("exited", "dead"):
                self.exit_code = int(res.stdout.split()[1])
                break
            time.sleep(1.0)  # the daemon restarted or is busy: ask again
        log(f"rank {self.rank}'s container ended: exit {self.exit_code}")
        self.exited.set()

    def stop_own(self, why):
        if self.exited.is_set():
            return
        log(f"stopping rank {self.rank}: {why}")
        self.docker_run("stop", "-t", str(self.cfg.get("stop_grace", 5)), self.cid, timeout=120)


def send(sock, line):
    try:
        sock.sendall((line + "\n").encode())
        return True
    except OSError:
        return False


def keepalive(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, val in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 3), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), val)


class Hub:
    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.conns = {}  # rank -> socket
        self.reported = {}  # rank -> exit code (None: container gone)
        self.lost_since = {}  # rank -> monotonic time its link dropped
        self.failure = None  # what made the hub stop every rank
        self.first_failure = None  # the first rank that failed, stopped or not (policy ignore)
        self.hosts = node.cfg["hosts"]

    def fail(self, rank, why):
        with self.lock:
            if self.first_failure is None:
                self.first_failure = f"rank {rank} ({self.hosts[rank]}) {why}"
            if self.failure is not None or not self.node.stop_all:
                log(f"rank {rank}: {why}" + ("" if self.node.stop_all else " (policy ignore)"))
                return
            self.failure = f"rank {rank} ({self.hosts[rank]}) {why}"
            conns = list(self.conns.values())
        log(f"failure: {self.failure}; stopping all ranks")
        for sock in conns:
            send(sock, "stop")
        threading.Thread(target=self.node.stop_own, args=(self.failure,), daemon=True).start()
        self.record("stop", "gang watcher: stop all ranks", "ok", reason=self.failure + "; stopped all ranks")

    def record(self, action, command, result, **extra):
        """Append one record to this node's history log (one write(2) of one line, as deployer does)."""
        rec = {"id": uuid.uuid4().hex, "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
               "user": "gang-watcher@" + socket.gethostname(), "action": action, "name": self.node.cfg["name"],
               "image": self.node.cfg.get("image"), "image_id": None, "command": command, "result": result,
               "job_hosts": self.hosts, **extra}
        line = json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            fd = os.open(self.node.cfg["history"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log(f"cannot write the history record: {exc}")

    def record_end(self):
        """The job's end: every rank's exit code (None: lost or removed), and the cause of a failure."""
        with self.lock:
            codes = {0: self.node.exit_code, **self.reported}
            cause = self.first_failure
        ranks = [{"rank": r, "host": self.hosts[r], "exit_code": codes.get(r)} for r in range(len(self.hosts))]
        self.record("end", "gang watcher: the job ended", f"failed: {cause}" if cause else "ok", ranks=ranks)

    def serve(self, sock):
        buf = b""
        rank = None
        try:
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    words = line.decode(errors="replace").split()
                    if len(words) >= 2 and words[0] == "hello":
                        rank = int(words[1])
                        with self.lock:
                            self.conns[rank] = sock
                            self.lost_since.pop(rank, None)
                            failed = self.failure is not None
                        log(f"rank {rank}'s watcher connected")
                        if failed:
                            send(sock, "stop")
                        elif self.node.exited.is_set() and self.node.exit_code == 0:
                            send(sock, "done")
                    elif len(words) >= 3 and words[0] == "exit":
                        r = int(words[1])
                        code = None if words[2] == "gone" else int(words[2])
                        with self.lock:
                            self.reported[r] = code
                        if code != 0:
                            self.fail(r, "exited %s" % ("(container removed)" if code is None else code))
        except (OSError, ValueError):
            pass
        finally:
            with self.lock:
                if rank is not None and self.conns.get(rank) is sock:
                    del self.conns[rank]
                    if rank not in self.reported:
                        self.lost_since[rank] = time.monotonic()
            sock.close()

    def run(self):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("", int(self.node.cfg["gang_port"])))
        server.listen(64)
        server.settimeout(0.5)
        started = time.monotonic()
        threading.Thread(target=self.node.wait_container, daemon=True).start()
        workers = set(range(1, len(self.hosts)))
        ended_at = None
        while True:
            try:
                sock, _ = server.accept()
                keepalive(sock)
                threading.Thread(target=self.serve, args=(sock,), daemon=True).start()
            except TimeoutError:
                pass
            now = time.monotonic()
            if self.node.exited.is_set():
                if ended_at is None:
                    ended_at = now
                    code = self.node.exit_code
                    if code != 0:
                        self.fail(0, "exited %s" % ("(container removed)" if code is None else code))
                    else:
                        with self.lock:
                            conns = list(self.conns.values())
                        for sock in conns:
                            send(sock, "done")
                with self.lock:
                    pending = [r for r in workers if r not in self.reported and (r in self.conns or self.failure is None)]
                if not pending or now - ended_at > LINGER_S:
                    break
            with self.lock:
                lost = [r for r, t in self.lost_since.items() if now - t > LOST_S]
                silent = [r for r in workers if r not in self.conns and r not in self.reported
                          and r not in self.lost_since and now - started > HELLO_S]
            for r in lost:
                self.fail(r, f"lost: its watcher has not answered for {LOST_S:.0f}s")
            for r in silent:
                self.fail(r, "never connected: its watcher did not start")
            if lost or silent:
                with self.lock:
                    for r in lost + silent:
                        self.lost_since.pop(r, None)
                        self.reported.setdefault(r, None)
        self.record_end()
        log("hub done")


class Worker:
    def __init__(self, node):
        self.node = node
        self.sock = None
        self.done = threading.Event()  # the hub said rank 0 finished well: stop watching it

    def connect(self):
        sock = socket.create_connection((self.node.cfg["master_addr"], int(self.node.cfg["gang_port"])), 3)
        keepalive(sock)
        sock.settimeout(None)
        if not send(sock, f"hello {self.node.rank}"):
            raise OSError("hello not sent")
        return sock

    def listen(self, sock):
        buf = b""
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word = line.decode(errors="replace").strip()
                if word == "stop":
                    self.node.stop_own("the hub on rank 0 stopped the job")
                elif word == "done":
                    self.done.set()

    def run(self):
        threading.Thread(target=self.node.wait_container, daemon=True).start()
        lost_at = time.monotonic()
        reported = False
        while True:
            if self.sock is None:
                try:
                    self.sock = self.connect()
                    listener = threading.Thread(target=self.listen, args=(self.sock,), daemon=True)
                    listener.start()
                    log("connected to the hub")
                except OSError as exc:
                    self.sock = None
                    if self.done.is_set() and self.node.exited.is_set():
                        break
                    if time.monotonic() - lost_at > LOST_S and not self.done.is_set():
                        log(f"hub unreachable for {LOST_S:.0f}s ({exc})")
                        if self.node.stop_all:
                            self.node.stop_own("rank 0's watcher is gone")
                        if self.node.exited.wait(5) and not reported:
                            break
                        lost_at = time.monotonic()
                    time.sleep(1.0)
                    continue
            if self.node.exited.wait(0.5) and not reported:
                code = self.node.exit_code
                reported = send(self.sock, f"exit {self.node.rank} {'gone' if code is None else code}")
                if reported:
                    time.sleep(0.5)
                    break
            if not listener.is_alive():
                log("link to the hub dropped")
                self.sock.close()
                self.sock = None
                lost_at = time.monotonic()
        log("worker done")


def main():
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    node = Node(cfg)
    log(f"watching rank {node.rank} of {cfg['name']} (container {node.cid[:12]})")
    if not node.wait_started():
        log("the container never started (the start was undone): nothing to watch")
        return
    (Hub(node) if node.rank == 0 else Worker(node)).run()


if __name__ == "__main__":
    main()
