"""The checks every browser test ends with can fail: a request off 127.0.0.1, a CSP violation."""

from __future__ import annotations

import pytest
from tests.browser._browser import Recorder, leaves_loopback


@pytest.mark.parametrize(
    ("url", "leaves"),
    [
        ("http://127.0.0.1:8700/console", False),
        ("http://127.0.0.1:8700/console/static/console.css?v=1", False),
        ("data:image/png;base64,AAAA", False),
        ("about:blank", False),
        ("http://localhost:8700/console", True),  # a name, resolved elsewhere: not allowed
        ("https://cdn.example.com/uplot.js", True),
        ("http://127.0.0.1.example.com/x", True),
        ("http://[::1]:8700/console", True),
        ("ws://10.0.0.1/socket", True),
    ],
)
def test_only_127_0_0_1_counts_as_staying_local(url, leaves):
    assert leaves_loopback(url) is leaves


@pytest.mark.slow
def test_the_recorder_sees_a_request_that_leaves_and_a_csp_violation(browser):
    recorder = Recorder()
    context = browser.new_context()
    recorder.attach(context)
    page = context.new_page()
    # A page whose policy forbids inline scripts, with one, and an image from elsewhere
    # (192.0.2.0/24 is reserved for documentation: nothing answers, the request is still made).
    page.route(
        "http://127.0.0.1:9/",
        lambda route: route.fulfill(
            status=200,
            headers={"content-security-policy": "default-src 'self'; img-src *"},
            content_type="text/html",
            body="<h1>x</h1><script>document.title='ran'</script>"
            "<img src='http://192.0.2.1/pixel.png' alt=''>",
        ),
    )
    page.route("http://192.0.2.1/**", lambda route: route.abort())
    page.goto("http://127.0.0.1:9/")
    page.wait_for_load_state("load")
    assert page.title() != "ran"  # the policy held
    context.close()
    assert recorder.outside() == ["http://192.0.2.1/pixel.png"]
    assert recorder.csp_violations(), recorder.messages
    with pytest.raises(AssertionError, match=r"leave 127\.0\.0\.1"):
        recorder.check()
