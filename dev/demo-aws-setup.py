"""Creates the demo's AWS side on the proof environment (moto): an evidence bucket, AVML (the stand-in, or the
real one) uploaded where an operator would put it, and a two-volume instance in its own VPC. Prints shell
assignments.

    demo-aws-setup.py AVML_BINARY [--vm]

With --vm the instance is backed by a QEMU guest (the SSM simulator's tag ssm-simulator:target=qemu); the
script waits for the guest to boot and starts an "intruder" process on it for the analysis to find."""
import hashlib
import os
import sys
import time

import boto3

region = os.environ["AWS_REGION"]
endpoint = os.environ["AWS_ENDPOINT_URL"]
avml_path = sys.argv[1]
vm = "--vm" in sys.argv[2:]
suffix = os.urandom(3).hex()

s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)

bucket = f"demo-evidence-{suffix}"
s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
avml = open(avml_path, "rb").read()
s3.put_object(Bucket=bucket, Key="tools/avml-x86_64", Body=avml)

vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
image = next(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"]
             if i.get("Architecture") == "x86_64" and "Platform" not in i)
instance = ec2.run_instances(
    ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=subnet,
    BlockDeviceMappings=[
        {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}},
        {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 4}},
    ],
    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1 (demo)"}]
                        + ([{"Key": "ssm-simulator:target", "Value": "qemu"}] if vm else [])}],
)["Instances"][0]["InstanceId"]

print(f"bucket={bucket}")
print(f"avml_uri=s3://{bucket}/tools/avml-x86_64")
print(f"avml_sha256={hashlib.sha256(avml).hexdigest()}")
print(f"instance_id={instance}")
# An asymmetric KMS key that signs the capture's manifest.
kms = boto3.client("kms", endpoint_url=endpoint, region_name=region)
key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256", Description="forensic-capture demo manifest signing")
print(f"signing_key_id={key['KeyMetadata']['KeyId']}")

if vm:
    # The guest boots on its first command (about 15 s under TCG); then an "intruder": a process named like a
    # known cryptominer. The kernel names a task after the file it executed, so it is a link to sleep.
    ssm = boto3.client("ssm", endpoint_url=os.environ["AWS_ENDPOINT_URL_SSM"], region_name=region)
    intruder = "kdevtmpfsi"
    command = ssm.send_command(
        InstanceIds=[instance], DocumentName="AWS-RunShellScript",
        Parameters={"commands": [f"ln -sf /bin/sleep /dev/shm/{intruder} && setsid nohup /dev/shm/{intruder} 86400 "
                                 ">/dev/null 2>&1 </dev/null &"]},
    )["Command"]["CommandId"]
    deadline = time.time() + 300
    while True:
        time.sleep(1)
        try:
            invocation = ssm.get_command_invocation(CommandId=command, InstanceId=instance)
        except ssm.exceptions.InvocationDoesNotExist:
            continue
        if invocation["Status"] not in ("Pending", "InProgress", "Delayed"):
            break
        if time.time() > deadline:
            sys.exit(f"the guest of {instance} did not run a command within 300 s")
    if invocation["Status"] != "Success":
        sys.exit(f"starting the intruder on {instance} failed: {invocation['StandardErrorContent']}")
    print(f"intruder={intruder}")
