"""Creates the demo's AWS side on the proof environment (moto): an evidence bucket, the AVML stand-in uploaded
where an operator would put AVML, and a two-volume instance in its own VPC. Prints shell assignments."""
import hashlib
import os
import sys

import boto3

region = os.environ["AWS_REGION"]
endpoint = os.environ["AWS_ENDPOINT_URL"]
avml_path = sys.argv[1]
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
    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1 (demo)"}]}],
)["Instances"][0]["InstanceId"]

print(f"bucket={bucket}")
print(f"avml_uri=s3://{bucket}/tools/avml-x86_64")
print(f"avml_sha256={hashlib.sha256(avml).hexdigest()}")
print(f"instance_id={instance}")
# An asymmetric KMS key that signs the capture's manifest.
kms = boto3.client("kms", endpoint_url=endpoint, region_name=region)
key = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256", Description="forensic-capture demo manifest signing")
print(f"signing_key_id={key['KeyMetadata']['KeyId']}")
