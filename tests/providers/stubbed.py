"""A real boto3 EC2 client whose answers come from botocore's ``Stubber``.

Stubber checks every call against a queue of expected operations (and parameters), in order:
an unexpected call, or parameters that differ, fail at once. ``RecordingStubber`` also keeps
those failures, because inside the provider they would be turned into ``ProviderError`` and
retried or logged like any AWS error; a test asserts ``stubber.violations == []``.
"""
from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import StubAssertionError
from botocore.stub import ANY, Stubber

__all__ = ["ANY", "RecordingStubber", "stubbed_client", "instance", "reservation"]


def stubbed_client(region: str = "us-east-1") -> Any:
    return boto3.client("ec2", region_name=region, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


class RecordingStubber(Stubber):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.violations: list[str] = []
        self.operations: list[str] = []

    def _assert_expected_call_order(self, model: Any, params: Any) -> None:
        try:
            super()._assert_expected_call_order(model, params)
        except StubAssertionError as exc:
            self.violations.append(str(exc))
            raise

    def _get_response_handler(self, model: Any, params: Any, context: Any,
                              **kwargs: Any) -> Any:
        # Runs once per API call (the order check above runs twice): count calls here.
        self.operations.append(model.name)
        return super()._get_response_handler(model, params, context, **kwargs)

    def _assert_expected_params(self, model: Any, params: Any, context: Any,
                                **kwargs: Any) -> None:
        try:
            super()._assert_expected_params(model, params, context, **kwargs)
        except StubAssertionError as exc:
            self.violations.append(str(exc))
            raise

    def error(self, operation: str, code: str, *, expected_params: Any = None) -> None:
        self.add_client_error(operation, service_error_code=code,
                              service_message=f"{code} (stubbed)", http_status_code=400,
                              expected_params=expected_params)


def instance(instance_id: str, *, state: str = "running", ip: str | None = "203.0.113.10",
             tags: dict[str, str] | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"InstanceId": instance_id, "State": {"Name": state, "Code": 16}}
    if ip is not None:
        raw["PublicIpAddress"] = ip
    if tags:
        raw["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
    return raw


def reservation(*instances: dict[str, Any]) -> dict[str, Any]:
    return {"Reservations": [{"ReservationId": "r-1", "Instances": list(instances)}]
            if instances else []}
