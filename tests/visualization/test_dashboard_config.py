"""The dashboard's own settings: where it reads from and how long it waits for one API answer."""

from __future__ import annotations

import socket
import time

import pytest
from pydantic import ValidationError

from fedledger.api.errors import ApiUnreachableError
from fedledger.config import Settings
from visualization.data import Api, DashboardConfig


def test_the_dashboard_waits_for_the_api_as_long_as_its_setting_says() -> None:
    config = DashboardConfig.from_settings(Settings(dashboard_api_timeout=0.3))
    assert config.api_timeout == 0.3
    assert DashboardConfig.from_settings(Settings()).api_timeout == 10.0
    with pytest.raises(ValidationError, match="dashboard_api_timeout"):
        Settings(dashboard_api_timeout=0)
    # A server that accepts and never answers: the page's call gives up after the configured time.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Api(url, timeout=config.api_timeout) as api:
            start = time.monotonic()
            with pytest.raises(ApiUnreachableError, match="ReadTimeout"):
                api.overview()
            assert time.monotonic() - start < 5.0
