"""The default image follows the instance type's architecture (botocore Stubber)."""
from __future__ import annotations

import pytest

from scrapoxy_server.config import AwsEc2ProviderConfig
from scrapoxy_server.providers.awsec2 import AwsEc2Provider
from scrapoxy_server.providers.base import ProviderError

from .fakes import InlineClock, InlineThreadPool, drive
from .stubbed import ANY, RecordingStubber, instance, stubbed_client


def provider_for(instance_type: str):
    client = stubbed_client()
    stubber = RecordingStubber(client)
    stubber.activate()
    clock = InlineClock()
    provider = AwsEc2Provider(
        reactor=clock, client=client, threadpool=InlineThreadPool(),
        config=AwsEc2ProviderConfig(instance_type=instance_type, instance_password="pw",
                                    tag_value="t", allowed_cidr="198.51.100.4/32"))
    return provider, stubber, clock


def image(image_id: str, name: str, date: str, arch: str) -> dict:
    return {"ImageId": image_id, "Name": f"ubuntu/images/hvm-ssd/{name}",
            "CreationDate": date, "Architecture": arch, "State": "available"}


@pytest.mark.parametrize(("instance_type", "arch", "word"), [
    ("t4g.nano", "arm64", "arm64"),
    ("t3.nano", "x86_64", "amd64"),
])
def test_launches_the_newest_ubuntu_lts_built_for_the_instance_types_architecture(
        instance_type, arch, word):
    provider, stubber, clock = provider_for(instance_type)
    stubber.add_response("describe_instance_types", {"InstanceTypes": [{
        "InstanceType": instance_type,
        "ProcessorInfo": {"SupportedArchitectures": [arch]}}]},
        {"InstanceTypes": [instance_type]})
    stubber.add_response("describe_images", {"Images": [
        image("ami-jammy", f"ubuntu-jammy-22.04-{word}-server-20250901", "2025-09-01", arch),
        image("ami-noble", f"ubuntu-noble-24.04-{word}-server-20250601", "2025-06-01", arch),
    ]}, {"Owners": ["099720109477"], "Filters": [
        {"Name": "name", "Values": [f"ubuntu/images/*ubuntu-noble-24.04-{word}-server-*",
                                    f"ubuntu/images/*ubuntu-jammy-22.04-{word}-server-*"]},
        {"Name": "state", "Values": ["available"]},
        {"Name": "architecture", "Values": [arch]}]})
    stubber.add_response("run_instances", {"Instances": [instance("i-1", state="pending")]},
                         {"ImageId": "ami-noble", "InstanceType": instance_type,
                          "MinCount": 1, "MaxCount": 1, "UserData": ANY,
                          "TagSpecifications": ANY, "ClientToken": ANY})
    stubber.add_response("create_tags", {}, {"Resources": ["i-1"], "Tags": ANY})
    drive(clock, provider.create_instances(1))
    stubber.assert_no_pending_responses()
    assert stubber.violations == []


def test_an_instance_type_without_a_stock_image_architecture_is_a_lasting_error():
    provider, stubber, clock = provider_for("mac2.metal")
    stubber.add_response("describe_instance_types", {"InstanceTypes": [{
        "InstanceType": "mac2.metal",
        "ProcessorInfo": {"SupportedArchitectures": ["arm64_mac"]}}]})
    with pytest.raises(ProviderError, match="mac2.metal runs arm64_mac.*set image_id") as info:
        drive(clock, provider.create_instances(1))
    assert info.value.retryable is False
    assert stubber.violations == []


def test_an_unknown_instance_type_is_a_lasting_error_not_a_retry_loop():
    provider, stubber, clock = provider_for("t9.huge")
    stubber.error("describe_instance_types", "InvalidInstanceType")
    with pytest.raises(ProviderError, match="InvalidInstanceType") as info:
        drive(clock, provider.create_instances(1))
    assert info.value.retryable is False
    stubber.assert_no_pending_responses()
