"""``scrapoxy-server init`` writes a template that is valid, and whose examples are valid."""
from __future__ import annotations

import re

import pytest

from scrapoxy_server.cli import TEMPLATE, main
from scrapoxy_server.config import Config, ConfigError, load_file


def test_init_writes_a_template_that_loads_as_the_defaults(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    assert main(["init", str(path)]) == 0
    assert load_file(path) == Config()


def uncomment_awsec2(text: str) -> str:
    block = text[text.index('# [[providers]]\n# type = "awsec2"'):]
    lines = [re.sub(r"^# ", "", line) for line in block.splitlines()
             if re.match(r"^# ([a-z_]+ = |\[\[)", line)]
    return text.replace(block, "\n".join(lines) + "\n")


def test_the_awsec2_example_needs_only_check_url(tmp_path):
    path = tmp_path / "scrapoxy.toml"
    text = uncomment_awsec2(TEMPLATE)
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(path)
    assert info.value.path == "manager.check_url"
    path.write_text(text.replace('# check_url = "http://checkip.amazonaws.com/"',
                                 'check_url = "http://checkip.amazonaws.com/"'))
    aws = load_file(path).providers[1]
    assert (aws.type, aws.allowed_cidr, aws.tag_value) == ("awsec2", "198.51.100.7/32", None)
