"""Fixtures for provider tests: an in-process moto EC2 and a provider wired to an inline clock."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from .fakes import FlakyClient, InlineClock, InlineThreadPool

REGION = "us-east-1"


@pytest.fixture
def ec2(monkeypatch) -> Iterator[Any]:
    """A boto3 EC2 client on moto, created after the mock is active (moto needs that)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Loading moto's ~1200 stock AMIs costs about a second per test; one registered image
    # is all these tests launch from.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def image_id(ec2) -> str:
    # moto launches instances from any image it knows; register_image needs no source VM.
    return ec2.register_image(Name="test-image", RootDeviceName="/dev/sda1")["ImageId"]


@pytest.fixture
def flaky(ec2) -> FlakyClient:
    return FlakyClient(ec2)


@pytest.fixture
def clock() -> InlineClock:
    return InlineClock()


@pytest.fixture
def threadpool() -> InlineThreadPool:
    return InlineThreadPool()
