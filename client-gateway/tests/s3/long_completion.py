# Run by client-gateway/tests/s3_boto3.rs with `s3` (a boto3 client for the gateway's
# S3 port, whose --s3-complete-keepalive-after is 0s) already defined; argv[1] is the
# endpoint. Each check raises on a failure; the last line printed is "ok".
import concurrent.futures
import hashlib
import os
import time
from botocore.config import Config

MIB = 1 << 20
READ_TIMEOUT = 0.3

def check(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got!r}, want {want!r}")

def sha_of_object(key):
    h = hashlib.sha256()
    body = s3.get_object(Bucket="large", Key=key)["Body"]
    for piece in iter(lambda: body.read(MIB), b""):
        h.update(piece)
    return h.hexdigest()

creds = s3._request_signer._credentials
# No retries: a read timeout or an error must surface, not be retried away.
short = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id=creds.access_key,
    aws_secret_access_key=creds.secret_key, region_name="us-east-1",
    config=Config(read_timeout=READ_TIMEOUT, retries={"max_attempts": 1, "mode": "standard"}))

s3.create_bucket(Bucket="large")
data = os.urandom(200 * MIB)
want = hashlib.sha256(data).hexdigest()

# One PUT of 200 MiB, one GET back.
t0 = time.monotonic()
s3.put_object(Bucket="large", Key="single.bin", Body=data)
put_s = time.monotonic() - t0
check("single PUT size", s3.head_object(Bucket="large", Key="single.bin")["ContentLength"], len(data))
check("single PUT sha256", sha_of_object("single.bin"), want)

# The same 200 MiB in 40 parts of 5 MiB; the completion by the client that gives up
# after READ_TIMEOUT without a byte.
up = s3.create_multipart_upload(Bucket="large", Key="parts.bin")["UploadId"]
def part(n):
    body = data[(n - 1) * 5 * MIB : n * 5 * MIB]
    return {"PartNumber": n, "ETag": s3.upload_part(Bucket="large", Key="parts.bin", UploadId=up,
        PartNumber=n, Body=body)["ETag"]}
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    parts = list(pool.map(part, range(1, 41)))
t0 = time.monotonic()
done = short.complete_multipart_upload(Bucket="large", Key="parts.bin", UploadId=up,
    MultipartUpload={"Parts": parts})
complete_s = time.monotonic() - t0
print(f"single PUT {put_s:.1f} s; completion of 40 parts {complete_s:.1f} s (read timeout {READ_TIMEOUT} s)")
if complete_s < READ_TIMEOUT:
    raise SystemExit(f"the completion took {complete_s:.2f} s: too quick to prove the keep-alive")
check("completed ETag", done["ETag"].strip('"').endswith("-40"), True)
check("completed key", done["Key"], "parts.bin")
check("multipart sha256", sha_of_object("parts.bin"), want)

# A completion the namenode refuses once the answer has started: the first of two parts
# is under 5 MiB. The error arrives inside the 200 and the upload stays open.
up = s3.create_multipart_upload(Bucket="large", Key="small-parts")["UploadId"]
parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket="large", Key="small-parts", UploadId=up,
    PartNumber=n, Body=b"x" * MIB)["ETag"]} for n in (1, 2)]
try:
    short.complete_multipart_upload(Bucket="large", Key="small-parts", UploadId=up,
        MultipartUpload={"Parts": parts})
    raise SystemExit("a completion with a too-small part succeeded")
except botocore.exceptions.ClientError as e:
    check("error inside the 200", e.response["Error"]["Code"], "EntityTooSmall")
check("refused upload still listed", len(s3.list_parts(Bucket="large", Key="small-parts", UploadId=up)["Parts"]), 2)
try:
    s3.head_object(Bucket="large", Key="small-parts")
    raise SystemExit("a refused completion left an object")
except botocore.exceptions.ClientError as e:
    check("no object", e.response["Error"]["Code"], "404")
print("ok")
