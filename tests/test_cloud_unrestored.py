"""Placeholders the cloud made up (never issued for this request) stay in the answer as the
cloud wrote them, and the answer says so: `redactions["unrestored"]` lists them.

A real gateway on loopback; the cloud model is the gateway's Upstream seam, scripted.
"""

from __future__ import annotations

from typing import Any

import pytest

from kernels import Engine
from tests.conftest_gateway import GatewayFactory
from tests.test_choice_runtime import ScriptedUpstream
from tests.test_runtime_cloud import _Scripted, make_runtime

MAIL = [{"role": "user", "content": "Draft a note to jane.roe@example.org about the invoice."}]
REPLY = "Sure. Send it to <EMAIL_1>, copy <EMAIL_7> and ask <PERSON_3>."


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_a_cloud_answer_lists_the_placeholders_it_made_up(
    engine: Engine, start_gateway: GatewayFactory, streamed: bool
) -> None:
    upstream = ScriptedUpstream(REPLY)
    gw = start_gateway(upstream=upstream)
    with make_runtime(engine, gw.url, gw.home.credential) as rt:
        if streamed:
            stream = rt.stream(MAIL, mode="cloud-only")
            text = "".join(stream)
            result = stream.result
        else:
            result = rt.generate(MAIL, mode="cloud-only")
            text = result.text
    assert "jane.roe@example.org" not in str(upstream.requests[-1])
    assert result is not None and result.source == "cloud"
    assert text == "Sure. Send it to jane.roe@example.org, copy <EMAIL_7> and ask <PERSON_3>."
    assert result.redactions == {"counts": {"EMAIL": 1}, "blocked": None,
                                 "unrestored": ["<EMAIL_7>", "<PERSON_3>"]}
    assert result.to_dict()["redactions"]["unrestored"] == ["<EMAIL_7>", "<PERSON_3>"]


def test_an_escalated_answer_lists_them_too(engine: Engine, start_gateway: GatewayFactory) -> None:
    upstream = ScriptedUpstream(REPLY)
    gw = start_gateway(upstream=upstream)
    scripted: Any = _Scripted(engine, "I am not sure what to write.")
    with make_runtime(scripted, gw.url, gw.home.credential, threshold=0.99,
                      send_draft=True) as rt:
        result = rt.generate(MAIL, params=rt.params(max_tokens=40))
    assert result.source == "cloud" and "escalated to the cloud" in result.reason
    assert result.redactions["unrestored"] == ["<EMAIL_7>", "<PERSON_3>"]
    assert result.redactions["counts"] == {"EMAIL": 1}


def test_an_answer_with_only_issued_placeholders_reports_none(
    engine: Engine, start_gateway: GatewayFactory
) -> None:
    gw = start_gateway(upstream=ScriptedUpstream("Send it to <EMAIL_1>."))
    with make_runtime(engine, gw.url, gw.home.credential) as rt:
        result = rt.generate(MAIL, mode="cloud-only")
    assert result.text == "Send it to jane.roe@example.org."
    assert "unrestored" not in result.redactions
