"""The leader/worker channel: framing, and values that cross it unchanged."""
from __future__ import annotations

import pytest

from scrapoxy_server.cluster.channel import ChannelError, FrameDecoder, encode
from scrapoxy_server.cluster.messages import (endpoint_from_wire, endpoint_to_wire,
                                              settings_from_wire, settings_to_wire)
from scrapoxy_server.master.proxy import MasterSettings
from scrapoxy_server.models import Address, Credentials, Endpoint


def test_messages_split_at_any_byte_come_out_whole_and_in_order():
    stream = encode({"kind": "a", "n": 1}) + encode({"kind": "b", "text": "é" * 1000})
    decoder = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out.extend(decoder.feed(stream[i:i + 1]))
    assert out == [{"kind": "a", "n": 1}, {"kind": "b", "text": "é" * 1000}]


def test_several_messages_in_one_read_all_come_out():
    decoder = FrameDecoder()
    assert [m["n"] for m in decoder.feed(b"".join(encode({"kind": "x", "n": n})
                                                   for n in range(5)))] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("stream, reason", [
    (b"\xff\xff\xff\xff", "announced"),
    (b"\x00\x00\x00\x03abc", "not JSON"),
    (b"\x00\x00\x00\x02[]", "kind"),
    (b"\x00\x00\x00\x0b{\"kind\": 5}", "kind"),
])
def test_bytes_that_are_not_a_message_raise_channel_error(stream, reason):
    with pytest.raises(ChannelError, match=reason):
        FrameDecoder().feed(stream)


def test_endpoint_with_credentials_survives_the_channel():
    endpoint = Endpoint(name="p1", address=Address("::1", 3128),
                        credentials=Credentials(username="u", password="p:w@%"))
    assert endpoint_from_wire(endpoint_to_wire(endpoint)) == endpoint
    bare = Endpoint(name="p2", address=Address("127.0.0.2", 1))
    assert endpoint_from_wire(endpoint_to_wire(bare)) == bare


def test_master_settings_survive_the_channel_with_their_tuples():
    settings = MasterSettings(connect_timeout=3.0, idle_timeout=7.5, wait_for_instance=0.0,
                              allow=("*.example",), deny=("10.*", "bad.test"), access_log=True)
    import json
    wire = json.loads(json.dumps(settings_to_wire(settings)))
    assert settings_from_wire(wire) == settings


def test_an_unknown_setting_from_the_leader_is_refused_by_name():
    with pytest.raises(ValueError, match="'colour'"):
        settings_from_wire({"colour": "red"})
