"""One conversion point for Docker errors (fault 3 of issue 8): not every DockerException
means "engine unreachable"."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from pool.contexts.dockerapi import convert
from pool.errors import EngineError, EngineUnavailableError, PermanentContextError


def api_error(status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"HTTP {status}", response=response, explanation="nope")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (requests.exceptions.ConnectionError("refused"), EngineUnavailableError),
        (requests.exceptions.ReadTimeout("slow"), EngineError),
        (docker.errors.InvalidArgument("bad mem_limit"), PermanentContextError),
        (api_error(400), PermanentContextError),
        (api_error(500), EngineError),
    ],
)
def test_docker_errors_map_to_their_meaning(exc: Exception, kind: type[EngineError]) -> None:
    err = convert(exc, "create x")
    assert type(err) is kind
    assert str(err).startswith("create x: ")


def test_a_timeout_or_a_bad_argument_is_not_unreachable() -> None:
    for exc in (requests.exceptions.ReadTimeout("slow"), docker.errors.InvalidArgument("x")):
        assert not isinstance(convert(exc, "x"), EngineUnavailableError)
