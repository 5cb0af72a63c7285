"""The embedded server's ``PATCH /v1/admin/api-keys/{key_id}`` (updateApiKey), on the raw wire."""

from __future__ import annotations

import httpx
from conftest import ADMIN_KEY

from runcycles.local import LocalCyclesServer


def test_update_api_key_on_the_wire(server: LocalCyclesServer) -> None:
    server.create_tenant("acme")
    with httpx.Client(
        transport=server.transport(), base_url="http://local", headers={"X-Admin-API-Key": ADMIN_KEY}
    ) as http:
        key = http.post("/v1/admin/api-keys", json={"tenant_id": "acme", "name": "bot"}).json()
        path = f"/v1/admin/api-keys/{key['key_id']}"
        answer = http.patch(path, json={"name": "renamed", "permissions": ["events:read"], "scope_filter": ["agent:*"]})
        assert answer.status_code == 200
        body = answer.json()
        assert (body["name"], body["permissions"], body["scope_filter"]) == ("renamed", ["events:read"], ["agent:*"])
        assert (body["status"], body["tenant_id"], body["key_prefix"]) == ("ACTIVE", "acme", key["key_prefix"])
        assert "key_secret" not in body

        bad = http.patch(path, json={"permissions": ["root"]})
        assert (bad.status_code, bad.json()["error"]) == (400, "INVALID_REQUEST")
        assert "permissions[0]" in bad.json()["message"]
        immutable = http.patch(path, json={"tenant_id": "other"})
        assert immutable.status_code == 400
        missing = http.patch("/v1/admin/api-keys/key_nope", json={"name": "x"})
        assert (missing.status_code, missing.json()["error"]) == (404, "NOT_FOUND")
        assert http.delete(path).status_code == 200
        revoked = http.patch(path, json={"name": "x"})
        assert (revoked.status_code, revoked.json()["error"]) == (409, "KEY_REVOKED")
        anonymous = http.patch(path, json={"name": "x"}, headers={"X-Admin-API-Key": "wrong"})
        assert anonymous.status_code == 401
