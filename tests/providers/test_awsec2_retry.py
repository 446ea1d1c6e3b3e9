"""H13: EC2 throttling, eventual consistency and capacity errors.

The EC2 client is moto wrapped in ``FlakyClient``, which fails chosen calls before they reach
moto; the clock is a ``task.Clock``, so every backoff wait is a ``clock.advance``.
"""
from __future__ import annotations

import random

import pytest

from scrapoxy_server.config import AwsEc2ProviderConfig
from scrapoxy_server.models import Status
from scrapoxy_server.providers.awsec2 import AwsEc2Provider, Ec2Policy
from scrapoxy_server.providers.base import ProviderError

from .conftest import REGION
from .fakes import client_error, drive

POLICY = Ec2Policy(max_attempts=4, base_delay=1.0, max_delay=8.0, capacity_cooldown=60.0,
                   launch_visibility=120.0)


def make_provider(client, clock, threadpool, *, image_id="ami-x", policy=POLICY):
    config = AwsEc2ProviderConfig(region=REGION, image_id=image_id, instance_password="pw",
                                  tag_value="scrapoxy-test", allowed_cidr="198.51.100.4/32")
    return AwsEc2Provider(reactor=clock, config=config, client=client, threadpool=threadpool,
                          policy=policy, rng=random.Random(7))


def tagged(ec2):
    return [i for r in ec2.describe_instances(
        Filters=[{"Name": "tag:scrapoxy", "Values": ["scrapoxy-test"]},
                 {"Name": "instance-state-name", "Values": ["running", "pending"]}],
    )["Reservations"] for i in r["Instances"]]


def test_h13_throttled_launch_is_retried_once_with_the_same_client_token(
        flaky, ec2, image_id, clock, threadpool):
    flaky.fail("run_instances", client_error("RequestLimitExceeded", operation="RunInstances"))
    flaky.fail("create_tags", client_error("InvalidInstanceID.NotFound", operation="CreateTags"))
    flaky.fail("describe_instances",
               client_error("InvalidInstanceID.NotFound", operation="DescribeInstances"),
               client_error("InvalidInstanceID.NotFound", operation="DescribeInstances"))
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)

    created = provider.create_instances(3)
    assert not created.called, "the retry waits on the reactor clock, not in a thread"
    drive(clock, created)

    attempts = flaky.calls_to("run_instances")
    assert len(attempts) == 2
    assert attempts[0]["ClientToken"] == attempts[1]["ClientToken"]
    assert attempts[0]["ClientToken"]
    assert len(flaky.calls_to("create_tags")) == 2

    listed = drive(clock, provider.list_instances())
    assert len(flaky.calls_to("describe_instances")) == 3
    assert len(listed) == 3 and all(i.status is Status.STARTED for i in listed)
    # Exactly one launch reached EC2, and all 3 instances carry the tag.
    assert len(ec2.describe_instances()["Reservations"]) == 1
    assert {i["InstanceId"] for i in tagged(ec2)} == {i.id for i in listed}
    assert provider.last_error is None


def test_backoff_grows_and_waits_on_the_clock(flaky, clock, threadpool):
    throttled = client_error("Throttling", operation="DescribeInstances")
    flaky.fail("describe_instances", throttled, throttled, throttled)
    provider = make_provider(flaky, clock, threadpool)
    listing = provider.list_instances()
    waits = []
    while not listing.called:
        waits.append(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        clock.advance(waits[-1])
    assert listing.result == []
    assert len(waits) == 3
    # Equal jitter: each wait lies in [ceiling/2, ceiling] with ceiling 1, 2, 4 seconds.
    for wait, ceiling in zip(waits, (1.0, 2.0, 4.0)):
        assert ceiling / 2 <= wait <= ceiling


def test_retries_are_bounded_then_fail_as_retryable(flaky, clock, threadpool):
    flaky.fail_always("describe_instances",
                      client_error("RequestLimitExceeded", operation="DescribeInstances"))
    provider = make_provider(flaky, clock, threadpool)
    with pytest.raises(ProviderError) as info:
        drive(clock, provider.list_instances())
    assert info.value.retryable is True
    assert "RequestLimitExceeded" in str(info.value)
    assert len(flaky.calls_to("describe_instances")) == POLICY.max_attempts
    assert provider.last_error == str(info.value)


def test_a_failed_create_tags_does_not_fail_the_create(flaky, ec2, image_id, clock, threadpool):
    flaky.fail_always("create_tags", client_error("RequestLimitExceeded", operation="CreateTags"))
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(2))
    assert len(flaky.calls_to("create_tags")) == POLICY.max_attempts
    # TagSpecifications tagged them at launch, so they are still ours.
    assert len(tagged(ec2)) == 2


def test_h13_capacity_error_fails_once_not_retryable_and_terminates_nothing(
        flaky, ec2, image_id, clock, threadpool):
    running = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "scrapoxy", "Value": "scrapoxy-test"}]}],
    )["Instances"][0]["InstanceId"]
    flaky.fail_always("run_instances", client_error(
        "VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit",
        operation="RunInstances"))
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)

    with pytest.raises(ProviderError) as info:
        drive(clock, provider.create_instances(3))
    assert info.value.retryable is False
    assert "VcpuLimitExceeded" in str(info.value) and "vCPU limit" in str(info.value)
    assert len(flaky.calls_to("run_instances")) == 1
    assert provider.last_error == str(info.value)

    # A caller ticking faster than the cooldown gets the same error without a new attempt.
    clock.advance(10)
    with pytest.raises(ProviderError):
        drive(clock, provider.create_instances(3))
    assert len(flaky.calls_to("run_instances")) == 1

    # Listing still works and keeps the error visible; nothing was terminated.
    listed = drive(clock, provider.list_instances())
    assert [i.id for i in listed] == [running]
    assert provider.last_error is not None
    assert flaky.calls_to("terminate_instances") == []

    # After the cooldown, one new attempt.
    clock.advance(POLICY.capacity_cooldown)
    with pytest.raises(ProviderError):
        drive(clock, provider.create_instances(3))
    assert len(flaky.calls_to("run_instances")) == 2


def test_last_error_clears_when_a_create_succeeds(flaky, image_id, clock, threadpool):
    flaky.fail("run_instances", client_error("InsufficientInstanceCapacity",
                                             operation="RunInstances"))
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)
    with pytest.raises(ProviderError):
        drive(clock, provider.create_instances(1))
    assert "InsufficientInstanceCapacity" in provider.last_error
    clock.advance(POLICY.capacity_cooldown)
    drive(clock, provider.create_instances(1))
    assert provider.last_error is None


def test_other_client_errors_are_not_retried_but_stay_retryable(flaky, clock, threadpool):
    flaky.fail("run_instances", client_error("UnauthorizedOperation", "not allowed",
                                             operation="RunInstances"))
    provider = make_provider(flaky, clock, threadpool)
    with pytest.raises(ProviderError) as info:
        drive(clock, provider.create_instances(1))
    assert info.value.retryable is True
    assert str(info.value) == "RunInstances failed: UnauthorizedOperation: not allowed"
    assert len(flaky.calls_to("run_instances")) == 1


def test_launched_instances_not_yet_visible_are_listed_starting(
        flaky, ec2, image_id, clock, threadpool):
    """Eventual consistency: DescribeInstances may miss new instances for a while; listing
    them as starting keeps the manager from launching replacements."""
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(2))
    launched = {p["InstanceId"] for p in [
        i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]}
    # Hide the new instances from the provider's next listing.
    real_describe = ec2.describe_instances
    ec2.describe_instances = lambda **params: {"Reservations": []}
    try:
        hidden = drive(clock, provider.list_instances())
        assert {i.id for i in hidden} == launched
        assert all(i.status is Status.STARTING and i.address is None for i in hidden)
        clock.advance(POLICY.launch_visibility + 1)
        assert drive(clock, provider.list_instances()) == []
    finally:
        ec2.describe_instances = real_describe


def test_terminate_reaches_our_launched_instances_even_before_they_are_visible(
        flaky, ec2, image_id, clock, threadpool):
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(1))
    [instance_id] = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                     for i in r["Instances"]]
    real_describe = ec2.describe_instances
    ec2.describe_instances = lambda **params: {"Reservations": []}
    try:
        drive(clock, provider.terminate_instances([instance_id]))
    finally:
        ec2.describe_instances = real_describe
    assert flaky.calls_to("terminate_instances") == [{"InstanceIds": [instance_id]}]


def test_latest_stock_ubuntu_image_is_looked_up_once(flaky, ec2, image_id, clock, threadpool):
    images = [
        {"ImageId": "ami-old", "Name": "ubuntu-jammy-old", "CreationDate": "2024-01-01T00:00:00Z"},
        {"ImageId": "ami-new", "Name": "ubuntu-jammy-new", "CreationDate": "2025-06-01T00:00:00Z"},
    ]
    lookups = []

    def describe_images(**params):
        lookups.append(params)
        return {"Images": images}

    ec2.describe_images = describe_images
    real_run = ec2.run_instances
    ec2.run_instances = lambda **params: real_run(**{**params, "ImageId": image_id})
    provider = make_provider(flaky, clock, threadpool, image_id=None)
    drive(clock, provider.create_instances(1))
    drive(clock, provider.create_instances(1))
    assert len(lookups) == 1
    assert lookups[0]["Owners"] == ["099720109477"]
    names = lookups[0]["Filters"][0]["Values"]
    assert any("ubuntu-jammy-22.04-amd64-server" in name for name in names)
    assert all("-amd64-" in name for name in names)  # t3.nano is x86_64
    assert [p["ImageId"] for p in flaky.calls_to("run_instances")] == ["ami-new", "ami-new"]


def test_no_stock_image_is_a_clear_non_retryable_error(flaky, ec2, clock, threadpool):
    ec2.describe_images = lambda **params: {"Images": []}
    provider = make_provider(flaky, clock, threadpool, image_id=None)
    with pytest.raises(ProviderError, match="set image_id") as info:
        drive(clock, provider.create_instances(1))
    assert info.value.retryable is False


def test_a_lost_run_instances_answer_is_retried_with_the_same_client_token(
        flaky, image_id, clock, threadpool):
    from botocore.exceptions import ReadTimeoutError

    flaky.fail("run_instances", ReadTimeoutError(endpoint_url="https://ec2.example"))
    provider = make_provider(flaky, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(1))
    first, second = flaky.calls_to("run_instances")
    assert first["ClientToken"] == second["ClientToken"]


def test_a_network_error_that_persists_fails_as_retryable(flaky, clock, threadpool):
    from botocore.exceptions import EndpointConnectionError

    flaky.fail_always("describe_instances",
                      EndpointConnectionError(endpoint_url="https://ec2.example"))
    provider = make_provider(flaky, clock, threadpool)
    with pytest.raises(ProviderError) as info:
        drive(clock, provider.list_instances())
    assert info.value.retryable is True
    assert "EndpointConnectionError" in str(info.value)
    assert len(flaky.calls_to("describe_instances")) == POLICY.max_attempts
