# Run by client-gateway/tests/s3_boto3.rs with `s3` (a boto3 client for the gateway's
# S3 port) already defined; argv[1] is the endpoint. Each check raises on a failure;
# the last line printed is "ok".
import concurrent.futures
import hashlib
import base64

def code_of(call):
    try:
        call()
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"]
    return None

def check(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got!r}, want {want!r}")

s3.create_bucket(Bucket="listing")

# 2,000 keys in a tree: a/0000 .. a/0999, b/000/x .. b/999/x.
keys = [f"a/{i:04d}" for i in range(1000)] + [f"b/{i:03d}/x" for i in range(1000)]
def put(k):
    s3.put_object(Bucket="listing", Key=k, Body=k.encode())
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(put, keys))

# Pagination over every key, 1,000 per page (ListObjectsV2).
seen = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing"):
    seen += [o["Key"] for o in page.get("Contents", [])]
check("every key once, in order", seen, sorted(keys))
# Smaller pages, V1 (markers) too.
seen = []
for page in s3.get_paginator("list_objects").paginate(Bucket="listing", PaginationConfig={"PageSize": 300}):
    seen += [o["Key"] for o in page.get("Contents", [])]
check("V1 pages of 300", seen, sorted(keys))
# Prefix and delimiter: "folders".
r = s3.list_objects_v2(Bucket="listing", Delimiter="/")
check("top-level folders", [p["Prefix"] for p in r["CommonPrefixes"]], ["a/", "b/"])
check("no top-level objects", r.get("Contents", []), [])
prefixes = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="listing", Prefix="b/", Delimiter="/", PaginationConfig={"PageSize": 250}):
    prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
check("b/ folders", prefixes, [f"b/{i:03d}/" for i in range(1000)])
r = s3.list_objects_v2(Bucket="listing", Prefix="a/09", MaxKeys=5)
check("prefix with max-keys", [o["Key"] for o in r["Contents"]], [f"a/{i:04d}" for i in range(900, 905)])
check("truncated", r["IsTruncated"], True)

# Batch delete of 1,000 keys.
r = s3.delete_objects(Bucket="listing", Delete={"Objects": [{"Key": k} for k in keys[:1000]]})
check("deleted", len(r.get("Deleted", [])), 1000)
check("left", s3.list_objects_v2(Bucket="listing", Prefix="a/").get("KeyCount"), 0)

# Get and head with conditions.
s3.put_object(Bucket="listing", Key="cond", Body=b"conditional", ContentType="text/plain", Metadata={"colour": "blue"})
h = s3.head_object(Bucket="listing", Key="cond")
etag = h["ETag"]
check("metadata", h["Metadata"], {"colour": "blue"})
check("content type", h["ContentType"], "text/plain")
check("etag is the md5", etag.strip('"'), hashlib.md5(b"conditional").hexdigest())
check("if-match ok", s3.get_object(Bucket="listing", Key="cond", IfMatch=etag)["Body"].read(), b"conditional")
check("if-match wrong", code_of(lambda: s3.get_object(Bucket="listing", Key="cond", IfMatch='"0000"')), "PreconditionFailed")
check("if-none-match", code_of(lambda: s3.get_object(Bucket="listing", Key="cond", IfNoneMatch=etag)), "304")
import datetime
later = h["LastModified"] + datetime.timedelta(seconds=5)
check("if-modified-since", code_of(lambda: s3.get_object(Bucket="listing", Key="cond", IfModifiedSince=later)), "304")
check("range", s3.get_object(Bucket="listing", Key="cond", Range="bytes=2-5")["Body"].read(), b"ndit")
# Checksums: the object's SHA-256 when asked for.
r = s3.get_object(Bucket="listing", Key="cond", ChecksumMode="ENABLED")
check("sha256", r.get("ChecksumSHA256"), base64.b64encode(hashlib.sha256(b"conditional").digest()).decode())
r["Body"].read()

# Digests that do not match store nothing.
bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
check("bad content-md5", code_of(lambda: s3.put_object(Bucket="listing", Key="lie", Body=b"payload", ContentMD5=bad_md5)), "BadDigest")
bad_sha = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
check("bad sha256", code_of(lambda: s3.put_object(Bucket="listing", Key="lie", Body=b"payload", ChecksumSHA256=bad_sha)), "BadDigest")
check("nothing stored", code_of(lambda: s3.head_object(Bucket="listing", Key="lie")), "404")
good_sha = base64.b64encode(hashlib.sha256(b"payload").digest()).decode()
r = s3.put_object(Bucket="listing", Key="truth", Body=b"payload", ChecksumSHA256=good_sha)
check("sha256 answered", r.get("ChecksumSHA256"), good_sha)

# Larger than --max-upload (12 MiB): refused before a byte is stored.
check("too large", code_of(lambda: s3.put_object(Bucket="listing", Key="huge", Body=b"h" * (13 << 20))), "EntityTooLarge")
check("too large: nothing stored", code_of(lambda: s3.head_object(Bucket="listing", Key="huge")), "404")

# Keys over 1,024 bytes, bad bucket names, missing things.
check("key too long", code_of(lambda: s3.put_object(Bucket="listing", Key="k" * 1025, Body=b"x")), "KeyTooLongError")
check("no such key", code_of(lambda: s3.get_object(Bucket="listing", Key="nope")), "NoSuchKey")
check("no such bucket", code_of(lambda: s3.list_objects_v2(Bucket="nope-bucket")), "NoSuchBucket")
check("key with everything", (s3.put_object(Bucket="listing", Key="sp ace/ü/%25/+/x", Body=b"k"), s3.get_object(Bucket="listing", Key="sp ace/ü/%25/+/x")["Body"].read())[1], b"k")

# Copy: metadata only, REPLACE takes the request's.
s3.copy_object(Bucket="listing", Key="cond-copy", CopySource={"Bucket": "listing", "Key": "cond"}, MetadataDirective="REPLACE", Metadata={"colour": "red"}, ContentType="text/x-copy")
h2 = s3.head_object(Bucket="listing", Key="cond-copy")
check("copied metadata", (h2["Metadata"], h2["ContentType"], h2["ETag"]), ({"colour": "red"}, "text/x-copy", etag))

# Multipart: parts out of order, missing, aborted; then one completed.
mp = s3.create_multipart_upload(Bucket="listing", Key="mp")["UploadId"]
part = b"p" * (5 << 20)
e1 = s3.upload_part(Bucket="listing", Key="mp", UploadId=mp, PartNumber=1, Body=part)["ETag"]
e2 = s3.upload_part(Bucket="listing", Key="mp", UploadId=mp, PartNumber=2, Body=b"tail")["ETag"]
check("list parts", [p["PartNumber"] for p in s3.list_parts(Bucket="listing", Key="mp", UploadId=mp)["Parts"]], [1, 2])
check("uploads listed", [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="listing").get("Uploads", [])], [mp])
check("order", code_of(lambda: s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})), "InvalidPartOrder")
check("missing part", code_of(lambda: s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}]})), "InvalidPart")
check("wrong etag", code_of(lambda: s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]})), "InvalidPart")
check("nothing half-done", code_of(lambda: s3.head_object(Bucket="listing", Key="mp")), "404")
s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
body = s3.get_object(Bucket="listing", Key="mp")["Body"].read()
check("completed content", hashlib.sha256(body).hexdigest(), hashlib.sha256(part + b"tail").hexdigest())
check("upload gone", s3.list_multipart_uploads(Bucket="listing").get("Uploads", []), [])
# A completion retried after it succeeded (its answer lost) gets the same answer; once
# the key holds something else, the upload is gone.
done = s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
again = s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
check("retried completion", again["ETag"], done["ETag"])
check("retried completion is the object", s3.head_object(Bucket="listing", Key="mp")["ETag"], done["ETag"])
s3.put_object(Bucket="listing", Key="mp", Body=b"replaced")
check("retry after an overwrite", code_of(lambda: s3.complete_multipart_upload(Bucket="listing", Key="mp", UploadId=mp, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})), "NoSuchUpload")

ab = s3.create_multipart_upload(Bucket="listing", Key="aborted")["UploadId"]
s3.upload_part(Bucket="listing", Key="aborted", UploadId=ab, PartNumber=1, Body=b"x" * 1000)
s3.abort_multipart_upload(Bucket="listing", Key="aborted", UploadId=ab)
check("aborted: no upload", s3.list_multipart_uploads(Bucket="listing").get("Uploads", []), [])
check("aborted: no parts", code_of(lambda: s3.list_parts(Bucket="listing", Key="aborted", UploadId=ab)), "NoSuchUpload")
check("aborted: no object", code_of(lambda: s3.head_object(Bucket="listing", Key="aborted")), "404")

# Resumed: a client that lost its connection lists the parts and uploads the rest.
rs = s3.create_multipart_upload(Bucket="listing", Key="resumed")["UploadId"]
first = s3.upload_part(Bucket="listing", Key="resumed", UploadId=rs, PartNumber=1, Body=part)["ETag"]
have = {p["PartNumber"]: p["ETag"] for p in s3.list_parts(Bucket="listing", Key="resumed", UploadId=rs)["Parts"]}
second = s3.upload_part(Bucket="listing", Key="resumed", UploadId=rs, PartNumber=2, Body=b"rest")["ETag"]
s3.complete_multipart_upload(Bucket="listing", Key="resumed", UploadId=rs, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": have[1]}, {"PartNumber": 2, "ETag": second}]})
check("resumed content", s3.get_object(Bucket="listing", Key="resumed")["Body"].read(), part + b"rest")

# Requests no SDK would make, signed by hand with botocore's signer.
import urllib.request, urllib.error
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
endpoint = sys.argv[1]
creds = Credentials(s3._request_signer._credentials.access_key, s3._request_signer._credentials.secret_key)

def raw(method, url, body=b"", host=None):
    req = AWSRequest(method=method, url=url, data=body, headers={"Host": host} if host else {})
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    r = urllib.request.Request(url, data=body or None, method=method, headers=dict(req.headers.items()))
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

status, text = raw("POST", f"{endpoint}/listing/raw?uploads")
upload = text.split("<UploadId>")[1].split("</UploadId>")[0]
status, text = raw("POST", f"{endpoint}/listing/raw?uploadId={upload}", b"<CompleteMultipartUpload><Part><PartNumber>1</Part>")
check("malformed XML", (status, "<Code>MalformedXML</Code>" in text), (400, True))
status, text = raw("PUT", f"{endpoint}/Bad_Bucket")
check("bad bucket name", (status, "<Code>InvalidBucketName</Code>" in text), (400, True))
# A body other than the one signed (same length): refused, nothing stored.
req = AWSRequest(method="PUT", url=f"{endpoint}/listing/forged", data=b"signed body!")
S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
r = urllib.request.Request(f"{endpoint}/listing/forged", data=b"forged body!", method="PUT", headers=dict(req.headers.items()))
try:
    urllib.request.urlopen(r)
    raise SystemExit("a forged body was accepted")
except urllib.error.HTTPError as e:
    check("forged body", (e.code, "XAmzContentSHA256Mismatch" in e.read().decode()), (400, True))
check("forged: nothing stored", code_of(lambda: s3.head_object(Bucket="listing", Key="forged")), "404")
port = endpoint.rsplit(":", 1)[1]
status, text = raw("GET", f"{endpoint}/?list-type=2&prefix=cond", host=f"listing.s3.kdfs.test:{port}")
check("virtual-hosted listing", (status, "<Key>cond</Key>" in text), (200, True))
# ListMultipartUploads with a delimiter: keys holding it roll up into common prefixes,
# page by page.
ups = {k: s3.create_multipart_upload(Bucket="listing", Key=k)["UploadId"] for k in ["up/a/1", "up/a/2", "up/b", "up/c/x", "up/d"]}
r = s3.list_multipart_uploads(Bucket="listing", Prefix="up/", Delimiter="/")
check("upload folders", [p["Prefix"] for p in r.get("CommonPrefixes", [])], ["up/a/", "up/c/"])
check("uploads beside them", [u["Key"] for u in r.get("Uploads", [])], ["up/b", "up/d"])
seen = []
for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket="listing", Prefix="up/", Delimiter="/", PaginationConfig={"PageSize": 1}):
    seen += [p["Prefix"] for p in page.get("CommonPrefixes", [])] + [u["Key"] for u in page.get("Uploads", [])]
check("upload pages of one", seen, ["up/a/", "up/b", "up/c/", "up/d"])
for k, u in ups.items():
    s3.abort_multipart_upload(Bucket="listing", Key=k, UploadId=u)

# A PUT whose Content-Length lies about its (signed) body: refused, nothing stored.
import socket
host, port = endpoint.split("//")[1].rsplit(":", 1)
def lying_put(key, body, claimed):
    req = AWSRequest(method="PUT", url=f"{endpoint}/listing/{key}", data=body)
    S3SigV4Auth(creds, "s3", "us-east-1").add_auth(req)
    headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
    head = f"PUT /listing/{key} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {claimed}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as c:
        c.sendall(head.encode() + body)
        c.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := c.recv(65536):
            answer += chunk
    return answer.decode(errors="replace")
short = lying_put("short", b"x" * 1000, 2000)
check("body shorter than its Content-Length", (short.split(" ")[1], "<Code>IncompleteBody</Code>" in short), ("400", True))
long = lying_put("long", b"y" * 2000, 1000)
check("body longer than its Content-Length", (long.split(" ")[1], "<Code>XAmzContentSHA256Mismatch</Code>" in long), ("400", True))
for key in ["short", "long"]:
    check(f"lied {key}: nothing stored", code_of(lambda: s3.head_object(Bucket="listing", Key=key)), "404")
print("ok")
