"""Objects under a store root on object storage, with the conditional writes that locks and leases rest on.

Object stores have no rename and no flock, but S3 has had atomic conditional writes since 2024: `PutObject` with
`If-None-Match: *` creates a key only if it is absent, and with `If-Match: <etag>` replaces it only if nobody
changed it since it was read (compare-and-swap). Delta Lake (delta-rs), Lance and Terraform's S3 state lock commit
the same way. Everything else (shards, manifests) is a plain PUT, which S3 makes visible whole or not at all.

`ObjectLock` is the per-asset writer lock: one object holding {owner, expires}; a holder renews it by
compare-and-swap every ttl/3 (a heartbeat thread), hands it back by writing `released`, and a killed holder's lock
is taken over by compare-and-swap once `expires` has passed, so nobody waits more than one TTL for a dead holder.
`ObjectLease` is a read lease: an object of its own under `.leases/`, renewed the same way and deleted at the end;
a lease whose `expires` has passed pins nothing. Both use the hosts' wall clocks: keep them in sync (NTP) to well
within the TTL.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Schemes whose conditional writes are implemented here; others fail at store construction, naming the scheme.
CONDITIONAL_SCHEMES = ("s3", "s3a")
OBJECT_SCHEMES = ("s3", "s3a", "gs", "gcs")


def split_url(root: str) -> tuple[str, str]:
    """`s3://bucket/prefix` → ("s3", "bucket/prefix"); a plain path → ("", path)."""
    if "://" not in root:
        return "", root
    scheme, rest = root.split("://", 1)
    return scheme.lower(), rest.strip("/")


class LockLost(RuntimeError):
    """The writer lock expired or was taken over while this process held it: it must not publish."""


class LockTimeout(TimeoutError):
    pass


def _precondition_failed(e: Exception) -> bool:
    code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
    # 409 ConditionalRequestConflict: a concurrent conditional write to the same key is in flight; S3 says retry.
    # NoSuchKey on If-Match: the object we held is gone (an expired lease swept by retention).
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404")


class ObjectRoot:
    """An fsspec filesystem and the prefix of the store under it; keys are '/'-joined, relative to that prefix."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        scheme, rest = split_url(url)
        if scheme not in OBJECT_SCHEMES:
            raise ValueError(f"root: unsupported scheme {scheme!r} in {url!r}; use a path or one of "
                             f"{', '.join(s + '://' for s in OBJECT_SCHEMES)} or file://")
        if scheme not in CONDITIONAL_SCHEMES:
            raise NotImplementedError(
                f"root {url!r}: the store's locks need conditional writes, implemented for S3 only so far "
                f"(GCS would use ifGenerationMatch); use s3:// or a local path")
        if not rest:
            raise ValueError(f"root: {url!r} names no bucket")
        self.url = f"{scheme}://{rest}"
        self.bucket, _, self.prefix = rest.partition("/")
        import fsspec  # imported here: a local store never pays for it

        opts = {"use_listings_cache": False, **(storage_options or {})}
        # One filesystem per store object: fsspec's instance cache would share an event loop across a fork.
        self.fs = fsspec.filesystem(scheme, skip_instance_cache=True, **opts)

    # -- names ----------------------------------------------------------------------------------------------
    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def path(self, rel: str) -> str:
        """bucket/prefix/rel, as fsspec names it."""
        return f"{self.bucket}/{self.key(rel)}"

    def url_of(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    # -- plain operations -------------------------------------------------------------------------------------
    def get(self, rel: str) -> bytes | None:
        return self.get_tagged(rel)[0]

    def get_tagged(self, rel: str) -> tuple[bytes | None, str | None]:
        """(content, etag), or (None, None) when the object does not exist; one GET, so both match."""
        from fsspec.asyn import sync

        return sync(self.fs.loop, self._get_tagged, rel)

    async def _get_tagged(self, rel: str):
        await self.fs.set_session()
        s3 = await self.fs.get_s3(self.bucket)
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=self.key(rel))
        except s3.exceptions.NoSuchKey:
            return None, None
        async with resp["Body"] as body:
            data = await body.read()
        return data, resp["ETag"]

    def put(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self.path(rel), data)

    def put_if(self, rel: str, data: bytes, etag: str | None) -> str | None:
        """Write `rel` only if it is absent (etag None) or still has `etag`; the new etag, or None if it did not."""
        from fsspec.asyn import sync

        return sync(self.fs.loop, self._put_if, rel, data, etag)

    async def _put_if(self, rel: str, data: bytes, etag: str | None):
        await self.fs.set_session()
        s3 = await self.fs.get_s3(self.bucket)
        cond = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        try:
            resp = await s3.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, **cond)
        except s3.exceptions.ClientError as e:
            if _precondition_failed(e):
                return None
            raise
        return resp["ETag"]

    def upload(self, local: Path, rel: str) -> None:
        self.fs.put_file(str(local), self.path(rel))

    def download(self, rel: str, local: Path) -> None:
        self.fs.get_file(self.path(rel), str(local))

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path(rel), mode)

    def sizes(self, rel_dir: str) -> dict[str, int]:
        """{path relative to rel_dir: bytes} of every object below rel_dir (one paginated listing)."""
        base = self.path(rel_dir).rstrip("/") + "/"
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {k[len(base):]: int(v["size"]) for k, v in found.items() if v.get("type") != "directory"}

    def children(self, rel_dir: str) -> list[str]:
        """Names directly below rel_dir (objects and common prefixes)."""
        base = self.path(rel_dir).rstrip("/")
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
        except FileNotFoundError:
            return []

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, rel_dir: str, first: str | None = None) -> None:
        """Remove every object below rel_dir, `first` (e.g. the manifest) before the rest, so a delete killed
        halfway leaves no manifest over missing shards."""
        if first is not None:
            self.delete(f"{rel_dir}/{first}")
        keys = [self.path(f"{rel_dir}/{k}") for k in self.sizes(rel_dir)]
        if keys:
            self.fs.rm(keys)


def _stamp(ttl_s: float, **extra: Any) -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + ttl_s,
                       **extra}).encode()


def expired(data: bytes | None, now: float | None = None) -> bool:
    if data is None:
        return True
    try:
        rec = json.loads(data)
    except ValueError:  # a record we cannot read protects nothing
        return True
    return bool(rec.get("released")) or float(rec.get("expires", 0)) < (now or time.time())


class _Heartbeat:
    """Renews one object by compare-and-swap every ttl/3 until stopped; `lost` once a renewal fails."""

    def __init__(self, root: ObjectRoot, rel: str, etag: str, ttl_s: float, extra: dict[str, Any], since: float):
        self.root, self.rel, self.etag, self.ttl_s, self.extra = root, rel, etag, ttl_s, extra
        self.lost = False
        # `since` is taken before the stamp was written, so this deadline never outlasts the stored `expires`:
        # once another process may take the object over, `held()` is already false here.
        self.deadline = since + ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {rel}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                deadline = time.time() + self.ttl_s
                new = self.root.put_if(self.rel, _stamp(self.ttl_s, **self.extra), self.etag)
            except Exception:  # noqa: BLE001 - a failed renewal is retried; the deadline decides
                continue
            if new is None:
                self.lost = True
                return
            self.etag, self.deadline = new, deadline

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        return self.etag

    def held(self) -> bool:
        return not self.lost and time.time() < self.deadline


class ObjectLock:
    """The writer lock of one asset on object storage (see the module docstring)."""

    def __init__(self, root: ObjectRoot, rel: str, ttl_s: float = 60.0, timeout: float = 600.0, poll_s: float = 0.2):
        self.root, self.rel, self.ttl_s, self.timeout, self.poll_s = root, rel, ttl_s, timeout, poll_s
        self.owner = uuid.uuid4().hex
        self._beat: _Heartbeat | None = None

    def acquire(self) -> None:
        give_up = time.monotonic() + self.timeout
        while True:
            data, etag = self.root.get_tagged(self.rel)
            if expired(data):
                since = time.time()
                new = self.root.put_if(self.rel, _stamp(self.ttl_s, owner=self.owner), etag)
                if new is not None:
                    self._beat = _Heartbeat(self.root, self.rel, new, self.ttl_s, {"owner": self.owner}, since)
                    return
                continue  # someone else won that race: look again
            if time.monotonic() > give_up:
                raise LockTimeout(f"writer lock {self.root.url_of(self.rel)} still held after {self.timeout:.0f} s "
                                  f"by {data.decode(errors='replace')}")
            time.sleep(self.poll_s)

    def check(self) -> None:
        """Raise LockLost unless this process still holds the lock (call right before a write it guards)."""
        if self._beat is None or not self._beat.held():
            raise LockLost(f"writer lock {self.root.url_of(self.rel)} expired or was taken over "
                           f"(ttl {self.ttl_s:.0f} s): not publishing")

    def release(self) -> None:
        if self._beat is None:
            return
        etag = self._beat.stop()
        self._beat = None
        # Only our own record is released: if ours was taken over, the new holder's stays untouched.
        self.root.put_if(self.rel, _stamp(0, owner=self.owner, released=True), etag)

    def __enter__(self) -> "ObjectLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


LEASE_DIR = ".leases"


class ObjectLease:
    """A read lease on one version: `<asset>/.leases/<version>.<uuid>.lease`, renewed while held."""

    def __init__(self, root: ObjectRoot, asset_rel: str, version_id: str, ttl_s: float = 60.0):
        self.root, self.ttl_s = root, ttl_s
        self.rel = f"{asset_rel}/{LEASE_DIR}/{version_id}.{uuid.uuid4().hex}.lease"
        self._beat: _Heartbeat | None = None

    def __enter__(self) -> "ObjectLease":
        since = time.time()
        etag = self.root.put_if(self.rel, _stamp(self.ttl_s), None)
        self._beat = _Heartbeat(self.root, self.rel, etag, self.ttl_s, {}, since)
        return self

    def __exit__(self, *exc) -> None:
        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        self.root.delete(self.rel)


def leased_versions(root: ObjectRoot, asset_rel: str, sweep: bool = True) -> dict[str, int]:
    """{version id: unexpired leases}; expired lease objects (killed holders) are deleted when `sweep`."""
    out: dict[str, int] = {}
    for name in _iter_leases(root, asset_rel):
        rel = f"{asset_rel}/{LEASE_DIR}/{name}"
        if expired(root.get(rel)):
            if sweep:
                root.delete(rel)
            continue
        vid = name.split(".", 1)[0]
        out[vid] = out.get(vid, 0) + 1
    return out


def _iter_leases(root: ObjectRoot, asset_rel: str) -> Iterator[str]:
    for name in root.children(f"{asset_rel}/{LEASE_DIR}"):
        if name.endswith(".lease"):
            yield name
