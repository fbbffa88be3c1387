"""The demo's reviewer turn when Label Studio does not answer."""

from __future__ import annotations

import socket

from hitl_pipeline.demo.app import answer_while_reachable
from hitl_pipeline.demo.reviewers import ReviewerPool, SimulatedReviewer


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_label_studio_that_does_not_answer_is_named_and_the_turn_counts_no_answers(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    pool = ReviewerPool(
        url=url, api_key="unused", reviewers=[SimulatedReviewer("a@sim.hitl.local", seed=1)]
    )

    answered = answer_while_reachable(pool, {"i1": "retain"})

    assert answered == 0
    err = capsys.readouterr().err
    assert f"Label Studio at {url} does not answer" in err
    assert "hitl-pipeline labelstudio start" in err
