"""Small helpers for talking to the API in tests."""

from __future__ import annotations

from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"


async def post_registration(
    client: Any, form: object, *, key: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    response: httpx.Response = await client.post(
        "/registrations", json=form, headers=headers, **kwargs
    )
    return response


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem details body, after checking the status and the media type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["code"]
    return body
