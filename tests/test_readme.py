"""The README stays true: every setting and every metric is documented, the commands exist."""

import re

import msgspec
from prometheus_client import REGISTRY

import dsw.metrics  # noqa: F401  (registers the metrics)
from dsw.config import Settings, env_name
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"WORKER_[A-Z_]+", README))
    missing = [
        env_name(f.name)
        for f in msgspec.structs.fields(Settings)
        if env_name(f.name) not in documented
    ]
    assert missing == []


def test_every_metric_is_documented() -> None:
    names = [
        family.name + ("_total" if family.type == "counter" else "")
        for family in REGISTRY.collect()
        if family.name.startswith("dsw_")
    ]
    assert names
    assert [name for name in names if f"`{name}`" not in README] == []


def test_the_quick_start_commands_are_the_ci_s() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q rust-just && just test" in README
    assert "\npip install -q rust-just && just test\n" in ci
    assert "pip install -q rust-just && just run" in README
