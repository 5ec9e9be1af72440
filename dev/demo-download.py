"""Downloads a capture's memory image and Volatility symbols for analysis (JSON from `kubectl get fc -o json` on
stdin; the directory as argument): DIR/memory.lime and DIR/symbols/linux/volatility-symbols.json.xz, each
checked against the SHA-256 the capture recorded."""
import hashlib
import json
import os
import sys

import boto3

directory = sys.argv[1]
status = json.load(sys.stdin)["status"]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
wanted = {"MemoryImage": "memory.lime", "VolatilitySymbols": "symbols/linux/volatility-symbols.json.xz"}
for artifact in status["artifacts"]:
    if artifact["type"] not in wanted:
        continue
    path = os.path.join(directory, wanted.pop(artifact["type"]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bucket, key = artifact["uri"].removeprefix("s3://").split("/", 1)
    s3.download_file(bucket, key, path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != artifact["sha256"]:
        sys.exit(f"{artifact['uri']}: sha256 {digest.hexdigest()}, the capture recorded {artifact['sha256']}")
    print(f"{path}  sha256 {artifact['sha256']} (as recorded)")
if wanted:
    sys.exit(f"the capture lists no {', '.join(wanted)} artifact")
