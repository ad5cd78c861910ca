"""The plugin's routes with hostile path parameters and JSON bodies: every answer is a success
or a 4xx naming the problem, short; never a server error."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import trainyard_web as web
import yaml
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import OUTCOMES, PATH_TRICKS, long_strings, mutated
from trainyard.tenancy.config import CONFIG_ENV

TENANTS = st.one_of(
    st.sampled_from(["acme", "globex", "nobody", "ACME", "acme/../globex", "", "%2e%2e"]),
    st.text(max_size=20),
    long_strings(),
).filter(lambda tenant: len(quote(tenant, safe="")) < 60_000)  # httpx's own limit on URLs
BODIES = st.one_of(
    mutated({"path": "datasets/digits", "files": 3}),
    st.sampled_from(PATH_TRICKS).map(lambda path: {"path": path}),
)
ROUTES = st.sampled_from(
    [
        ("GET", "/api/tenants/{tenant}/jobs"),
        ("GET", "/tenants/{tenant}/jobs"),
        ("POST", "/api/tenants/{tenant}/data-events"),
        ("POST", "/api/tenants/{tenant}/data-events"),
        ("GET", "/"),
        ("GET", "/api/usage?tenant={tenant}"),
        ("POST", "/api/jobs/{tenant}/pause"),
    ]
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The plugin's app as a caller allowed to use acme and nothing else; data events are
    recorded in a list instead of Airflow's database."""
    root = tmp_path_factory.mktemp("web-fuzz")
    config = {
        "work_dir": "work",
        "tenants": [
            {"name": name, "storage": {"kind": "local", "root": f"storage/{name}"}}
            for name in ("acme", "globex")
        ],
    }
    (root / "trainyard.yaml").write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CONFIG_ENV, str(root / "trainyard.yaml"))
        patch.setattr(web, "may_use_runs", lambda user, tenant, method="GET": tenant == "acme")
        patch.setattr(web, "register_data_event", lambda tenant, prefix, files: [prefix])
        # Airflow's side, as the plugin tests stub it: no runs in its database, not an admin.
        # trainyard_web imports the fleet routes' module as it ends (that module imports it).
        import trainyard_fleet as fleet_routes

        patch.setattr(web, "airflow_runs", lambda tenant, run_id=None: {})
        patch.setattr(fleet_routes, "is_admin", lambda user: False)
        web.app.dependency_overrides[web.authenticated_user] = lambda: "someone"
        try:
            yield TestClient(web.app, raise_server_exceptions=True)
        finally:
            web.app.dependency_overrides.clear()


@settings(max_examples=max(settings().max_examples // 2, 50))
@given(ROUTES, TENANTS, BODIES, st.booleans())
def test_routes_with_hostile_input(
    client: TestClient, route: tuple[str, str], tenant: str, body: Any, as_text: bool
) -> None:
    method, template = route
    url = template.format(tenant=quote(tenant, safe=""))
    if method == "POST":
        content = json.dumps(body).encode() if as_text else b"{" + str(body).encode()[:100]
        response = client.request(
            method, url, content=content, headers={"Content-Type": "application/json"}
        )
    else:
        response = client.request(method, url)

    counts = OUTCOMES.setdefault("web", Counter())
    counts["valid" if response.status_code == 200 else "rejected"] += 1
    assert response.status_code in (200, 400, 403, 404, 405, 422), response.text
    if response.status_code != 200:
        assert response.json()["detail"], response.text
        assert len(response.text) < 2000, response.text[:200]
