"""The messages' words: pt-BR, a text and an HTML part, nothing the person typed."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

from infrastructure.verification.mailer import (
    Outgoing,
    SmtpRelay,
    owner_notice_letter,
    verification_letter,
    verification_link,
)
from tests.mail import VERIFIED_RID, a_verification

RID = VERIFIED_RID  # the registration of a_verification's row


def test_the_verification_letter_carries_the_code_and_the_link_in_both_parts() -> None:
    link = verification_link("https://cadastro.example/", RID, "t" * 43)
    letter = verification_letter("012345", link, timedelta(hours=24), timedelta(hours=48))

    assert letter.subject == "Confirme seu e-mail"
    assert link == f"https://cadastro.example/#verificar={RID}.{'t' * 43}"
    for part in (letter.text, letter.html):
        assert "012345" in part and "24 horas" in part and "48 horas" in part
    assert link in letter.text and f'href="{link}"' in letter.html


def test_an_owner_notice_says_which_value_was_used() -> None:
    assert "o seu CPF" in owner_notice_letter("cpf").text
    assert "o CNPJ da sua empresa" in owner_notice_letter("cnpj").html
    assert "o seu e-mail" in owner_notice_letter("email").text


def test_a_message_has_a_text_and_an_html_part_and_a_message_id_of_its_row() -> None:
    mailer, row, letter = a_verification("Cadastro Fácil <nao-responda@cadastro.example>", 7)

    raw = mailer._message(row, "maria@example.com", letter).as_bytes()
    parsed = message_from_bytes(raw, policy=policy.default)

    assert parsed["To"] == "maria@example.com"
    assert parsed["Subject"] == "Confirme seu e-mail"
    assert parsed["From"].addresses[0].display_name == "Cadastro Fácil"
    assert parsed["Message-ID"] == "<signup-mail-7-20261201000000@cadastro.example>"
    assert parsed["X-Signup-Registration"] == str(RID)
    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert plain is not None and "012345" in plain.get_content()
    assert html is not None and "012345" in html.get_content()


def test_an_internationalised_address_is_written_as_it_is() -> None:
    mailer, row, letter = a_verification("nao-responda@cadastro.example", 8)
    message = mailer._outgoing(row, "joão@exemplo.com.br", letter)
    # Not written directly (infrastructure/verification/mime.py): the package writes it.
    assert not isinstance(message, Outgoing)
    assert message["To"] == "joão@exemplo.com.br"


def test_smtp_url_names_the_relay() -> None:
    relay = SmtpRelay.from_url("smtps://user%40x:p%3Ass@relay.example")
    assert (relay.hostname, relay.port, relay.use_tls) == ("relay.example", 465, True)
    assert (relay.username, relay.password) == ("user@x", "p:ss")
    assert SmtpRelay.from_url("smtp://mailpit:1025").port == 1025
