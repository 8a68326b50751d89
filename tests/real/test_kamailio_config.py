"""The generated Kamailio configuration passes ``kamailio -c`` for varied deployments."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.spec import validate
from real.proxy import check_config, render_config
from real.trunk import cps_window

DEPLOYMENTS = [
    {},
    {"trunk": {"channels": 1}, "proxy": {"workers": 1}},
    {"trunk": {"channels": 40, "cps_limit": 5}, "proxy": {"workers": 4}},
    {"trunk": {"channels": 3, "cps_limit": 0.5}, "agent": {"answer_ms": 250}},
]


@pytest.mark.real
@pytest.mark.usefixtures("kamailio_only")
@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_generated_config_passes_kamailio_check(deployment: dict, tmp_path: Path) -> None:
    exp = validate({"deployment": deployment})
    cfg = tmp_path / "kamailio.cfg"
    text = render_config(exp.deployment, sip_port=15999, agent_port=15998, workdir=tmp_path)
    cfg.write_text(text)
    ok, output = check_config(cfg)
    assert ok, output
    assert f"children={exp.deployment.proxy.workers}" in text
    assert f"#!define CHANNELS {exp.deployment.trunk.channels}" in text
    assert ("#!define WITH_CPS" in text) == (exp.deployment.trunk.cps_limit is not None)


def test_config_check_catches_a_broken_config(tmp_path: Path, kamailio_only: None) -> None:
    cfg = tmp_path / "broken.cfg"
    cfg.write_text("#!KAMAILIO\nrequest_route {\n}\n")  # empty route block: a parse error
    ok, _ = check_config(cfg)
    assert not ok


@pytest.mark.parametrize(("cps", "expected"), [(2, (1, 2)), (0.5, (2, 1)), (2.5, (2, 5)),
                                               (0.1, (10, 1)), (1 / 3, (3, 1))])
def test_cps_window(cps: float, expected: tuple[int, int]) -> None:
    assert cps_window(cps) == expected
