"""The README's promise: nothing a person typed, and no verification code or link token, is
ever logged.

Every process of ``signup up`` (the API processes, the worker, the mailer, the SMTP sink)
writes its log into one file here, through a signup, a duplicate, a rejection, a wrong code,
the right code and status polls; then the whole file is searched for each value. Every line
of it is one JSON object, the libraries' lines (uvicorn's start and stop) included: a log
pipeline reads each line as JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.factories import make_cnpj, make_cpf, mask_cnpj, mask_cpf, valid_address, valid_form
from tests.mail import wait_for_messages_sync
from tests.servers import free_port, signup_process

EMAIL = "Quintanilha.Sigilosa@Example.com"
CPF = make_cpf(771_001)
NAME = "Zuleica Quintanilha Sigilosa"
MOBILE = "(21) 98765-4321"
PHONE = "(21) 2345-6789"
STREET = "Rua das Violetas Sigilosas"
PJ_EMAIL = "contato.sigiloso@empresa-quintanilha.com.br"
PJ_CPF = make_cpf(771_002)
CNPJ = make_cnpj(771_003)
BAD_EMAIL = "sem-arroba.sigiloso.example.com"


def _json_object(line: str) -> bool:
    """Whether the line is one JSON object with an event, a level and a timestamp."""
    try:
        found = json.loads(line)
    except ValueError:
        return False
    return isinstance(found, dict) and {"event", "level", "timestamp"} <= found.keys()


def _typed() -> dict[str, str]:
    """Each value a person typed, in every spelling the service could have logged it in."""
    digits = lambda masked: re.sub(r"\D", "", masked)  # noqa: E731
    return {
        "email": EMAIL,
        "email, normalised": EMAIL.lower(),
        "email's local part": "quintanilha.sigilosa",
        "cpf": mask_cpf(CPF),
        "cpf, digits": CPF,
        "name": NAME,
        "mobile": MOBILE,
        "mobile, digits": digits(MOBILE),
        "phone, digits": digits(PHONE),
        "street": STREET,
        "pj email": PJ_EMAIL,
        "pj cpf": PJ_CPF,
        "cnpj": mask_cnpj(CNPJ),
        "cnpj, digits": CNPJ,
        "rejected email": BAD_EMAIL,
    }


def test_every_process_log_line_is_json_and_none_holds_a_value_a_person_typed_or_a_code(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = {"DATABASE_URL": "", "REDIS_URL": "", "SMTP_URL": ""}
    args = ["up", "--port", str(port), "--data-dir", str(data_dir)]
    person = valid_form(
        cpf=mask_cpf(CPF),
        name=NAME,
        mobile_phone=MOBILE,
        phone=PHONE,
        email=EMAIL,
        email_confirmation=EMAIL,
        address=valid_address(street=STREET),
    )
    company = valid_form(
        person_type="PJ",
        cnpj=mask_cnpj(CNPJ),
        cpf=mask_cpf(PJ_CPF),
        email=PJ_EMAIL,
        email_confirmation=PJ_EMAIL,
    )
    with signup_process(args, env, url, log), httpx.Client(base_url=url, timeout=30) as client:
        accepted = client.post("/registrations", json=person)
        assert accepted.status_code == 202, accepted.text
        registration_id = accepted.json()["registration_id"]
        assert client.post("/registrations", json=company).status_code == 202
        assert client.post("/registrations", json=person).status_code == 409
        rejected = client.post(
            "/registrations",
            json={**person, "email": BAD_EMAIL, "email_confirmation": BAD_EMAIL},
        )
        assert rejected.status_code == 422

        [message] = wait_for_messages_sync(data_dir / "mail", registration_id)
        wrong = f"{(int(message.code) + 1) % 10 ** len(message.code):0{len(message.code)}d}"
        verification = f"/registrations/{registration_id}/verification"
        assert client.post(verification, json={"code": wrong}).status_code == 422
        assert client.post(verification, json={"code": message.code}).status_code == 200
        # The link's token too, as a second tab would offer it: the same verdict again.
        assert client.post(verification, json={"code": message.token}).status_code == 200
        assert client.get(f"/registrations/{registration_id}").json()["status"] == "verified"
    # Stopped: every process has written out what it buffered.

    text = log.read_text()
    not_json = [line for line in text.splitlines() if not _json_object(line)]
    assert not not_json, f"{len(not_json)} lines are not JSON objects: {not_json[:5]}"
    lines = [json.loads(line) for line in text.splitlines()]
    assert {"uvicorn.error"} <= {line.get("logger") for line in lines}
    # The log is the one searched: it holds the requests above, by path, and the mailer's send.
    logged_paths = {line.get("path") for line in lines if line.get("event") == "request"}
    assert {"/registrations", verification} <= logged_paths, logged_paths
    assert any(registration_id in json.dumps(line) for line in lines)

    found = {what: value for what, value in _typed().items() if value.lower() in text.lower()}
    assert not found, f"typed values in the log: {sorted(found)}"
    assert message.token not in text, "the link's token was logged"
    for code in (message.code, wrong):
        # As a whole number: a duration's or an id's digits may happen to contain it.
        assert not re.search(rf"(?<![\d.]){code}(?![\d.])", text), f"a code ({code}) was logged"
