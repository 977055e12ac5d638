"""The signup page in headless Chromium, against a real `signup up` (API, worker, servers);
the terms page it links to, from an operator's file, against a real `signup api`."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from domain.contact import normalise_landline, normalise_mobile_phone
from domain.documents import normalise_cnpj, normalise_cpf
from domain.values import InvalidValue
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from interfaces.http.page import error_codes, form_rules
from tests import clients
from tests.e2e.browser import (
    CHROMIUM,
    Person,
    error_of,
    fill,
    launch,
    screenshot,
    submit,
)
from tests.factories import make_cnpj, make_cpf, mask_cnpj, mask_cpf
from tests.mail import wait_for_messages_sync
from tests.servers import free_port, signup_process

COMPLETION_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("signup-page")


@pytest.fixture(scope="module")
def mail_dir(home: Path) -> Path:
    """Where `signup up`'s own SMTP sink keeps what the worker sends (`signup mail`)."""
    return home / "data" / "mail"


@pytest.fixture(scope="module")
def base_url(home: Path) -> Iterator[str]:
    """One whole system for the module: the worker inside `signup up` completes signups."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["up", "--port", str(port), "--data-dir", str(home / "data")]
    # Empty URLs make `signup up` start its own servers (and SMTP sink), whatever the shell
    # has set.
    servers = {"DATABASE_URL": "", "REDIS_URL": "", "SMTP_URL": "", "SIGNUP_PUBLIC_URL": ""}
    with signup_process(args, servers, url, home / "up.log"):
        yield url


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test-tools` (as root) installs it")
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(
        base_url=base_url, locale="pt-BR", viewport={"width": 1024, "height": 900}
    )
    page = context.new_page()
    page.goto("/")
    yield page
    context.close()


def _posts(page: Page) -> list[Request]:
    """Every POST /registrations the page sends from now on."""
    sent: list[Request] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/registrations"):
            sent.append(request)

    page.on("request", record)
    return sent


def _expect_completed(page: Page) -> str:
    expect(page.locator("#result-status")).to_have_text("concluído", timeout=COMPLETION_TIMEOUT_MS)
    return page.locator("#result-id").inner_text()


def test_every_error_code_has_a_portuguese_message() -> None:
    rules = form_rules()
    assert error_codes() <= set(rules["messages"])
    assert all(conflict["message"] for conflict in rules["conflicts"].values())
    assert len(rules["ufs"]) == 27


def test_a_person_signs_up_and_sees_the_account_completed(page: Page, base_url: str) -> None:
    page.get_by_label("CPF", exact=True).wait_for()
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels.length)"
        ".map(e => e.name)"
    )
    assert unlabelled == []
    expect(page.get_by_label("CNPJ")).to_be_hidden()
    expect(page.get_by_label("Estado (UF)").locator("option")).to_have_count(28)
    screenshot(page, "01-empty")

    # As pasted from a contact card: the country code goes, the mask comes.
    person = Person(
        cpf=make_cpf(9_001), email="pagina.pf@example.com", mobile_phone="+55 11 91234-5678"
    )
    fill(page, person)
    # The masks: typed digits come out formatted.
    expect(page.get_by_label("CPF", exact=True)).to_have_value(mask_cpf(person.cpf))
    expect(page.get_by_label("Celular")).to_have_value("(11) 91234-5678")
    expect(page.get_by_label("Telefone fixo")).to_have_value("(11) 3123-4567")
    expect(page.get_by_label("CEP")).to_have_value("01310-100")
    screenshot(page, "02-filled")

    submit(page)

    registration_id = _expect_completed(page)
    expect(page.get_by_role("heading", name="Cadastro recebido")).to_be_focused()
    screenshot(page, "04-completed")
    status = clients.get(f"{base_url}/registrations/{registration_id}").json()
    assert status["status"] == "completed"


def test_a_company_signs_up_with_an_alphanumeric_cnpj_using_the_keyboard(page: Page) -> None:
    cnpj = make_cnpj(9_002, alphanumeric=True)
    # Typed lower case and without the mask, as a person might.
    person = Person(
        cpf=make_cpf(9_002), cnpj=cnpj.lower(), email="pagina.pj@example.com", name="Padaria Pão"
    )

    page.get_by_label("Pessoa física").focus()
    page.keyboard.press("ArrowRight")  # a radio group moves with the arrow keys
    expect(page.get_by_label("Pessoa jurídica")).to_be_checked()
    cnpj_input = page.get_by_label("CNPJ")
    expect(cnpj_input).to_be_visible()
    cnpj_input.press_sequentially(person.cnpj or "")  # key by key, through the mask
    expect(cnpj_input).to_have_value(mask_cnpj(cnpj))

    fill(page, person)
    expect(cnpj_input).to_have_value(mask_cnpj(cnpj))
    expect(page.get_by_label("CPF do responsável")).to_have_value(mask_cpf(person.cpf))
    page.get_by_label("Li e aceito os termos").uncheck()
    page.get_by_label("Li e aceito os termos").focus()
    page.keyboard.press("Space")
    expect(page.get_by_label("Li e aceito os termos")).to_be_checked()
    screenshot(page, "05-company-filled")
    page.get_by_label("Cidade", exact=True).press("Enter")  # implicit submission

    _expect_completed(page)


def test_a_bad_cpf_is_explained_beside_the_cpf_field(page: Page) -> None:
    sent = _posts(page)
    cpf = make_cpf(9_003)
    wrong = cpf[:-1] + str((int(cpf[-1]) + 1) % 10)
    fill(page, Person(cpf=wrong, email="pagina.cpf@example.com"))
    cpf_input = page.get_by_label("CPF", exact=True)

    submit(page)

    expect(cpf_input).to_have_attribute("aria-invalid", "true")
    expect(cpf_input).to_be_focused()
    assert "dígitos verificadores não conferem" in error_of(page, "CPF", exact=True)
    expect(page.locator("#form-status")).to_have_text("Corrija o campo destacado.")
    assert sent == [], "the page caught it before sending"
    screenshot(page, "03-errors")

    cpf_input.fill(cpf)  # fixing it clears the message as the person types
    expect(cpf_input).not_to_have_attribute("aria-invalid", "true")
    assert "não conferem" not in error_of(page, "CPF", exact=True)


def test_a_server_rejection_is_shown_beside_its_field(page: Page) -> None:
    # The page's email check is only a rough one; the server knows .test is a reserved name.
    fill(page, Person(cpf=make_cpf(9_004), email="pagina@example.test"))

    with page.expect_response("**/registrations") as answer:
        submit(page)

    assert answer.value.status == 422
    email = page.get_by_label("E-mail", exact=True)
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_be_focused()
    assert "Informe um e-mail válido" in error_of(page, "E-mail", exact=True)
    screenshot(page, "06-server-error")


def test_a_registered_email_is_reported_beside_the_email_field(page: Page, base_url: str) -> None:
    taken = Person(cpf=make_cpf(9_005), email="pagina.ja@example.com")
    assert clients.post(f"{base_url}/registrations", json=taken.api_body()).status_code == 202
    fill(page, Person(cpf=make_cpf(9_006), email=taken.email))

    submit(page)

    email = page.get_by_label("E-mail", exact=True)
    expect(email).to_have_attribute("aria-invalid", "true")
    assert "Este e-mail já está cadastrado." in error_of(page, "E-mail", exact=True)
    expect(email).to_be_focused()
    screenshot(page, "07-conflict")

    # Another email is another request (a new Idempotency-Key), and it goes through.
    email.fill("pagina.outro@example.com")
    page.get_by_label("Confirme o e-mail").fill("pagina.outro@example.com")
    submit(page)
    _expect_completed(page)


def test_a_double_click_registers_once(page: Page, base_url: str) -> None:
    sent = _posts(page)
    person = Person(cpf=make_cpf(9_007), email="pagina.duplo@example.com")
    fill(page, person)

    page.get_by_role("button", name="Cadastrar").dblclick()

    registration_id = _expect_completed(page)
    assert len({request.headers["idempotency-key"] for request in sent}) == 1
    answers = [request.response() for request in sent]
    assert {json.loads(a.body())["registration_id"] for a in answers if a} == {registration_id}
    # The page's key replays its answer; any other attempt at the same person is a conflict.
    key = sent[0].headers["idempotency-key"]
    body = sent[0].post_data_buffer
    replay = clients.post(
        f"{base_url}/registrations",
        content=body,
        headers={"content-type": "application/json", "idempotency-key": key},
    )
    assert replay.status_code == 202
    assert replay.json()["registration_id"] == registration_id
    assert replay.headers["idempotent-replayed"] == "true"
    again = clients.post(f"{base_url}/registrations", json=person.api_body())
    assert (again.status_code, again.json()["field"]) == (409, "email")


def test_a_retry_after_a_lost_answer_registers_once(page: Page) -> None:
    lost: dict[str, str] = {}

    def lose_the_first_answer(route: Route) -> None:
        if lost:
            route.continue_()
            return
        # The server records the signup, but its answer never reaches the browser.
        answer = route.fetch()
        lost["id"] = answer.json()["registration_id"]
        lost["key"] = route.request.headers["idempotency-key"]
        route.abort("connectionreset")

    page.route("**/registrations", lose_the_first_answer)
    fill(page, Person(cpf=make_cpf(9_008), email="pagina.rede@example.com"))
    submit(page)
    expect(page.locator("#form-status")).to_contain_text("não será duplicado")

    with page.expect_request("**/registrations") as retry:
        submit(page)

    assert retry.value.headers["idempotency-key"] == lost["key"]
    assert _expect_completed(page) == lost["id"]


def test_a_failed_registration_is_reported_after_pending(page: Page) -> None:
    answers = iter(["not yet", "pending", "failed"])

    def status(route: Route) -> None:
        # The real worker completes every valid signup; "failed" is faked here.
        found = next(answers, "failed")
        if found == "not yet":  # the status read model may lag behind the 202
            route.fulfill(status=404, json={"status": 404, "code": "registration_not_found"})
            return
        route.fulfill(json={"registration_id": str(uuid.uuid4()), "status": found})

    page.route("**/registrations/*", status)
    fill(page, Person(cpf=make_cpf(9_010), email="pagina.falha@example.com"))
    submit(page)

    expect(page.locator("#result-status")).to_have_text("pendente")
    expect(page.locator("#result-status")).to_have_text("falhou")
    expect(page.locator("#result-detail")).to_contain_text("guarde o protocolo")


@pytest.mark.parametrize(
    ("retry_after", "wait", "blocked"),
    [("7", "7 segundos", True), ("3600", "60 minutos", False)],
)
def test_rate_limiting_is_shown_with_the_wait_time(
    page: Page, retry_after: str, wait: str, blocked: bool
) -> None:
    def limited(route: Route) -> None:
        route.fulfill(
            status=429,
            headers={"Retry-After": retry_after, "Content-Type": "application/problem+json"},
            body=json.dumps({"title": "Too Many Requests", "status": 429, "code": "rate_limited"}),
        )

    # Reaching a real limit takes many requests; the answer the contract promises is faked.
    page.route("**/registrations", limited)
    fill(page, Person(cpf=make_cpf(9_009), email="pagina.limite@example.com"))
    submit(page)

    expect(page.locator("#form-status")).to_have_text(
        f"Muitas tentativas em pouco tempo. Tente de novo em {wait}."
    )
    # A short wait holds the button; a long one (say, per email) must not block corrections.
    button = page.locator("#submit")
    if blocked:
        expect(button).to_be_disabled()
        expect(button).to_contain_text("Aguarde")
    else:
        expect(button).to_be_enabled()


def _document_samples() -> dict[str, list[str]]:
    """Valid values, near misses and odd shapes, for each field with a ported rule."""
    pick = random.Random(7)
    cpfs = [make_cpf(pick.randrange(10**8)) for _ in range(30)]
    cnpjs = [make_cnpj(pick.randrange(10**7), alphanumeric=n % 2 == 0) for n in range(30)]
    bump = {str(d): str((d + 1) % 10) for d in range(10)}
    ddds = [f"{n:02d}" for n in range(10, 100)]
    return {
        "cpf": [
            *cpfs,
            *(mask_cpf(cpf) for cpf in cpfs[:10]),
            *(cpf[:-1] + bump[cpf[-1]] for cpf in cpfs),
            *(cpf[:-2] + bump[cpf[-2]] + cpf[-1] for cpf in cpfs[:10]),
            "111.111.111-11", "00000000000", "123.456.789-0", "1234567890a", "123-456.789.09",
        ],
        "cnpj": [
            *cnpjs,
            *(mask_cnpj(cnpj).lower() for cnpj in cnpjs[:10]),
            *(cnpj[:-1] + bump[cnpj[-1]] for cnpj in cnpjs),
            *(cnpj[:3] + ("B" if cnpj[3] != "B" else "C") + cnpj[4:] for cnpj in cnpjs[:10]),
            "AAAAAAAAAAAAAA", "11111111111111", "12ABC34501DE3A", "12.ABC.345/01DE-35",
        ],
        "mobile_phone": [
            *(f"({ddd}) 9{pick.randrange(10**7, 10**8)}" for ddd in ddds),
            "(11) 81234-5678", "(11) 3123-4567", "(11) 7123-4567", "(11) 91234-567",
        ],
        "phone": [
            *(f"({ddd}) {pick.choice('2345')}{pick.randrange(10**6, 10**7)}" for ddd in ddds),
            "(11) 91234-5678", "(11) 6123-4567", "(11) 3123-456",
        ],
    }  # fmt: skip


_SERVER_RULES: dict[str, Callable[[str], str]] = {
    "cpf": normalise_cpf,
    "cnpj": normalise_cnpj,
    "mobile_phone": normalise_mobile_phone,
    "phone": normalise_landline,
}


def _server_accepts(path: str, text: str) -> bool:
    try:
        _SERVER_RULES[path](text)
    except InvalidValue:
        return False
    return True


def test_the_page_judges_documents_and_phones_as_the_server_does(page: Page) -> None:
    page.get_by_label("Pessoa jurídica").check()  # shows the CNPJ field
    for path, samples in _document_samples().items():
        # Set without the mask (no input event), so the page judges exactly the server's text.
        page_rejects = page.evaluate(
            """([path, samples]) => samples.map((text) => {
                const input = document.querySelector(`[name="${path}"]`);
                input.value = text;
                input.dispatchEvent(new FocusEvent("focusout", { bubbles: true }));
                return input.getAttribute("aria-invalid") === "true";
            })""",
            [path, samples],
        )
        disagreements = [
            text
            for text, rejected in zip(samples, page_rejects, strict=True)
            if rejected == _server_accepts(path, text)
        ]
        assert disagreements == [], path
        assert any(page_rejects) and not all(page_rejects), path


def test_the_form_is_a_single_column_on_a_narrow_screen(browser: Browser, base_url: str) -> None:
    context = browser.new_context(
        base_url=base_url, locale="pt-BR", viewport={"width": 360, "height": 740}, is_mobile=True
    )
    try:
        page = context.new_page()
        page.goto("/")
        mobile = page.get_by_label("Celular").bounding_box()
        phone = page.get_by_label("Telefone fixo").bounding_box()
        assert mobile and phone
        assert mobile["x"] == phone["x"] and phone["y"] > mobile["y"]
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, "08-narrow")
    finally:
        context.close()


def test_the_page_and_its_assets_are_served(base_url: str) -> None:
    answer = clients.get(base_url)
    assert answer.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert 'lang="pt-BR"' in answer.text
    for asset in ("/static/signup.css", "/static/signup.js"):
        assert asset in answer.text
        assert clients.get(f"{base_url}{asset}").status_code == 200


def test_a_person_is_asked_to_check_their_email_and_follows_the_link_in_the_message(
    page: Page, base_url: str, mail_dir: Path
) -> None:
    fill(page, Person(cpf=make_cpf(9_101), email="pagina.link@example.com"))
    submit(page)
    registration_id = _expect_completed(page)
    expect(page.get_by_role("heading", name="Verifique seu e-mail")).to_be_visible()
    expect(page.get_by_label("Código de verificação")).to_be_visible()
    screenshot(page, "10-check-your-email")

    [message] = wait_for_messages_sync(mail_dir, registration_id)
    assert message.to == "pagina.link@example.com"
    assert message.link.startswith(f"{base_url}/#verificar={registration_id}.")
    page.goto(message.link)

    expect(page.locator("#result-status")).to_have_text("e-mail confirmado")
    # The token left the address bar once read.
    assert "#" not in page.url
    screenshot(page, "11-verified-by-link")
    status = clients.get(f"{base_url}/registrations/{registration_id}").json()
    assert status["status"] == "verified"


def test_a_person_types_a_wrong_code_then_the_right_one(
    page: Page, base_url: str, mail_dir: Path
) -> None:
    fill(page, Person(cpf=make_cpf(9_102), email="pagina.codigo@example.com"))
    submit(page)
    registration_id = _expect_completed(page)
    [message] = wait_for_messages_sync(mail_dir, registration_id)
    wrong = f"{(int(message.code) + 1) % 1_000_000:06d}"

    page.get_by_label("Código de verificação").fill(wrong)
    page.get_by_role("button", name="Confirmar e-mail").click()
    expect(page.locator("#e-code")).to_have_text("Código incorreto. Restam 4 tentativas.")
    screenshot(page, "12-wrong-code")

    page.get_by_label("Código de verificação").fill(message.code)
    page.get_by_role("button", name="Confirmar e-mail").click()
    expect(page.locator("#result-status")).to_have_text("e-mail confirmado")
    assert clients.get(f"{base_url}/registrations/{registration_id}").json()["status"] == (
        "verified"
    )


def test_the_terms_checkbox_links_to_the_terms_served_by_the_app(page: Page) -> None:
    link = page.get_by_role("link", name="Ler os termos de uso e a política de privacidade")
    assert link.get_attribute("href") == "/termos"
    page.goto("/termos")
    expect(page.get_by_role("heading", name="Política de privacidade", exact=True)).to_be_visible()


def _terms_served(settings: Settings, terms_file: Path) -> httpx.Response:
    """GET /termos from the app built with SIGNUP_TERMS_FILE in its environment, as an
    operator sets it (in this process: a `signup api` of its own cost seconds a test)."""
    configured = Settings.from_env({**settings.server_env(), "SIGNUP_TERMS_FILE": str(terms_file)})
    with TestClient(app=build_app(configured)) as client:
        return client.get("/termos")


def test_an_operators_html_terms_file_is_served_as_html_in_the_terms_page(
    settings: Settings, tmp_path: Path
) -> None:
    fragment = "<h2>Regras da casa</h2>\n<p>Seja <b>gentil</b> &amp; breve.</p>"
    terms_file = tmp_path / "termos.html"
    terms_file.write_text(fragment, encoding="utf-8")

    response = _terms_served(settings, terms_file)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # The fragment as written, inside the page's own layout, in place of the model text.
    assert f'<div class="terms-text">\n{fragment}\n</div>' in response.text
    assert "Política de privacidade" not in response.text


def test_an_operators_plain_text_terms_file_is_served_escaped_one_paragraph_per_block(
    settings: Settings, tmp_path: Path
) -> None:
    terms_file = tmp_path / "termos.txt"
    terms_file.write_text(
        "Seja <b>gentil</b> & breve.\n\n\nSegundo parágrafo,\nem duas linhas.\n", encoding="utf-8"
    )

    response = _terms_served(settings, terms_file)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # Markup in a text file is shown as typed, never run as HTML; blank lines part paragraphs.
    assert (
        '<div class="terms-text">\n'
        "<p>Seja &lt;b&gt;gentil&lt;/b&gt; &amp; breve.</p>\n"
        "<p>Segundo parágrafo,\nem duas linhas.</p>\n"
        "</div>"
    ) in response.text
    assert "<b>" not in response.text
