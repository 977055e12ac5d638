"""A message's bytes written directly are the bytes the email package writes."""

from __future__ import annotations

from email import message_from_bytes, policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from infrastructure.verification.mailer import Outgoing
from infrastructure.verification.mime import (
    alternative,
    library_alternative,
    new_boundary,
)
from tests.mail import a_verification

_NAMES = st.sampled_from(["From", "To", "Subject", "Message-ID", "X-Signup-Mail", "Date"])
# Values near the fast path's edges: printable words, runs of spaces, tabs and line breaks,
# accents, and lengths around the 78 characters of a line.
_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=90),
    st.text(st.sampled_from(list("ab =?<>@.;,\t\n\r-éç")), max_size=90),
    st.lists(st.text("abcdefghij@.<>", min_size=1, max_size=12), max_size=12).map(" ".join),
)
_BODIES = st.text(max_size=400)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), _BODIES, _BODIES)
@example(
    [("From", "Cadastro <nao-responda@signup.localhost>"), ("To", "maria@example.com")],
    "Olá!\n\nSeu código: 012345\n",
    "<p>Olá! Seu código: <b>012345</b></p>",
)
def test_a_message_written_directly_is_byte_for_byte_what_the_email_package_writes(
    headers: list[tuple[str, str]], text: str, html: str
) -> None:
    boundary = new_boundary()
    written = alternative(headers, text, html, boundary)
    if written is not None:
        assert written == library_alternative(headers, text, html, boundary)


def test_a_header_the_email_package_would_fold_or_encode_is_left_to_it() -> None:
    boundary = new_boundary()
    assert alternative([("To", "a" * 80 + "@example.com")], "x", "x", boundary) is None
    assert alternative([("Subject", "Olá")], "x", "x", boundary) is None
    assert alternative([("Subject", "two\nlines")], "x", "x", boundary) is None


def test_a_verification_to_an_ascii_address_is_written_directly_and_reads_as_the_packages() -> None:
    mailer, row, letter = a_verification("Cadastro Fácil <nao-responda@cadastro.example>", 7)

    outgoing = mailer._outgoing(row, "maria@example.com", letter)

    assert isinstance(outgoing, Outgoing)
    assert (outgoing.sender, outgoing.recipient) == (
        "nao-responda@cadastro.example",
        "maria@example.com",
    )
    direct = message_from_bytes(outgoing.content, policy=policy.default)
    packaged = message_from_bytes(
        mailer._message(row, "maria@example.com", letter).as_bytes(), policy=policy.default
    )
    assert direct.keys() == packaged.keys()
    for name in ("From", "To", "Subject", "Message-ID", "X-Signup-Registration", "X-Signup-Mail"):
        assert direct[name] == packaged[name]
    for kind in ("plain", "html"):
        ours, theirs = (m.get_body(preferencelist=(kind,)) for m in (direct, packaged))
        assert ours is not None and theirs is not None
        assert ours.get_content() == theirs.get_content()
        assert "012345" in ours.get_content()
