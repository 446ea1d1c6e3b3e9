"""Issue 4's "Done when" on awsec2: the manager and the real EC2 provider together.

On moto: the pool scales 0 -> 3 on requests and back to 0 when idle, tagging only its own
instances and never touching a foreign one. With botocore's Stubber: H13's error sequence
(throttled launch, ids not yet visible, a failed CreateTags; and a vCPU limit that never
lifts) ends with exactly 3 tagged instances, no crashed tick, and at most one launch attempt
per backoff window. Everything runs on an ``InlineClock`` (boto3 calls run inline in place of
the thread pool), so backoffs are driven by advancing the clock.
"""
from __future__ import annotations

import logging
import random

from scrapoxy_server.config import AwsEc2ProviderConfig, ManagerConfig
from scrapoxy_server.manager import BACKOFF_CAP, Manager
from scrapoxy_server.models import Scaling
from scrapoxy_server.pool import InstancePool
from scrapoxy_server.providers.awsec2 import AwsEc2Provider, Ec2Policy
from scrapoxy_server.stats import Stats
from tests.manager.fakes import FakeHealth

from .conftest import REGION
from .fakes import InlineClock, InlineThreadPool
from .stubbed import ANY, RecordingStubber, instance, reservation, stubbed_client

TAG = "scrapoxy-0a1b2c3d4e5f"
MANAGER = ManagerConfig(check_interval=2.0, alive_check_interval=2.0, start_timeout=120.0)


class Fleet:
    """A Manager driving one AwsEc2Provider, on an inline clock."""

    def __init__(self, client, *, scaling: Scaling, image_id: str = "ami-0stock",
                 downscale_delay: float = 60.0) -> None:
        self.clock = InlineClock()
        self.clock.advance(1_700_000_000)
        self.provider = AwsEc2Provider(
            reactor=self.clock, client=client, threadpool=InlineThreadPool(),
            policy=Ec2Policy(), rng=random.Random(4),
            config=AwsEc2ProviderConfig(region=REGION, image_id=image_id, tag_value=TAG,
                                        allowed_cidr="198.51.100.7/32",
                                        instance_password="pw-1"))
        self.pool = InstancePool()
        self.manager = Manager(
            reactor=self.clock, providers=[self.provider], pool=self.pool, stats=Stats(),
            health=FakeHealth(), manager_config=MANAGER, scaling=scaling,
            downscale_delay=downscale_delay, rng=random.Random(4))

    def run(self, seconds: float, *, step: float = 0.25, each=None) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            if each is not None:
                each()

    def routable(self) -> list[str]:
        return sorted(e.name for e in self.pool.alive())


def states(ec2) -> dict[str, tuple[str, dict]]:
    """id -> (state, tags) for every instance moto knows, terminated ones included."""
    return {i["InstanceId"]: (i["State"]["Name"], {t["Key"]: t["Value"] for t in i.get("Tags", [])})
            for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}


def test_scales_0_to_3_on_requests_and_back_to_0_when_idle_touching_only_its_own(
        ec2, image_id):
    foreign = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    fleet = Fleet(ec2, scaling=Scaling(min=0, required=0, max=3), image_id=image_id)
    fleet.manager.start()
    fleet.run(10)
    assert [i for i, (state, _) in states(ec2).items() if i != foreign["InstanceId"]] == []

    fleet.pool.activity()  # a request reaches the master: the pool wakes
    fleet.run(6)
    ours = {i: tags for i, (state, tags) in states(ec2).items()
            if state == "running" and i != foreign["InstanceId"]}
    assert len(ours) == 3
    assert all(tags["scrapoxy"] == TAG for tags in ours.values())
    assert fleet.routable() == sorted(ours)

    # Scraping goes on (a request every 10 s, well within downscale_delay): still 3.
    fleet.run(120, step=0.5, each=lambda: fleet.clock.seconds() % 10 == 0 and
              fleet.pool.activity())
    assert fleet.routable() == sorted(ours)

    fleet.run(70)  # idle longer than downscale_delay (60 s): back to min = 0
    assert fleet.manager.get_scaling().required == 0
    final = states(ec2)
    assert all(final[i][0] == "terminated" for i in ours)
    assert fleet.routable() == [] and fleet.manager.list_instances() == []
    # The foreign instance was never listed, tagged or terminated.
    assert final[foreign["InstanceId"]] == ("running", {})


def test_h13_throttling_and_eventual_consistency_end_with_exactly_3_tagged(caplog):
    client = stubbed_client()
    stubber = RecordingStubber(client)
    tokens: list[str] = []
    client.meta.events.register(
        "provide-client-params.ec2.RunInstances",
        lambda params, **kwargs: tokens.append(params["ClientToken"]))
    ids = ["i-0aaa", "i-0bbb", "i-0ccc"]
    listed = reservation(*(instance(i, ip=f"203.0.113.{n}", tags={"scrapoxy": TAG})
                           for n, i in enumerate(ids, 10)))
    our_tag = {"Name": "tag:scrapoxy", "Values": [TAG]}
    launch = {"ImageId": "ami-0stock", "InstanceType": "t3.nano", "MinCount": 3, "MaxCount": 3,
              "UserData": ANY, "ClientToken": ANY, "TagSpecifications": [
                  {"ResourceType": "instance", "Tags": [{"Key": "scrapoxy", "Value": TAG},
                                                        {"Key": "Name",
                                                         "Value": "scrapoxy-awsec2"}]}]}
    tagging = {"Resources": ids, "Tags": [{"Key": "scrapoxy", "Value": TAG}]}
    # Tick 1 (t=0): nothing listed; RunInstances throttled once, then it launches; CreateTags
    # fails once (ids not yet known to it), then succeeds.
    stubber.add_response("describe_instances", reservation(), {"Filters": [our_tag, ANY]})
    stubber.error("run_instances", "RequestLimitExceeded", expected_params=launch)
    stubber.add_response("run_instances", {"Instances": [instance(i, state="pending", ip=None)
                                                         for i in ids]}, launch)
    stubber.error("create_tags", "InvalidInstanceID.NotFound", expected_params=tagging)
    stubber.add_response("create_tags", {}, tagging)
    # Tick 2 (t=2): DescribeInstances answers NotFound twice for the new ids, then lists them.
    stubber.error("describe_instances", "InvalidInstanceID.NotFound")
    stubber.error("describe_instances", "InvalidInstanceID.NotFound")
    stubber.add_response("describe_instances", listed)
    # Ticks 3..12: listed as they are; nothing else may be called (no second launch).
    for _ in range(10):
        stubber.add_response("describe_instances", listed)
    stubber.activate()
    fleet = Fleet(client, scaling=Scaling(min=3, required=3, max=3))
    caplog.set_level(logging.INFO)
    fleet.manager.start()
    fleet.run(23)  # ticks at t = 0, 2, ..., 22

    assert stubber.violations == []
    stubber.assert_no_pending_responses()
    assert stubber.operations.count("RunInstances") == 2
    assert len(tokens) == 2 and tokens[0] == tokens[1]  # the retry cannot launch twice
    assert stubber.operations.count("CreateTags") == 2
    assert fleet.routable() == ids
    listed_now = fleet.manager.list_instances()
    assert [i["name"] for i in listed_now] == ids
    assert all(i["alive"] and i["status"] == "started" for i in listed_now)
    assert fleet.manager.provider_errors() == {}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_h13_vcpu_limit_is_tried_once_per_backoff_window_reported_and_terminates_nothing(
        caplog):
    client = stubbed_client()
    stubber = RecordingStubber(client)
    window = BACKOFF_CAP  # the manager's wait after a lasting error; the provider's cooldown
    assert Ec2Policy().capacity_cooldown == window
    seconds = 130
    attempts_at = []
    for t in range(0, seconds + 1, 2):
        stubber.add_response("describe_instances", reservation())
        if t % int(window) == 0:
            attempts_at.append(t)
            stubber.error("run_instances", "VcpuLimitExceeded")
    stubber.activate()
    fleet = Fleet(client, scaling=Scaling(min=3, required=3, max=3))
    caplog.set_level(logging.INFO)
    fleet.manager.start()
    fleet.run(seconds + 1)

    assert stubber.violations == []  # in particular: no launch between windows, no terminate
    stubber.assert_no_pending_responses()
    assert attempts_at == [0, 60, 120]
    assert stubber.operations.count("RunInstances") == 3
    assert "VcpuLimitExceeded" in fleet.manager.provider_errors()["awsec2"]
    assert "VcpuLimitExceeded" in fleet.provider.last_error
    assert fleet.manager.list_instances() == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
