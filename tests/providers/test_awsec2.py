"""The EC2 provider against moto: it creates tagged instances, sees only its own, and
terminates only its own."""
from __future__ import annotations

import base64
import logging

import pytest

from scrapoxy_server.config import AwsEc2ProviderConfig
from scrapoxy_server.models import Address, Credentials, Status
from scrapoxy_server.providers.awsec2 import AwsEc2Provider, map_state

from .conftest import REGION
from .fakes import drive

PASSWORD = "Zx9-unlikely-secret"


def make_provider(client, clock, threadpool, **config):
    values = dict(region=REGION, tag_value="team-a", instance_password=PASSWORD,
                  allowed_cidr="198.51.100.4/32")
    values.update(config)
    return AwsEc2Provider(reactor=clock, config=AwsEc2ProviderConfig(**values), client=client,
                          threadpool=threadpool)


def instances_in_moto(ec2):
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize(("state", "status"), [
    ("pending", Status.STARTING),
    ("running", Status.STARTED),
    ("stopping", Status.STOPPING),
    ("shutting-down", Status.STOPPING),
    ("stopped", Status.STOPPED),
    ("terminated", Status.STOPPED),
    ("something-new", Status.ERROR),
])
def test_map_state(state, status):
    assert map_state(state) is status


def test_created_instances_are_listed_started_with_addresses_and_tagged(
        ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id, port=8123)
    drive(clock, provider.create_instances(3))
    instances = drive(clock, provider.list_instances())
    assert len(instances) == 3
    for instance in instances:
        assert instance.status is Status.STARTED
        assert instance.provider == "awsec2" and instance.region == REGION
        assert instance.address is not None and instance.address.port == 8123
        assert instance.credentials == Credentials("scrapoxy", PASSWORD)
    in_moto = instances_in_moto(ec2)
    assert {i["InstanceId"] for i in in_moto} == {i.id for i in instances}
    for raw in in_moto:
        assert {"Key": "scrapoxy", "Value": "team-a"} in raw["Tags"]
        assert {i.address.hostname for i in instances} >= {raw["PublicIpAddress"]}
    # Every boto3 call went through the thread pool, none ran on the caller's thread.
    assert threadpool.calls >= 3


def test_run_instances_carries_user_data_type_and_tags(ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id, instance_type="t3.micro")
    drive(clock, provider.create_instances(1))
    raw = instances_in_moto(ec2)[0]
    assert raw["InstanceType"] == "t3.micro" and raw["ImageId"] == image_id
    user_data = ec2.describe_instance_attribute(
        InstanceId=raw["InstanceId"], Attribute="userData")["UserData"]["Value"]
    script = base64.b64decode(user_data).decode()
    assert "Allow 198.51.100.4/32" in script and "Port 3128" in script


def test_an_untagged_or_foreign_instance_is_never_listed_nor_terminated(
        ec2, image_id, clock, threadpool):
    untagged = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)
    foreign = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "scrapoxy", "Value": "team-b"}]}])
    others = [untagged["Instances"][0]["InstanceId"], foreign["Instances"][0]["InstanceId"]]
    provider = make_provider(ec2, clock, threadpool, image_id=image_id)
    assert drive(clock, provider.list_instances()) == []
    drive(clock, provider.terminate_instances(others + ["i-0123456789abcdef0"]))
    states = {i["InstanceId"]: i["State"]["Name"] for i in instances_in_moto(ec2)}
    assert states == {others[0]: "running", others[1]: "running"}


def test_terminated_instances_are_no_longer_listed(ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(2))
    first, second = (i.id for i in drive(clock, provider.list_instances()))
    drive(clock, provider.terminate_instances([first]))
    assert [i.id for i in drive(clock, provider.list_instances())] == [second]
    # moto keeps terminated instances visible; the provider filters them out.
    assert {i["State"]["Name"] for i in instances_in_moto(ec2)} == {"terminated", "running"}


def test_stopped_instance_is_listed_stopped(ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(1))
    instance_id = drive(clock, provider.list_instances())[0].id
    ec2.stop_instances(InstanceIds=[instance_id])
    [instance] = drive(clock, provider.list_instances())
    assert instance.status is Status.STOPPED


def test_creates_and_reuses_a_security_group_for_the_proxy_port(ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id,
                             create_security_group=True, port=3130)
    drive(clock, provider.create_instances(1))
    drive(clock, provider.create_instances(1))
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["scrapoxy-awsec2"]}])["SecurityGroups"]
    assert len(groups) == 1
    [permission] = groups[0]["IpPermissions"]
    assert (permission["FromPort"], permission["ToPort"]) == (3130, 3130)
    assert permission["IpRanges"][0]["CidrIp"] == "198.51.100.4/32"
    for raw in instances_in_moto(ec2):
        assert [g["GroupId"] for g in raw["SecurityGroups"]] == [groups[0]["GroupId"]]
    # A second provider (a restarted server) finds the existing group instead of failing.
    again = make_provider(ec2, clock, threadpool, image_id=image_id,
                          create_security_group=True, port=3130)
    drive(clock, again.create_instances(1))
    assert len(ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["scrapoxy-awsec2"]}])["SecurityGroups"]) == 1


def test_spot_subnet_and_key_options_reach_run_instances(flaky, image_id, clock, threadpool, ec2):
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    ec2.create_key_pair(KeyName="ops")
    provider = make_provider(flaky, clock, threadpool, image_id=image_id, spot=True,
                             subnet_id=subnet, key_name="ops", security_group_id=None)
    drive(clock, provider.create_instances(1))
    [params] = flaky.calls_to("run_instances")
    assert params["InstanceMarketOptions"]["MarketType"] == "spot"
    assert params["SubnetId"] == subnet and params["KeyName"] == "ops"
    assert "SecurityGroupIds" not in params


def test_the_instance_password_is_never_logged(ec2, image_id, clock, threadpool, caplog):
    caplog.set_level(logging.DEBUG, logger="scrapoxy_server")
    provider = make_provider(ec2, clock, threadpool, image_id=image_id)
    drive(clock, provider.create_instances(2))
    ids = [i.id for i in drive(clock, provider.list_instances())]
    drive(clock, provider.terminate_instances(ids))
    assert caplog.records, "the provider logs its actions"
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(provider.credentials)
    assert PASSWORD not in repr(drive(clock, provider.list_instances()))


def test_a_generated_password_is_used_when_none_is_configured(ec2, image_id, clock, threadpool):
    provider = make_provider(ec2, clock, threadpool, image_id=image_id, instance_password=None)
    assert len(provider.credentials.password) >= 20
    other = make_provider(ec2, clock, threadpool, image_id=image_id, instance_password=None)
    assert other.credentials.password != provider.credentials.password


def test_zero_count_create_and_empty_terminate_call_nothing(flaky, clock, threadpool):
    provider = make_provider(flaky, clock, threadpool, image_id="ami-x")
    drive(clock, provider.create_instances(0))
    drive(clock, provider.terminate_instances([]))
    assert flaky.calls == []


def test_list_address_falls_back_to_private_ip_then_none():
    provider = AwsEc2Provider(reactor=None, client=object(), config=AwsEc2ProviderConfig(
        instance_password="x", tag_value="t", allowed_cidr="198.51.100.4/32"))
    base = {"InstanceId": "i-1", "State": {"Name": "pending"}}
    assert provider._to_instance({**base, "PrivateIpAddress": "10.0.0.5"}).address == \
        Address("10.0.0.5", 3128)
    assert provider._to_instance(base).address is None
    assert provider._to_instance(base).status is Status.STARTING


def test_boto3_runs_in_the_reactors_thread_pool_not_on_the_reactor_thread(
        ec2, image_id, reactor_thread):
    import threading

    seen_threads = []

    class Recording:
        def __getattr__(self, operation):
            method = getattr(ec2, operation)

            def call(**params):
                seen_threads.append(threading.current_thread().name)
                return method(**params)

            return call

    provider = AwsEc2Provider(
        reactor=reactor_thread.reactor, client=Recording(),
        config=AwsEc2ProviderConfig(region=REGION, image_id=image_id, instance_password="pw",
                                    tag_value="t", allowed_cidr="198.51.100.4/32"))
    reactor_thread.call(provider.create_instances, 2)
    assert len(reactor_thread.call(provider.list_instances)) == 2
    assert seen_threads and "reactor" not in seen_threads


def test_without_a_client_one_is_built_from_the_config(ec2, image_id, clock, threadpool):
    provider = AwsEc2Provider(
        reactor=clock, threadpool=threadpool,
        config=AwsEc2ProviderConfig(region=REGION, image_id=image_id, instance_password="pw",
                                    tag_value="t", allowed_cidr="198.51.100.4/32",
                                    access_key_id="testing", secret_access_key="testing"))
    drive(clock, provider.create_instances(1))
    assert len(drive(clock, provider.list_instances())) == 1
