"""Hostile input: whatever a client sends, the answer is a 4xx problem, never a 5xx.

Two parts, both against a ``signup api`` process (uvicorn + httptools, as in production):

- schemathesis reads the live OpenAPI schema (``/schema/openapi.json``) and sends thousands
  of generated requests (its examples, coverage and fuzzing phases, valid and invalid data):
  none may get a 5xx, and every answer must match the schema (status code declared, content
  type declared, body valid against the declared schema; a schema-invalid request refused).
- hand-made abuse the generator does not reach: oversized and chunked bodies, deep nesting,
  invalid UTF-8, huge numbers, NUL bytes, 10,000-character values, wrong content types.
  Each must get a 4xx ``application/problem+json`` answer with a ``code``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from infrastructure.settings import Settings
from tests import clients
from tests.factories import make_cpf, valid_form
from tests.faults.harness import Processes, server_env
from tests.servers import TEST_RESERVATION_KEY, create_database

# Generated requests: at least this many in all (CI), reproducible (derandomize).
GENERATED_AT_LEAST = 2_000
FUZZ_EXAMPLES_PER_OPERATION = 1_100
SENT: Counter[str] = Counter()  # generated requests sent, by operation
ANSWERED: Counter[tuple[str, str, int]] = Counter()  # by operation, generation mode, status
REFUSED_WITH = {"400", "404", "405", "413", "415", "422"}  # what a schema-invalid request gets


@pytest.fixture(scope="module")
def api_process(
    postgres_url: str,
    redis_url: str,
    migrated_templates: tuple[str, str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Processes]]:
    main, shard_0, shard_1 = (
        create_database(postgres_url, template=template) for template in migrated_templates
    )
    configured = Settings(
        reservation_key=TEST_RESERVATION_KEY,
        database_url=main,
        redis_url=redis_url,
        shard_database_urls=(shard_0, shard_1),
    )
    with Processes(tmp_path_factory.mktemp("hostile"), server_env(configured)) as processes:
        url, _ = processes.api()
        yield url, processes


@pytest.fixture(scope="module")
def live_api(api_process: tuple[str, Processes]) -> str:
    return api_process[0]


@pytest.fixture(scope="module")
def live_schema(live_api: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": sorted(REFUSED_WITH)}}}
    )
    return schemathesis.openapi.from_url(f"{live_api}/schema/openapi.json", config=config)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads ``node._nodeid``, which pytest 9.2 renamed."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("live_schema")


# /metrics is left to the schema test below, which fails on it for a precise reason.
@schema.exclude(path="/metrics").parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_no_server_error_and_answers_that_match_the_schema(
    case: schemathesis.Case[Any], live_api: str, session: requests.Session
) -> None:
    response = case.call(base_url=live_api, session=session, timeout=30)
    SENT[case.operation.label] += 1
    mode = case.meta.generation.mode.value if case.meta is not None else "explicit"
    ANSWERED[case.operation.label, mode, response.status_code] += 1
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
        transport_kwargs={"base_url": live_api, "session": session},
    )


def test_the_generated_run_sent_at_least_2000_requests() -> None:
    if not SENT:
        pytest.skip("the generated tests did not run in this session")
    print(f"\ngenerated requests: {sum(SENT.values())} {dict(SENT)}")
    for (label, mode, status), count in sorted(ANSWERED.items()):
        print(f"  {label:<40} {mode:<9} {status}: {count}")
    assert sum(SENT.values()) >= GENERATED_AT_LEAST, dict(SENT)


def test_the_answers_generated_data_rarely_reaches_match_the_schema_too(
    live_api: str, live_schema: schemathesis.BaseSchema, session: requests.Session
) -> None:
    """Generated forms almost never carry valid check digits, so 202, 409, replays and 200
    are checked here, with the same schemathesis checks."""
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    key = f"hostile-{uuid.uuid4()}"
    email = f"{key}@example.com"
    form = valid_form(cpf=make_cpf(uuid.uuid4().int % 10**8), email=email, email_confirmation=email)
    register = live_schema["/registrations"]["POST"]
    status = live_schema["/registrations/{registration_id}"]["GET"]
    answers: list[int] = []
    cases = [
        register.Case(body=form, media_type="application/json", headers={"Idempotency-Key": key}),
        register.Case(body=form, media_type="application/json", headers={"Idempotency-Key": key}),
        register.Case(body=form, media_type="application/json"),
    ]
    for case in cases:
        response = case.call(base_url=live_api, session=session, timeout=30)
        case.validate_response(response, checks=checks)
        answers.append(response.status_code)
    registration_id = cases[0].call(base_url=live_api, session=session).json()["registration_id"]
    for rid in [registration_id, str(uuid.uuid4())]:
        case = status.Case(path_parameters={"registration_id": rid})
        response = case.call(base_url=live_api, session=session, timeout=30)
        case.validate_response(response, checks=checks)
        answers.append(response.status_code)
    # first answer, its replay, the same person without the key, a status, an unknown id
    assert answers == [202, 202, 409, 200, 404]


def _responses(live_schema: schemathesis.BaseSchema, path: str, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = live_schema.raw_schema["paths"][path][method]["responses"]
    return responses


def test_the_schema_declares_the_content_type_metrics_answers_with(
    live_api: str, live_schema: schemathesis.BaseSchema
) -> None:
    answer = clients.get(f"{live_api}/metrics", timeout=30)
    media_type = answer.headers["content-type"].split(";")[0]
    assert media_type in _responses(live_schema, "/metrics", "get")["200"].get("content", {})


def test_the_schema_declares_that_readiness_can_answer_503(
    live_schema: schemathesis.BaseSchema,
) -> None:
    assert "503" in _responses(live_schema, "/health/ready", "get")


# ---------------------------------------------------------------- hand-made abuse

JSON = {"content-type": "application/json"}


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    yield b'{"name": "'
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


ABUSE: list[Any] = [
    pytest.param({"json": valid_form(name="x" * 17_000)}, 413, id="a body over 16 KiB"),
    pytest.param(
        {"content": _chunks(1 << 20), "headers": JSON},
        413,
        id="a 1 MiB body in chunks, without Content-Length",
    ),
    pytest.param(
        {"content": _nested(100_000), "headers": JSON}, 413, id="100,000 levels of nested arrays"
    ),
    pytest.param(
        {"content": _nested(8_000), "headers": JSON},
        400,
        id="8,000 levels of nested arrays, under 16 KiB",
    ),
    pytest.param(
        {"content": b'{"name": ' + _nested(7_000) + b"}", "headers": JSON},
        400,
        id="7,000 levels of nesting inside a field",
    ),
    pytest.param(
        {"content": b'{"name": "Maria \xff\xfe da Silva"}', "headers": JSON},
        400,
        id="invalid UTF-8 in a string",
    ),
    pytest.param(
        {"content": b'{"name": "\xc0\xaf"}', "headers": JSON},
        400,
        id="an overlong UTF-8 encoding",
    ),
    pytest.param(
        {"content": b'{"name": "Maria \\ud800 da Silva"}', "headers": JSON},
        400,
        id="a lone surrogate escape",
    ),
    pytest.param(
        {"content": b"1" + b"0" * 15_000, "headers": JSON},
        400,
        id="a body that is a 15,000-digit number",
    ),
    pytest.param(
        {"content": b'{"accepted_terms": 1e999999}', "headers": JSON},
        400,
        id="a float beyond double precision",
    ),
    pytest.param(
        {"content": b'{"name": ' + b"9" * 5_000 + b"}", "headers": JSON},
        400,
        id="a 5,000-digit integer in a field",
    ),
    pytest.param(
        {"content": b'{"name": "Maria\x00da Silva"}', "headers": JSON},
        400,
        id="a raw NUL byte inside a JSON string",
    ),
    pytest.param({"content": b"", "headers": JSON}, 400, id="an empty body"),
    pytest.param({"content": b'{"name": "Maria"', "headers": JSON}, 400, id="truncated JSON"),
    pytest.param({"content": b"null", "headers": JSON}, 422, id="JSON null"),
    pytest.param({"content": b"[1, 2, 3]", "headers": JSON}, 422, id="a JSON array"),
    pytest.param({"content": b'"a string"', "headers": JSON}, 422, id="a JSON string"),
    pytest.param({"json": {f"field{n}": n for n in range(600)}}, 422, id="600 unknown fields"),
    pytest.param(
        {"content": b'{"name": "Maria"}', "headers": {"content-type": "text/plain"}},
        415,
        id="text/plain",
    ),
    pytest.param({"content": b'{"name": "Maria"}', "headers": {}}, 415, id="no Content-Type"),
    pytest.param(
        {"data": {"name": "Maria"}},
        415,
        id="a urlencoded form",
    ),
    pytest.param(
        {"files": {"name": ("name.txt", b"Maria")}},
        415,
        id="a multipart form",
    ),
    pytest.param(
        {
            "content": b'{"name": "Maria"}',
            "headers": {"content-type": "application/json; charset=utf-16"},
        },
        422,
        id="application/json with a foreign charset (JSON is UTF-8: RFC 8259)",
    ),
    pytest.param(
        {"json": valid_form(), "headers": {"idempotency-key": "k" * 256}},
        400,
        id="an Idempotency-Key of 256 characters",
    ),
    pytest.param(
        {"json": valid_form(), "headers": {"idempotency-key": "cl\u00e9".encode("latin-1")}},
        400,
        id="a non-ASCII Idempotency-Key",
    ),
]


def _is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json"), response
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert isinstance(body.get("code"), str) and body["code"], body
    return body


@pytest.mark.parametrize(("request_kwargs", "status"), ABUSE)
def test_a_hostile_request_gets_a_4xx_problem_with_a_code(
    live_api: str, request_kwargs: dict[str, Any], status: int
) -> None:
    response = clients.post(f"{live_api}/registrations", timeout=30, **request_kwargs)
    _is_problem(response, status)


STRING_FIELDS = [
    "person_type",
    "cpf",
    "cnpj",
    "name",
    "mobile_phone",
    "phone",
    "email",
    "email_confirmation",
    "address.cep",
    "address.street",
    "address.number",
    "address.complement",
    "address.neighborhood",
    "address.city",
    "address.state",
]


def _with(form: dict[str, Any], field: str, value: str) -> dict[str, Any]:
    if field.startswith("address."):
        return {**form, "address": {**form["address"], field.split(".", 1)[1]: value}}
    return {**form, field: value}


def _fields_in(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_a_10000_character_value_gets_422_naming_its_field(live_api: str, field: str) -> None:
    form = _with(valid_form(person_type="PJ"), field, "9" * 10_000)
    body = _is_problem(clients.post(f"{live_api}/registrations", json=form, timeout=30), 422)
    assert field in _fields_in(body), body["errors"]


def test_long_values_in_every_string_field_at_once_get_one_422_naming_every_field(
    live_api: str,
) -> None:
    form = valid_form(person_type="PJ")
    for field in STRING_FIELDS:  # 900 characters each keeps the body under 16 KiB
        form = _with(form, field, "9" * 900)
    body = _is_problem(clients.post(f"{live_api}/registrations", json=form, timeout=30), 422)
    # The confirmation is only compared with an email that is valid.
    assert _fields_in(body) >= set(STRING_FIELDS) - {"email_confirmation"}, body["errors"]


def test_10000_characters_in_every_string_field_at_once_is_over_the_size_limit(
    live_api: str,
) -> None:
    form = valid_form(person_type="PJ")
    for field in STRING_FIELDS:
        form = _with(form, field, "9" * 10_000)
    _is_problem(clients.post(f"{live_api}/registrations", json=form, timeout=30), 413)


@pytest.mark.parametrize("field", STRING_FIELDS)
def test_a_nul_character_in_a_field_gets_422_naming_it(live_api: str, field: str) -> None:
    form = valid_form(person_type="PJ")
    value = (_value_of(form, field) or "x") + "\x00"
    body = _is_problem(
        clients.post(f"{live_api}/registrations", json=_with(form, field, value), timeout=30), 422
    )
    assert field in _fields_in(body), body["errors"]


def _value_of(form: dict[str, Any], field: str) -> str | None:
    holder, key = (form["address"], field[len("address.") :]) if "." in field else (form, field)
    value = holder[key]
    return value if isinstance(value, str) else None


@pytest.mark.parametrize(
    "registration_id",
    ["x" * 10_000, "%00", "..%2F..%2Fetc%2Fpasswd", "00000000-0000-0000-0000-000000000000"],
    ids=["10,000 characters", "a NUL", "a path traversal", "the nil UUID"],
)
def test_a_hostile_registration_id_gets_404(live_api: str, registration_id: str) -> None:
    response = clients.get(f"{live_api}/registrations/{registration_id}", timeout=30)
    _is_problem(response, 404)


def test_nothing_sent_in_this_module_made_the_api_log_an_unhandled_error(
    api_process: tuple[str, Processes],
) -> None:
    log = api_process[1].log_tail("api", 10**9)
    assert '"unhandled_error"' not in log, log[-4000:]
