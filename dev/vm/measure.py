"""Figures of the VM tier, measured through the SSM API of a running stack (run with the moto venv's python,
which has boto3):

    port=18765
    export FC_STACK_VM_FORWARD_PORTS=$port    # the guest reaches the sink below at its own 127.0.0.1:$port
    eval "$(dev/stack up)"
    "$FC_MOTO_PYTHON" dev/vm/measure.py --sink-port $port

Boots one VM-backed instance and prints: first command (boot) time, trivial command round trips, and the
real AVML's throughput in the guest into a FIFO drained in memory (the ceiling: no storage, no network) and
into a FIFO read by `curl --upload-file -`, which streams through the guest's port forward to an HTTP sink in
this process on the host's 127.0.0.1, and into a file in /dev/shm (remounted to 90% of the guest's memory;
the image is all non-zero memory, so with little free memory the file may not fit).
"""

import argparse
import hashlib
import http.server
import os
import re
import threading
import time

import boto3

parser = argparse.ArgumentParser()
parser.add_argument("--sink-port", type=int, required=True)
parser.add_argument("--memory-mib", type=int, default=256)
parser.add_argument("--round-trips", type=int, default=5)
args = parser.parse_args()

uploads = []


class Sink(http.server.BaseHTTPRequestHandler):
    """Accepts PUTs (chunked or sized), hashing what arrives."""

    protocol_version = "HTTP/1.1"

    def do_PUT(self):
        digest, size, started = hashlib.sha256(), 0, time.monotonic()
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                length = int(self.rfile.readline().split(b";")[0], 16)
                if length == 0:
                    self.rfile.readline()
                    break
                data = self.rfile.read(length)
                digest.update(data)
                size += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                digest.update(data)
                size += len(data)
                left -= len(data)
        uploads.append((size, digest.hexdigest(), time.monotonic() - started))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.sink_port), Sink)
threading.Thread(target=server.serve_forever, daemon=True).start()

region = os.environ["AWS_REGION"]
ec2 = boto3.client("ec2", region_name=region, endpoint_url=os.environ["AWS_ENDPOINT_URL"])
ssm = boto3.client("ssm", region_name=region, endpoint_url=os.environ["AWS_ENDPOINT_URL_SSM"])

images = ec2.describe_images(Owners=["amazon"])["Images"]
image = next(i["ImageId"] for i in images if i.get("Architecture") == "x86_64" and "Platform" not in i)
tags = [{"Key": "ssm-simulator:target", "Value": "qemu"}, {"Key": "ssm-simulator:memory-mib", "Value": str(args.memory_mib)}]
instance = ec2.run_instances(
    ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
    TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
)["Instances"][0]["InstanceId"]


def run(commands, timeout=1800):
    """Sends, polls every 50 ms, returns (seconds from SendCommand to a final status, invocation)."""
    started = time.monotonic()
    command = ssm.send_command(
        InstanceIds=[instance], DocumentName="AWS-RunShellScript",
        Parameters={"commands": commands, "executionTimeout": [str(timeout)]},
    )["Command"]["CommandId"]
    while True:
        try:
            out = ssm.get_command_invocation(CommandId=command, InstanceId=instance)
            if out["Status"] not in ("Pending", "InProgress", "Delayed"):
                return time.monotonic() - started, out
        except ssm.exceptions.InvocationDoesNotExist:
            pass
        time.sleep(0.05)


elapsed, out = run(["uname -r"])
print(f"instance {instance}, {args.memory_mib} MiB, kernel {out['StandardOutputContent'].strip()}")
print(f"first command (includes the boot): {elapsed:.1f} s")
times = [run(["true"])[0] for _ in range(args.round_trips)]
print(f"trivial command, SendCommand to Success: {', '.join(f'{t:.2f}' for t in times)} s "
      f"(the simulator adds 0.15 s delivery delay; results are visible after 0.4 s)")

avml = os.environ["FC_REAL_AVML"]
prepare = [f"cp {avml} /dev/shm/avml", "cd /dev/shm", "rm -f memory.fifo", "mkfifo memory.fifo"]
timed = 's=$(date +%s.%N); {} ; e=$(date +%s.%N); awk -v s="$s" -v e="$e" "BEGIN {{ print \\"seconds=\\" e - s }}"'

_, out = run(prepare + [
    timed.format("./avml acquire --source /proc/kcore memory.fifo & wc -c < memory.fifo > size; wait $!"),
    'echo "bytes=$(cat size)"',
])
text = out["StandardOutputContent"]
seconds = float(re.search(r"seconds=([0-9.]+)", text).group(1))
size = int(re.search(r"bytes=(\d+)", text).group(1))
print(f"LiME image of the {args.memory_mib} MiB guest: {size} bytes ({size / 2**20:.1f} MiB)")
print(f"AVML -> FIFO -> wc -c (ceiling): {seconds:.1f} s, {size / seconds / 1e6:.1f} MB/s")

_, out = run(prepare + [
    timed.format("./avml acquire --source /proc/kcore memory.fifo & sha256sum < memory.fifo > sum; wait $!"),
])
seconds = float(re.search(r"seconds=([0-9.]+)", out["StandardOutputContent"]).group(1))
print(f"AVML -> FIFO -> sha256sum: {seconds:.1f} s, {size / seconds / 1e6:.1f} MB/s")

_, out = run(prepare + [
    timed.format(f"./avml acquire --source /proc/kcore memory.fifo & curl -fsS --upload-file - "
                 f"http://127.0.0.1:{args.sink_port}/memory.lime < memory.fifo; wait $!"),
])
seconds = float(re.search(r"seconds=([0-9.]+)", out["StandardOutputContent"]).group(1))
received = uploads[-1][0] if uploads else 0
print(f"AVML -> FIFO -> curl --upload-file - -> host sink through the port forward: {seconds:.1f} s, "
      f"{received / seconds / 1e6:.1f} MB/s ({received} bytes received)")

_, out = run(prepare + [
    "mount -o remount,size=90% /dev/shm",
    timed.format("rc=0; ./avml acquire --source /proc/kcore image.lime || rc=$?"),
    'echo "rc=$rc bytes=$(stat -c %s image.lime 2>/dev/null || echo 0)"',
    "rm -f image.lime",
])
text = out["StandardOutputContent"]
seconds = float(re.search(r"seconds=([0-9.]+)", text).group(1))
rc, written = re.search(r"rc=(\d+) bytes=(\d+)", text).groups()
if rc == "0":
    print(f"AVML -> file in /dev/shm: {seconds:.1f} s, {int(written) / seconds / 1e6:.1f} MB/s")
else:
    print(f"AVML -> file in /dev/shm: failed after {seconds:.1f} s with {written} bytes written "
          f"(exit {rc}: {out['StandardErrorContent'].strip().splitlines()[-1:]})")

ec2.terminate_instances(InstanceIds=[instance])
server.shutdown()
