"""Shared plumbing of the bench scripts: building, starting and always stopping processes (by
PID), pinning to cores, and reading a process's memory."""

import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CHILDREN = []

# Townhall has no built-in key pair: every bench run gives the server and townhall-load (which
# mints its tokens) the same fresh pair through the environment its children inherit.
os.environ.setdefault("TOWNHALL_API_KEY", "bench")
os.environ.setdefault("TOWNHALL_API_SECRET", os.urandom(32).hex())


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def raise_fd_limit():
    """Soft open-files limit up to the hard limit (this machine caps it at 20,000)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(cmd, log_path, core=None):
    """Starts a process (pinned to `core` if given) that `stop_all` will stop."""
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core)] + cmd
    out = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=raise_fd_limit)
    CHILDREN.append(proc)
    return proc


def stop_all():
    """Stops every process started here: SIGTERM, then SIGKILL after 5 s."""
    for proc in reversed(CHILDREN):
        if proc.poll() is None:
            proc.terminate()
    deadline = time.time() + 5
    for proc in CHILDREN:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                r.read(64)
                return True
        except Exception:
            time.sleep(0.3)
    return False


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def build(profile, bins=("townhall", "townhall-load")):
    """Builds `bins` and returns the directory they are in (honouring CARGO_TARGET_DIR)."""
    args = ["cargo", "build", "-q"] + [arg for b in bins for arg in ("--bin", b)]
    if profile == "release":
        args.append("--release")
    log(f"building ({profile})")
    subprocess.run(args, cwd=ROOT, check=True)
    return (ROOT / os.environ.get("CARGO_TARGET_DIR", "target")) / profile


def workdir(name):
    work = ROOT / "bench" / "work" / time.strftime(f"{name}-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o777)
    return work


def results_dir():
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    return out


def machine():
    import platform
    return f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}"


# Egress and join benchmarks drive every connection from 127.0.0.0/24: lift the per-subnet
# shield limits (and the node's admission limits) so they measure serving, not refusing.
BENCH_SHIELD = """max_listeners = 1000000
joins_per_second = 1000000
join_burst = 1000000
requests_per_subnet = 1000000
request_burst_per_subnet = 1000000
max_connections_per_subnet = 1000000
"""


def start_townhall(bin_dir, work, port, extra_config="", core=0, relax_shield=True):
    """Starts Townhall with its demo space; returns the process once it is ready. With
    `relax_shield` (egress benchmarks) the per-subnet and admission limits are lifted."""
    shield = BENCH_SHIELD if relax_shield else ""
    (work / "townhall.toml").write_text(f'listen = "127.0.0.1:{port}"\n{shield}{extra_config}')
    proc = start([str(bin_dir / "townhall"), "serve", "--config", str(work / "townhall.toml")],
                 work / "townhall.log", core=core)
    if not wait_http(f"http://127.0.0.1:{port}/readyz"):
        raise RuntimeError("townhall did not start; see " + str(work / "townhall.log"))
    return proc


def last_json(path):
    import json
    lines = [l for l in Path(path).read_text().splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON report in {path}")
    return json.loads(lines[-1])


def thread_ticks(pid, prefix):
    """{thread name: user + system CPU ticks so far} of a process's threads named `prefix`..."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith(prefix):
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = int(fields[11]) + int(fields[12])
    return out


def cpu_ticks(pid):
    """User + system CPU of a process so far, in clock ticks (1/100 s)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
