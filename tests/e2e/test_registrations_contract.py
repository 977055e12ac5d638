"""POST /registrations over HTTP, as the contract in DESIGN.md states it."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from tests.e2e.api_client import post_registration, problem
from tests.factories import (
    MISSING,
    make_cnpj,
    make_cpf,
    mask_cnpj,
    valid_address,
    valid_form,
    valid_pj_form,
)

Client = AsyncTestClient  # type: ignore[type-arg]


def _person(n: int, **overrides: object) -> dict[str, object]:
    email = f"person{n}@example.com"
    defaults: dict[str, object] = {"cpf": make_cpf(n), "email": email, "email_confirmation": email}
    return valid_form(**{**defaults, **overrides})


def _company(n: int, cpf: str, **overrides: object) -> dict[str, object]:
    email = f"company{n}@example.com"
    defaults: dict[str, object] = {
        "cnpj": mask_cnpj(make_cnpj(n)),
        "email": email,
        "email_confirmation": email,
    }
    return valid_pj_form(**{"cpf": cpf, **defaults, **overrides})


async def test_a_valid_signup_is_accepted_with_its_location(client: Client) -> None:
    response = await post_registration(client, _person(1))

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    registration_id = uuid.UUID(body["registration_id"])
    # Time-ordered with 74 random bits (application/identifiers.py says why).
    assert registration_id.version == 7
    assert response.headers["location"] == f"/registrations/{registration_id}"


async def test_every_invalid_field_is_listed_at_once_with_dotted_paths(client: Client) -> None:
    form = _person(2, cpf="123.456.789-00", name="M", address=valid_address(cep="123", state="XX"))
    form.pop("email")

    body = problem(await post_registration(client, form), 422)

    fields = {error["field"] for error in body["errors"]}
    assert fields == {"cpf", "name", "email", "address.cep", "address.state"}
    assert all(error["code"] and error["message"] for error in body["errors"])


async def test_unknown_fields_are_rejected(client: Client) -> None:
    form = _person(3, nickname="Mari", address={**valid_address(), "floor": "3"})

    body = problem(await post_registration(client, form), 422)

    assert {(e["field"], e["code"]) for e in body["errors"]} == {
        ("nickname", "unknown_field"),
        ("address.floor", "unknown_field"),
    }


async def test_a_registered_email_in_another_spelling_gets_a_conflict_naming_the_email(
    client: Client,
) -> None:
    assert (await post_registration(client, _person(4))).status_code == 202
    again = _person(5, email="  PERSON4@Example.com ", email_confirmation="person4@example.COM")

    body = problem(await post_registration(client, again), 409)

    assert body["field"] == "email"
    assert body["code"] == "email_already_registered"


async def test_a_persons_cpf_can_be_registered_only_once(client: Client) -> None:
    assert (await post_registration(client, _person(6))).status_code == 202
    same_cpf = valid_form(
        cpf=make_cpf(6), email="new6@example.com", email_confirmation="new6@example.com"
    )

    body = problem(await post_registration(client, same_cpf), 409)

    assert (body["field"], body["code"]) == ("cpf", "cpf_already_registered")


async def test_a_person_may_be_responsible_for_several_companies(client: Client) -> None:
    responsible = make_cpf(7)
    assert (await post_registration(client, _person(7))).status_code == 202

    first = await post_registration(client, _company(1, responsible))
    second = await post_registration(client, _company(2, responsible))

    assert (first.status_code, second.status_code) == (202, 202)


async def test_a_company_cnpj_can_be_registered_only_once(client: Client) -> None:
    assert (await post_registration(client, _company(3, make_cpf(8)))).status_code == 202
    email = "other-company@example.com"
    same_cnpj = valid_pj_form(
        cpf=make_cpf(9), cnpj=make_cnpj(3), email=email, email_confirmation=email
    )

    body = problem(await post_registration(client, same_cnpj), 409)

    assert (body["field"], body["code"]) == ("cnpj", "cnpj_already_registered")


async def test_an_alphanumeric_cnpj_is_accepted(client: Client) -> None:
    email = "alfa@example.com"
    form = valid_pj_form(
        cpf=make_cpf(10),
        cnpj=mask_cnpj(make_cnpj(42, alphanumeric=True)).lower(),
        email=email,
        email_confirmation=email,
    )

    assert (await post_registration(client, form)).status_code == 202


async def test_a_company_without_cnpj_and_a_person_with_one_are_invalid(client: Client) -> None:
    company = problem(await post_registration(client, _company(4, make_cpf(11), cnpj=MISSING)), 422)
    person = problem(
        await post_registration(client, _person(12, cnpj=mask_cnpj(make_cnpj(5)))), 422
    )

    assert [e["field"] for e in company["errors"]] == ["cnpj"]
    assert [e["field"] for e in person["errors"]] == ["cnpj"]


async def test_malformed_json_is_a_bad_request(client: Client) -> None:
    response = await client.post(
        "/registrations", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert problem(response, 400)["code"] == "malformed_json"


async def test_invalid_utf8_is_a_bad_request(client: Client) -> None:
    response = await client.post(
        "/registrations",
        content=b'{"name": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    problem(response, 400)


async def test_a_body_that_is_not_an_object_is_invalid(client: Client) -> None:
    body = problem(await post_registration(client, [1, 2]), 422)
    assert body["errors"][0]["field"] == ""


async def test_a_form_not_sent_as_json_is_refused(client: Client) -> None:
    response = await client.post("/registrations", data={"name": "Maria"})
    assert problem(response, 415)["code"] == "unsupported_media_type"


async def test_a_body_over_16_kib_is_refused(client: Client) -> None:
    form = _person(13, name="M" * 17_000)
    assert problem(await post_registration(client, form), 413)["code"] == "body_too_large"


async def test_unknown_paths_get_problem_details(client: Client) -> None:
    assert problem(await client.get("/nowhere"), 404)["code"] == "not_found"


@pytest.mark.parametrize("path", ["/registrationsx", "/registrations/a/b"])
async def test_paths_beside_the_registration_routes_are_not_found(
    client: Client, path: str
) -> None:
    # One handler serves the /registrations tree; what is neither route is 404, as elsewhere.
    assert problem(await client.get(path), 404)["code"] == "not_found"


async def test_a_status_path_takes_get_and_options_only(client: Client) -> None:
    path = f"/registrations/{uuid.uuid4()}"
    refused = await client.post(path, json={})
    assert problem(refused, 405)["code"] == "method_not_allowed"
    assert refused.headers["allow"] == "GET, OPTIONS"
    options = await client.options(path)
    assert (options.status_code, options.headers["allow"]) == (204, "GET, OPTIONS")


async def test_health_and_schema_are_served(client: Client) -> None:
    assert (await client.get("/health/live")).status_code == 200
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"postgres": True, "redis": True, "projections": True}
    schema = await client.get("/schema/openapi.json")
    assert "/registrations" in schema.json()["paths"]


async def test_the_schema_describes_the_form_and_every_answer(client: Client) -> None:
    post = (await client.get("/schema/openapi.json")).json()["paths"]["/registrations"]["post"]

    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) >= {"person_type", "cpf", "email", "address", "accepted_terms"}
    assert body["properties"]["address"]["properties"]["number"]["maxLength"] == 20
    assert set(post["responses"]) == {"202", "400", "409", "413", "415", "422", "429", "503"}
    assert "application/problem+json" in post["responses"]["422"]["content"]
