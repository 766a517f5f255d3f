"""Shared fixtures: real `livesessions serve` processes (tests/e2e), the app
in this process (tests/api), and clients for both.

The helpers live in support.py; they are re-exported here so that
`from conftest import Server, Project, ...` keeps working. New code should
import them from `support`: a second conftest.py anywhere under tests/ would
also be the module `conftest` and shadow this one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import (  # noqa: F401 - re-exported for `from conftest import ...`
    BIN,
    SCALE_OUT,
    LocalApp,
    LocalSocket,
    ManualClock,
    Peer,
    Project,
    Server,
    create_key,
    eventually,
    free_port,
    new_wallet,
    sign,
    wait_closed,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SCALE_OUT:
        return
    skip = pytest.mark.skip(reason="tests the embedded store itself; this run is scaled out")
    for item in items:
        if item.get_closest_marker("embedded_only") is not None:
            item.add_marker(skip)


# --- real server processes ---------------------------------------------------


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield instance
    instance.stop()


API_TESTS = Path(__file__).parent / "api"


def _where_projects_live(request: pytest.FixtureRequest) -> Server | LocalApp:
    """Tests under tests/api run against the app in this process (the test's
    own `app`); every other test against the shared server process."""
    if request.path.is_relative_to(API_TESTS):
        return request.getfixturevalue("app")
    return request.getfixturevalue("server")


@pytest.fixture
def project(request: pytest.FixtureRequest) -> Project:
    """A fresh project (new wallet, new key): on the shared server, or under
    tests/api on the test's in-process app."""
    return _where_projects_live(request).project()


@pytest.fixture
def other_project(request: pytest.FixtureRequest) -> Project:
    return _where_projects_live(request).project()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for restarts and timing-sensitive checks."""
    instance = Server(tmp_path / "data")
    yield instance
    instance.stop()


# --- the app in this process ---------------------------------------------------


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., LocalApp]]:
    """Build the app in this process with the given Settings fields (see
    LocalApp); each is started now and shut down after the test."""
    apps: list[LocalApp] = []

    def make(**settings: Any) -> LocalApp:
        app = LocalApp(tmp_path / f"app-{len(apps)}", **settings)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def app(make_app: Callable[..., LocalApp]) -> LocalApp:
    """The app in this process, of the test's own, with a clock it can move."""
    return make_app()


os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(__file__).parent.parent / ".hypothesis"))
