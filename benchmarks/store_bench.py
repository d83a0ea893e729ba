"""Store benchmark: the local store before and after object storage came in, and the cost of a publish on S3.

    .venv/bin/python benchmarks/store_bench.py                   # local: this tree vs BEFORE, 3 interleaved runs
    .venv/bin/python benchmarks/store_bench.py --before df99905 --repeats 5

1. Local store: 60 publishes of a 10-shard version (2,000 rows, zstd) at keep_versions 2, each read back under a
   lease, with this tree's `plasma_pipeline` and with the one at commit BEFORE (extracted from git into a temp
   folder), each in its own process, interleaved; wall and CPU seconds of that process.
2. Object storage: the same publishes into `s3://` on a moto S3 server served on one thread on loopback (as the
   tests do), with 1 and then 20 other assets in the store (retention reads every asset's history): requests per
   publish by HTTP method, wall and CPU seconds per publish (moto runs in this process, so CPU includes it).
   Loopback has no network latency: on S3 each request costs a round trip (~10-30 ms in-region), so requests per
   publish is the figure that carries over.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOCAL = """
import sys, time, tempfile
import pyarrow as pa
import plasma_pipeline.shards as m
from plasma_pipeline.shards import ShardStore, StoreConfig
assert m.__file__.startswith(sys.argv[1]), m.__file__
store = ShardStore(StoreConfig(max_rows_per_shard=200, keep_versions=2), root=tempfile.mkdtemp())
t = pa.table({"id": [str(i) for i in range(2000)], "text": ["some text " * 10] * 2000})
t0, c0 = time.perf_counter(), time.process_time()
for i in range(60):
    with store.writer("a") as w:
        w.write(t.append_column("v", pa.array([i] * 2000)))
        v = w.publish()
    with store.lease("a", v.id) as r:
        sum(x.num_rows for x in r.iter_tables())
print(f"{time.perf_counter() - t0:.2f} {time.process_time() - c0:.2f}")
"""


def local(before: str, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "archive", before, "plasma_pipeline"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        trees = {f"before ({before})": old, "this tree": str(REPO)}
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
        for _ in range(repeats):
            for name, tree in trees.items():
                out = subprocess.run([sys.executable, "-c", LOCAL, tree], env={**os.environ, "PYTHONPATH": tree},
                                     capture_output=True, text=True, check=True, cwd=tree).stdout.split()
                results[name].append((float(out[0]), float(out[1])))
        for name, runs in results.items():
            walls, cpus = [w for w, _ in runs], [c for _, c in runs]
            print(f"local store, {name}: 60 publish+read of 10 shards: wall {' / '.join(f'{w:.2f}' for w in walls)} s,"
                  f" CPU {' / '.join(f'{c:.2f}' for c in cpus)} s (mean {sum(cpus) / len(cpus):.2f})")


def objects() -> None:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import WSGIRequestHandler, make_server

    reqs: collections.Counter = collections.Counter()

    class Counting(WSGIRequestHandler):
        def log(self, *args, **kwargs):
            pass

        def log_request(self, *args, **kwargs):
            reqs[self.command] += 1

    srv = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False,
                      request_handler=Counting)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{srv.port}", PLASMA_STORE_CACHE=tempfile.mkdtemp())
    import pyarrow as pa
    import s3fs

    from plasma_pipeline.shards import ShardStore, StoreConfig

    s3fs.S3FileSystem(skip_instance_cache=True).mkdir("store-bench")
    store = ShardStore(StoreConfig(max_rows_per_shard=200, keep_versions=2), root="s3://store-bench/s")
    t = pa.table({"id": [str(i) for i in range(2000)], "text": ["some text " * 10] * 2000})

    def publish(asset: str, i: int):
        with store.writer(asset) as w:
            w.write(t.append_column("v", pa.array([i] * 2000)))
            return w.publish()

    made = 0
    for n_assets in (1, 20):
        for a in range(made, n_assets):
            publish(f"other/{a}", 0)
        made = n_assets
        for i in range(3):  # past keep_versions: every publish below also deletes a version
            publish("a", i)
        reqs.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(3, 13):
            publish("a", i)
        wall, cpu = (time.perf_counter() - t0) / 10, (time.process_time() - c0) / 10
        by = ", ".join(f"{k} {v / 10:g}" for k, v in sorted(reqs.items()))
        print(f"s3 (moto, loopback), {n_assets} other asset(s): per publish of 10 shards {sum(reqs.values()) / 10:g} "
              f"requests ({by}), wall {wall:.2f} s, CPU {cpu:.2f} s incl. moto")
    reqs.clear()
    with store.lease("a", store.current("a").id) as v:
        v.rows
    print(f"s3: lease + version (manifest only) {sum(reqs.values())} requests ({dict(reqs)})")
    srv.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="df99905", help="commit of the local store to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    local(args.before, args.repeats)
    objects()


if __name__ == "__main__":
    main()
