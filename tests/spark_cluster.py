"""A standalone Spark cluster on loopback, for the tests and benchmarks/bench_spark.py.

    with spark_cluster.start(folder, workers=2) as cluster:
        cluster.master    # "spark://127.0.0.1:PORT"
        cluster.env       # the environment to run a driver with (SPARK_CONF_DIR, SPARK_LOCAL_IP...)

A master and ``workers`` workers (``cores`` each), each its own JVM started with the PySpark
install's ``bin/spark-class``, listening on 127.0.0.1 only, logs and work folders under
``folder``. ``conf`` lines go to the cluster's ``spark-defaults.conf`` (read by drivers run
with ``cluster.env`` too). Leaving the block stops every JVM, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass
class Cluster:
    master: str
    env: dict[str, str]
    folder: Path
    ui: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@contextlib.contextmanager
def start(folder: Path, *, workers: int = 2, cores: int = 1, memory: str = "1g", conf: dict[str, str] | None = None,
          env: dict[str, str] | None = None, timeout: float = 120) -> Iterator[Cluster]:
    home = spark_home()
    folder.mkdir(parents=True, exist_ok=True)
    conf_dir = folder / "conf"
    conf_dir.mkdir(exist_ok=True)
    settings = {"spark.driver.host": "127.0.0.1", **(conf or {})}
    (conf_dir / "spark-defaults.conf").write_text("".join(f"{k} {v}\n" for k, v in settings.items()))
    env = {**(os.environ if env is None else env), "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_CONF_DIR": str(conf_dir), "SPARK_LOG_DIR": str(folder / "logs"), "SPARK_NO_DAEMONIZE": "1",
           "SPARK_DAEMON_MEMORY": "256m"}
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    spark_class = str(home / "bin" / "spark-class")
    cmds = [[spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)]]
    for i in range(1, workers + 1):
        cmds.append([spark_class, "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", str(cores),
                     "--memory", memory, "--webui-port", str(free_port()), "--work-dir", str(folder / f"worker-{i}")])
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for n, cmd in enumerate(cmds):
            logs.append(open(folder / f"jvm-{n}.log", "wb"))
            procs.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout
        alive = 0
        while alive < workers:
            dead = [p for p in procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join((folder / f"jvm-{n}.log").read_text(errors="replace")[-1500:] for n in range(len(cmds)))
                raise RuntimeError(f"the Spark cluster did not start ({len(dead)} JVM(s) exited, {alive} worker(s) registered):\n{tails}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as r:
                    alive = json.load(r).get("aliveworkers", 0)
            except OSError:
                pass
            time.sleep(1)
        yield Cluster(master, env, folder, f"http://127.0.0.1:{ui}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
