# The real S3 client of `kdfs bench`'s s3 scenario (bench/src/scenario/s3.rs): boto3,
# timed from inside Python so interpreter start and imports are not counted. Prints one
# JSON object. argv: endpoint access_key secret_key mode args...
#
#   put BUCKET KEY PATH single|multipart  PUT a file (one PutObject, or upload_file's
#                                         multipart: 8 MiB parts, 10 threads)
#   get BUCKET KEY                        GET an object, SHA-256 of what arrived
#   small BUCKET COUNT SIZE CLIENTS       COUNT objects of SIZE bytes PUT, then GET and
#                                         verified, by CLIENTS processes (no shared GIL)
#   drop BUCKET                           delete every key and the bucket
import hashlib
import json
import multiprocessing
import os
import sys
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

ENDPOINT, ACCESS, SECRET, MODE = sys.argv[1:5]
ARGS = sys.argv[5:]
MIB = 1 << 20


def client(pool=10):
    return boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(max_pool_connections=pool, retries={"max_attempts": 1}))


def cpu():
    return time.process_time()


def ensure_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


def put(bucket, key, path, how):
    s3 = client()
    ensure_bucket(s3, bucket)
    c0, t0 = cpu(), time.monotonic()
    if how == "single":
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f)
    else:
        s3.upload_file(path, bucket, key, Config=TransferConfig(multipart_threshold=8 * MIB))
    seconds, cpu_s = time.monotonic() - t0, cpu() - c0
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    import base64
    sha = base64.b64decode(head.get("ChecksumSHA256", "")).hex()
    return {"seconds": seconds, "client_cpu_s": cpu_s, "size": head["ContentLength"], "sha256": sha}


def get(bucket, key):
    s3 = client()
    c0, t0 = cpu(), time.monotonic()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    h, n = hashlib.sha256(), 0
    for piece in iter(lambda: body.read(MIB), b""):
        h.update(piece)
        n += len(piece)
    return {"seconds": time.monotonic() - t0, "client_cpu_s": cpu() - c0, "size": n,
            "sha256": h.hexdigest()}


_worker = {}


def _init(barrier):
    _worker["s3"] = client(1)
    _worker["barrier"] = barrier


def _ready(_):
    _worker["barrier"].wait()


def _puts(job):
    bucket, keys, size = job
    s3, lat, hashes = _worker["s3"], [], {}
    c0 = cpu()
    for k in keys:
        data = os.urandom(size)
        hashes[k] = hashlib.sha256(data).hexdigest()
        t = time.monotonic()
        s3.put_object(Bucket=bucket, Key=k, Body=data)
        lat.append(time.monotonic() - t)
    return lat, hashes, cpu() - c0


def _gets(job):
    bucket, hashes = job
    s3, lat, bad = _worker["s3"], [], []
    c0 = cpu()
    for k, want in hashes.items():
        t = time.monotonic()
        data = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        lat.append(time.monotonic() - t)
        if hashlib.sha256(data).hexdigest() != want:
            bad.append(k)
    return lat, bad, cpu() - c0


def pct(lat, p):
    lat = sorted(lat)
    return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None


def small(bucket, count, size, clients):
    ensure_bucket(client(), bucket)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    keys = [f"small/{i:06d}" for i in range(count)]
    shares = [keys[i::clients] for i in range(clients)]
    with ctx.Pool(clients, initializer=_init, initargs=(barrier,)) as pool:
        # Every process started and holds its client before the clock starts.
        pool.map(_ready, range(clients), chunksize=1)
        t0 = time.monotonic()
        puts = pool.map(_puts, [(bucket, s, size) for s in shares], chunksize=1)
        put_s = time.monotonic() - t0
        hashes = [h for _, h, _ in puts]
        t0 = time.monotonic()
        gets = pool.map(_gets, [(bucket, h) for h in hashes], chunksize=1)
        get_s = time.monotonic() - t0
    bad = [k for _, b, _ in gets for k in b]
    if bad:
        raise SystemExit(f"{len(bad)} objects read back with another SHA-256, e.g. {bad[0]}")
    put_lat = [x for l, _, _ in puts for x in l]
    get_lat = [x for l, _, _ in gets for x in l]
    return {"put_seconds": put_s, "get_seconds": get_s,
            "put_p50_ms": pct(put_lat, 0.5), "put_p99_ms": pct(put_lat, 0.99),
            "get_p50_ms": pct(get_lat, 0.5), "get_p99_ms": pct(get_lat, 0.99),
            "put_client_cpu_s": sum(c for _, _, c in puts),
            "get_client_cpu_s": sum(c for _, _, c in gets)}


def drop(bucket):
    s3 = client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)
    return {}


if __name__ == "__main__":
    if MODE == "put":
        out = put(ARGS[0], ARGS[1], ARGS[2], ARGS[3])
    elif MODE == "get":
        out = get(ARGS[0], ARGS[1])
    elif MODE == "small":
        out = small(ARGS[0], int(ARGS[1]), int(ARGS[2]), int(ARGS[3]))
    elif MODE == "drop":
        out = drop(ARGS[0])
    else:
        raise SystemExit(f"unknown mode {MODE}")
    print(json.dumps(out))
