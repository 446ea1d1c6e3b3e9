"""The ``awsec2`` provider: proxy instances on EC2 through boto3, never blocking the reactor.

What it promises (DESIGN, "Manager: the lifecycle contract"):

- It tags what it creates (``config.tag_key = config.tag_value``, at launch through
  ``TagSpecifications`` and again with ``CreateTags``, because some EC2-compatible endpoints
  ignore ``TagSpecifications`` and an untagged VM would be invisible to us and cost money
  forever). It lists and terminates only instances carrying that tag.
- It needs no custom AMI: user data installs a stock tinyproxy or squid (``awsec2_userdata``)
  on the newest stock Ubuntu LTS image built for the instance type's architecture (looked up
  with ``DescribeInstanceTypes``, so Graviton types get arm64), unless ``image_id`` is set.
- ``tag_value`` and ``allowed_cidr`` must be set (config validation requires ``allowed_cidr``;
  ``server_id.resolve_tags`` gives ``tag_value`` a per-server default).
- Every boto3 call runs in a thread; retries and their waits happen on the reactor side
  (``task.deferLater`` on the injected reactor), so tests drive them with ``task.Clock``.
- Throttling (``RequestLimitExceeded``...) and eventual consistency
  (``InvalidInstanceID.NotFound`` on ids just launched) are retried with exponential backoff and
  jitter, a bounded number of times. ``RunInstances`` carries a ``ClientToken`` that stays the
  same across the retries of one logical create, so a retry can never launch twice.
- Capacity and limit errors (``VcpuLimitExceeded``...) are not retried: they fail with
  ``ProviderError(retryable=False)`` carrying AWS's message, are kept in ``last_error`` for the
  API and GUI, and for ``capacity_cooldown`` seconds further creates fail at once without
  calling AWS (at most one attempt per window, whatever the caller's tick rate).
- Right after ``RunInstances``, ``DescribeInstances`` may not show the new instances yet. The
  provider lists ids it launched recently as ``STARTING`` until EC2 shows them (or
  ``launch_visibility`` seconds pass), so the manager does not launch replacements for
  instances that exist.

The instance proxy password is ``config.instance_password`` or, when unset, generated once per
provider object. It is put in the user data and the listed credentials, and never logged.
Instances launched by an earlier server run with another generated password fail their health
checks and are replaced; set ``instance_password`` to keep them across restarts.
"""
from __future__ import annotations

import enum
import logging
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from ..config import AwsEc2ProviderConfig
from ..models import Address, Credentials, ProviderInstance, Status
from .awsec2_userdata import build_user_data, check_credentials
from .base import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

UBUNTU_OWNER = "099720109477"  # Canonical
# Stock Ubuntu LTS releases the user data works on, newest first: the newest with an image wins.
UBUNTU_RELEASES = ("noble-24.04", "jammy-22.04")
# EC2 architecture -> the word Canonical's image names use for it, in order of preference.
UBUNTU_ARCHITECTURES = {"x86_64": "amd64", "arm64": "arm64"}

# Everything but "terminated": terminated instances stay visible for an hour on AWS (and
# forever in moto) and must not count as part of the pool.
LISTED_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
TERMINABLE_STATES = ("pending", "running", "stopping", "stopped")

THROTTLING_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "TooManyRequestsException",
})
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound"})
CAPACITY_CODES = frozenset({
    "VcpuLimitExceeded", "InstanceLimitExceeded", "InsufficientInstanceCapacity",
    "MaxSpotInstanceCountExceeded", "Unsupported", "SpotMaxPriceTooLow",
    "InsufficientFreeAddressesInSubnet",
    # Not capacity, but just as lasting: a configuration error does not clear on retry.
    "InvalidInstanceType", "InvalidParameterValue",
})

_STATES: dict[str, Status] = {
    "pending": Status.STARTING,
    "running": Status.STARTED,
    "stopping": Status.STOPPING,
    "shutting-down": Status.STOPPING,
    "stopped": Status.STOPPED,
    "terminated": Status.STOPPED,
}


def map_state(ec2_state_name: str) -> Status:
    """EC2 instance state name -> our status; an unknown name is an ``ERROR``."""
    return _STATES.get(ec2_state_name, Status.ERROR)


class ErrorKind(enum.Enum):
    THROTTLED = "throttled"
    NOT_FOUND = "not_found"
    CAPACITY = "capacity"
    OTHER = "other"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: ClientError) -> ErrorKind:
    code = error_code(exc)
    if code in THROTTLING_CODES:
        return ErrorKind.THROTTLED
    if code in NOT_FOUND_CODES:
        return ErrorKind.NOT_FOUND
    if code in CAPACITY_CODES:
        return ErrorKind.CAPACITY
    return ErrorKind.OTHER


@dataclass(frozen=True)
class Ec2Policy:
    """Retry and timing knobs, in seconds."""

    # Attempts per API call for throttling / eventual-consistency errors (first one included).
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 20.0
    # After a capacity or limit error, creates fail at once for this long.
    capacity_cooldown: float = 60.0
    # How long a launched id not yet shown by DescribeInstances is still listed as STARTING.
    launch_visibility: float = 120.0

    def backoff(self, *, attempt: int, rng: random.Random) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, capped, with
        "equal jitter" so that many throttled callers spread out but never retry at once."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def build_client(config: AwsEc2ProviderConfig) -> Any:
    """A boto3 EC2 client from the config; botocore's own retries are off so that all
    retrying (and its waiting) happens on the reactor side, under one policy."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "ec2",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        config=BotoConfig(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=60),
    )


class AwsEc2Provider:
    """EC2 instances tagged ``config.tag_key = config.tag_value``."""

    creates_instances = True

    def __init__(self, *, reactor: Any, config: AwsEc2ProviderConfig, client: Any = None,
                 threadpool: Any = None, policy: Ec2Policy | None = None,
                 rng: random.Random | None = None) -> None:
        if config.tag_value is None:
            # Resolved from the server id at start (server_id.resolve_tags); a shared default
            # would let two servers adopt and terminate each other's instances.
            raise ValueError(f"providers {config.name!r}: tag_value is not set")
        if config.allowed_cidr is None:
            raise ValueError(f"providers {config.name!r}: allowed_cidr is not set")
        self.name = config.name
        self._reactor = reactor
        self._config = config
        self._tag_value: str = config.tag_value
        self._allowed_cidr: str = config.allowed_cidr
        self._client = client if client is not None else build_client(config)
        # None: the reactor's own pool, fetched at first use (not here: no side effects at
        # construction).
        self._threadpool = threadpool
        self._policy = policy if policy is not None else Ec2Policy()
        self._rng = rng if rng is not None else random.Random()
        password = config.instance_password
        if password is None:
            password = secrets.token_urlsafe(24)
        check_credentials(username=config.instance_username, password=password)
        self._credentials = Credentials(username=config.instance_username, password=password)
        self._image_id: str | None = config.image_id
        self._security_group_id: str | None = config.security_group_id
        # id -> reactor time of launch, for ids EC2 has not shown us yet.
        self._launched: dict[str, float] = {}
        self._last_error: tuple[str, str] | None = None  # (action, message)
        self._capacity_error: ProviderError | None = None
        self._capacity_until = 0.0

    # --- what the manager and the API read -------------------------------------------------

    @property
    def last_error(self) -> str | None:
        """The last failure not yet followed by a success of the same action, for the API."""
        return None if self._last_error is None else self._last_error[1]

    @property
    def credentials(self) -> Credentials:
        return self._credentials

    # --- Provider interface ------------------------------------------------------------

    def list_instances(self) -> Deferred[Sequence[ProviderInstance]]:
        return Deferred.fromCoroutine(self._guarded("list", self._list()))

    def create_instances(self, count: int) -> Deferred[None]:
        if count <= 0:
            return succeed(None)
        return Deferred.fromCoroutine(self._guarded("create", self._create(count)))

    def terminate_instances(self, ids: Sequence[str]) -> Deferred[None]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return succeed(None)
        return Deferred.fromCoroutine(self._guarded("terminate", self._terminate(ids)))

    def shutdown(self) -> Deferred[None]:
        # Nothing to release: the boto3 client holds no connections worth closing, and the
        # manager decides whether instances are terminated.
        return succeed(None)

    # --- list ------------------------------------------------------------------------

    async def _list(self) -> list[ProviderInstance]:
        found = await self._describe([
            self._tag_filter(),
            {"Name": "instance-state-name", "Values": list(LISTED_STATES)},
        ])
        instances = [self._to_instance(raw) for raw in found]
        seen = {raw["InstanceId"] for raw in found}
        now = self._reactor.seconds()
        for instance_id, launched_at in list(self._launched.items()):
            if instance_id in seen or now - launched_at > self._policy.launch_visibility:
                del self._launched[instance_id]
            else:
                # Launched by us, not yet visible: report it so nobody launches a replacement.
                instances.append(ProviderInstance(
                    id=instance_id, provider=self.name, status=Status.STARTING,
                    region=self._config.region, credentials=self._credentials,
                ))
        return instances

    def _to_instance(self, raw: dict[str, Any]) -> ProviderInstance:
        hostname = raw.get("PublicIpAddress") or raw.get("PrivateIpAddress")
        address = Address(hostname=hostname, port=self._config.port) if hostname else None
        status = map_state(raw.get("State", {}).get("Name", ""))
        error = None
        if status in (Status.STOPPED, Status.ERROR):
            error = raw.get("StateReason", {}).get("Message")
        return ProviderInstance(
            id=raw["InstanceId"], provider=self.name, status=status, address=address,
            region=self._config.region, credentials=self._credentials, error=error,
        )

    async def _describe(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"Filters": filters}
        # Page by page, each page its own retried call, so one throttled page does not
        # restart the whole listing.
        while True:
            page = await self._call("describe_instances", params, retry_not_found=True)
            for reservation in page.get("Reservations", []):
                found.extend(reservation.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return found
            params = {"Filters": filters, "NextToken": token}

    # --- create ----------------------------------------------------------------------

    async def _create(self, count: int) -> None:
        now = self._reactor.seconds()
        if self._capacity_error is not None and now < self._capacity_until:
            # Same answer as last time without calling AWS: a limit does not lift in seconds.
            raise self._capacity_error
        image_id = await self._resolve_image()
        security_group_id = await self._resolve_security_group()
        params = self._run_params(count=count, image_id=image_id,
                                  security_group_id=security_group_id)
        try:
            response = await self._call("run_instances", params)
        except ClientError as exc:
            if classify(exc) is ErrorKind.CAPACITY:
                error = _provider_error(exc)
                self._capacity_error = error
                self._capacity_until = self._reactor.seconds() + self._policy.capacity_cooldown
                raise error from exc
            raise
        self._capacity_error = None
        ids = [raw["InstanceId"] for raw in response.get("Instances", [])]
        launched_at = self._reactor.seconds()
        for instance_id in ids:
            self._launched[instance_id] = launched_at
        log.info("awsec2 %s: launched %d instance(s): %s", self.name, len(ids), ", ".join(ids))
        await self._tag(ids)

    def _run_params(self, *, count: int, image_id: str,
                    security_group_id: str | None) -> dict[str, Any]:
        config = self._config
        tags = [{"Key": config.tag_key, "Value": self._tag_value},
                {"Key": "Name", "Value": f"scrapoxy-{config.name}"}]
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": config.instance_type,
            "MinCount": count,
            "MaxCount": count,
            "UserData": build_user_data(
                proxy=config.proxy, port=config.port, username=self._credentials.username,
                password=self._credentials.password, allowed_cidr=self._allowed_cidr,
            ),
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
            # One token per logical create, reused by every retry of it: EC2 then launches
            # at most once for the token, whatever happened to the earlier attempt's answer.
            "ClientToken": uuid.uuid4().hex,
        }
        if security_group_id is not None:
            params["SecurityGroupIds"] = [security_group_id]
        if config.subnet_id is not None:
            params["SubnetId"] = config.subnet_id
        if config.key_name is not None:
            params["KeyName"] = config.key_name
        if config.spot:
            params["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time",
                                "InstanceInterruptionBehavior": "terminate"},
            }
        return params

    async def _tag(self, ids: list[str]) -> None:
        if not ids:
            return
        tags = [{"Key": self._config.tag_key, "Value": self._tag_value}]
        try:
            await self._call("create_tags", {"Resources": ids, "Tags": tags},
                             retry_not_found=True)
        except (ClientError, BotoCoreError) as exc:
            # The launch itself tagged them (TagSpecifications); failing the create now would
            # make the manager launch again while these run.
            log.warning("awsec2 %s: CreateTags on %s failed after retries: %s",
                        self.name, ", ".join(ids), _describe_exc(exc))

    async def _resolve_image(self) -> str:
        """``image_id``, or the latest stock Ubuntu LTS image for the instance type's
        architecture (an x86_64 image cannot boot a Graviton type, and the reverse)."""
        if self._image_id is not None:
            return self._image_id
        architecture = await self._architecture()
        arch_word = UBUNTU_ARCHITECTURES[architecture]
        names = [f"ubuntu/images/*ubuntu-{release}-{arch_word}-server-*"
                 for release in UBUNTU_RELEASES]
        response = await self._call("describe_images", {
            "Owners": [UBUNTU_OWNER],
            "Filters": [{"Name": "name", "Values": names},
                        {"Name": "state", "Values": ["available"]},
                        {"Name": "architecture", "Values": [architecture]}],
        })
        images = response.get("Images", [])
        if not images:
            raise ProviderError(
                f"no stock Ubuntu image ({', '.join(UBUNTU_RELEASES)}) for {architecture} "
                f"({self._config.instance_type}) found in {self._config.region}; set image_id",
                retryable=False,
            )
        latest = max(images, key=_image_rank)
        self._image_id = latest["ImageId"]
        log.info("awsec2 %s: using image %s (%s) for %s", self.name, self._image_id,
                 latest.get("Name"), self._config.instance_type)
        return self._image_id

    async def _architecture(self) -> str:
        """The architecture of ``instance_type`` that a stock image exists for."""
        instance_type = self._config.instance_type
        response = await self._call("describe_instance_types", {"InstanceTypes": [instance_type]})
        types = response.get("InstanceTypes", [])
        supported = types[0].get("ProcessorInfo", {}).get("SupportedArchitectures", []) \
            if types else []
        for architecture in UBUNTU_ARCHITECTURES:
            if architecture in supported:
                return architecture
        raise ProviderError(
            f"instance type {instance_type} runs {', '.join(supported) or 'no known architecture'}"
            f", for which there is no stock Ubuntu image; set image_id", retryable=False)

    async def _resolve_security_group(self) -> str | None:
        if self._security_group_id is not None or not self._config.create_security_group:
            return self._security_group_id
        config = self._config
        group_name = f"scrapoxy-{config.name}"
        vpc_id = None
        if config.subnet_id is not None:
            subnets = await self._call("describe_subnets", {"SubnetIds": [config.subnet_id]})
            vpc_id = subnets["Subnets"][0]["VpcId"]
        group_id = await self._find_group(group_name, vpc_id)
        if group_id is None:
            params: dict[str, Any] = {
                "GroupName": group_name,
                "Description": "Scrapoxy proxy instances: proxy port from the master only",
                "TagSpecifications": [{"ResourceType": "security-group", "Tags": [
                    {"Key": config.tag_key, "Value": self._tag_value}]}],
            }
            if vpc_id is not None:
                params["VpcId"] = vpc_id
            try:
                group_id = (await self._call("create_security_group", params))["GroupId"]
            except ClientError as exc:
                # Another server process created it in the meantime.
                if error_code(exc) != "InvalidGroup.Duplicate":
                    raise
                group_id = await self._find_group(group_name, vpc_id)
                if group_id is None:
                    raise
        ip_range_key, cidr_key = (("Ipv6Ranges", "CidrIpv6") if ":" in self._allowed_cidr
                                  else ("IpRanges", "CidrIp"))
        try:
            await self._call("authorize_security_group_ingress", {
                "GroupId": group_id,
                "IpPermissions": [{
                    "IpProtocol": "tcp", "FromPort": config.port, "ToPort": config.port,
                    ip_range_key: [{cidr_key: self._allowed_cidr,
                                    "Description": "scrapoxy master"}],
                }],
            })
        except ClientError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
        self._security_group_id = group_id
        log.info("awsec2 %s: using security group %s (%s)", self.name, group_id, group_name)
        return group_id

    async def _find_group(self, group_name: str, vpc_id: str | None) -> str | None:
        filters = [{"Name": "group-name", "Values": [group_name]}]
        if vpc_id is not None:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups = (await self._call("describe_security_groups", {"Filters": filters}))
        found = groups.get("SecurityGroups", [])
        return found[0]["GroupId"] if found else None

    # --- terminate -------------------------------------------------------------------

    async def _terminate(self, ids: list[str]) -> None:
        # Only instances carrying our tag: an id from anywhere else (a typo, a stale name, a
        # colleague's VM) must never be terminated. Filters, unlike InstanceIds, do not fail
        # on ids that no longer exist.
        found = await self._describe([
            self._tag_filter(),
            {"Name": "instance-id", "Values": ids},
            {"Name": "instance-state-name", "Values": list(TERMINABLE_STATES)},
        ])
        ours = [raw["InstanceId"] for raw in found]
        # Launched by us but not visible yet: ours for sure, so terminate them too.
        ours += [i for i in ids if i in self._launched and i not in ours]
        skipped = [i for i in ids if i not in ours]
        if skipped:
            log.info("awsec2 %s: not terminating %s (not ours, or already gone)",
                     self.name, ", ".join(skipped))
        if not ours:
            return
        await self._call("terminate_instances", {"InstanceIds": ours}, retry_not_found=True)
        for instance_id in ours:
            self._launched.pop(instance_id, None)
        log.info("awsec2 %s: terminating %s", self.name, ", ".join(ours))

    # --- plumbing --------------------------------------------------------------------

    def _tag_filter(self) -> dict[str, Any]:
        return {"Name": f"tag:{self._config.tag_key}", "Values": [self._tag_value]}

    async def _call(self, operation: str, params: dict[str, Any], *,
                    retry_not_found: bool = False) -> dict[str, Any]:
        """One boto3 call in a thread, retried on throttling (and, when asked, on
        eventual-consistency NotFound) with backoff. ``params`` is the same object on every
        attempt, so idempotency tokens in it are reused. Never logs ``params``: they may
        hold the user data, which holds the instance password."""
        method = getattr(self._client, operation)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._in_thread(method, **params)
            except ClientError as exc:
                kind = classify(exc)
                transient = kind is ErrorKind.THROTTLED or (
                    retry_not_found and kind is ErrorKind.NOT_FOUND)
                error: Exception = exc
                reason = error_code(exc)
            except (BotoConnectionError, HTTPClientError) as exc:
                # A lost answer (timeout, reset) is where the reused ClientToken matters most:
                # the retry returns the instances the first attempt launched.
                error, transient, reason = exc, True, type(exc).__name__
            if not transient or attempt >= self._policy.max_attempts:
                raise error
            delay = self._policy.backoff(attempt=attempt, rng=self._rng)
            log.warning("awsec2 %s: %s failed with %s (attempt %d/%d), retrying in %.1f s",
                        self.name, operation, reason, attempt, self._policy.max_attempts, delay)
            await task.deferLater(self._reactor, delay, lambda: None)

    def _in_thread(self, fn: Callable[..., T], **kwargs: Any) -> Deferred[T]:
        pool = self._threadpool if self._threadpool is not None else self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, **kwargs)

    async def _guarded(self, action: str, work: Awaitable[T]) -> T:
        """Turn SDK errors into ProviderError and keep the last one for the API."""
        try:
            result = await work
        except ProviderError as exc:
            self._last_error = (action, str(exc))
            raise
        except ClientError as exc:
            error = _provider_error(exc)
            self._last_error = (action, str(error))
            raise error from exc
        except BotoCoreError as exc:
            error = ProviderError(f"{action} failed: {_describe_exc(exc)}", retryable=True)
            self._last_error = (action, str(error))
            raise error from exc
        if self._last_error is not None and self._last_error[0] == action:
            self._last_error = None
        return result


def _image_rank(image: dict[str, Any]) -> tuple[int, str]:
    """Newer release first, then the latest build of it."""
    name = image.get("Name", "")
    release = next((len(UBUNTU_RELEASES) - i for i, r in enumerate(UBUNTU_RELEASES)
                    if f"-{r}-" in name), 0)
    return release, image.get("CreationDate", "")


def _provider_error(exc: ClientError) -> ProviderError:
    retryable = classify(exc) is not ErrorKind.CAPACITY
    api = getattr(exc, "operation_name", None) or "EC2 call"
    return ProviderError(f"{api} failed: {_describe_exc(exc)}", retryable=retryable)


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code") or "Error"
        message = error.get("Message")
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"
