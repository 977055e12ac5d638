"""The validation fast paths decide exactly as the libraries they stand in for.

Email and phone values in their plain spellings skip the libraries' parsing, and CPF and CNPJ
check digits are summed without validate_docbr (which still decides every refusal); these properties
show, on generated inputs, that whenever a fast path answers, the library answers the same,
and the unit tests of each rule (test_contact.py, test_form.py) keep holding for the rest.
"""

from __future__ import annotations

import string
import unicodedata

import phonenumbers
from hypothesis import example, given, settings
from hypothesis import strategies as st
from validate_docbr import CNPJ, CPF

from domain.contact import (
    _BRAZIL,
    _email_by_library,
    _landline_by_library,
    _mobile_by_library,
    _plain_email,
    _plain_landline,
    _plain_mobile,
)
from domain.documents import cnpj_check_digits_hold, cpf_check_digits_hold
from domain.form import has_control_characters, has_invisible_characters
from domain.values import InvalidValue
from tests.factories import CNPJ_BODY_ALPHABET, cnpj_check_digits, make_cpf


def _outcome(normalise: object, raw: str) -> str:
    """What the library path answers: the value, or the error code."""
    assert callable(normalise)
    try:
        return str(normalise(raw))
    except InvalidValue as error:
        return f"error:{error.code}"


# --- email -------------------------------------------------------------------------------------

_local_chars = string.ascii_lowercase + string.digits + "._+-!#$%&'*/=?^`{|}~\"() "
_domain_chars = string.ascii_lowercase + string.digits + ".-_"
_tlds = st.sampled_from(
    ["com", "br", "com.br", "org", "io", "c", "1com", "local", "test", "invalid", "onion", "arpa",
     "localhost", "xn--p1ai", "museum", "example", "co.uk", "a1"]
)  # fmt: skip
_labels = st.text(_domain_chars, min_size=0, max_size=70)
_word_chars = string.ascii_lowercase + string.digits + "_+-"
_label_chars = string.ascii_lowercase + string.digits + "-"
_emails = st.one_of(
    st.emails().map(str.lower),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join(labels)}{'.' if labels else ''}{tld}",
        st.text(_local_chars, min_size=0, max_size=70),
        st.lists(_labels, min_size=0, max_size=4),
        _tlds,
    ),
    # [a-z0-9_+-]{1,70}(\.[a-z0-9_+-]{1,10}){0,2}@([a-z0-9-]{1,65}\.){1,3}[a-z]{1,5}, drawn
    # part by part (from_regex with fullmatch filters its draws, and was most of the time)
    st.tuples(
        st.text(_word_chars, min_size=1, max_size=70),
        st.lists(st.text(_word_chars, min_size=1, max_size=10), max_size=2),
        st.lists(st.text(_label_chars, min_size=1, max_size=65), min_size=1, max_size=3),
        st.text(string.ascii_lowercase, min_size=1, max_size=5),
    ).map(
        lambda parts: (
            parts[0]
            + "".join("." + more for more in parts[1])
            + "@"
            + "".join(label + "." for label in parts[2])
            + parts[3]
        )
    ),
)


@settings(max_examples=3000)
@given(_emails)
@example("maria@example.com")
@example("ab--cd@x--y.com")
@example("a@xn--ab.com")
@example("user@mail.local")
@example("a" * 65 + "@example.com")
@example("a@" + "b" * 64 + ".com")
def test_an_email_the_fast_path_accepts_is_one_the_library_accepts_unchanged(email: str) -> None:
    if _plain_email(email):
        assert _outcome(_email_by_library, email) == email


def test_the_fast_path_takes_the_common_spellings() -> None:
    assert _plain_email("maria.silva+news@empresa.com.br")
    assert _plain_email("joao_2@gmail.com")


# --- phones ------------------------------------------------------------------------------------

# Strings of a regular language, drawn part by part: hypothesis' from_regex(fullmatch=True)
# filters its draws, and was most of these tests' time. Each strategy built with these
# helpers draws exactly the language of the regex in its comment.


def _digits(count: int) -> st.SearchStrategy[str]:
    return st.text(string.digits, min_size=count, max_size=count)


def _one_in(chars: str) -> st.SearchStrategy[str]:
    return st.sampled_from(list(chars))


def _joined(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map("".join)


_ONE_TO_NINE = "123456789"


_areas = st.one_of(
    st.integers(0, 99).map(lambda n: f"{n:02d}"),
    st.sampled_from(["11", "21", "31", "41", "51", "61", "71", "81", "91", "19", "27", "68"]),
)
# Subscriber numbers near the real plan most of the time: a mobile's 9 + 8 digits, a
# landline's [2-5] + 7, old 8-digit mobiles, and anything at all.
_subscribers = st.one_of(
    _joined(st.just("9"), _digits(8)),  # 9[0-9]{8}
    _joined(_one_in("2345"), _digits(7)),  # [2-5][0-9]{7}
    _joined(_one_in("6789"), _digits(7)),  # [6-9][0-9]{7}
    st.text(string.digits, min_size=7, max_size=10),
)
_spaces = st.sampled_from(["", " ", "  "])
_separators = st.sampled_from(["", " ", "-", ".", "  "])


@st.composite
def _phones(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(["", "", "+55", "+55 ", "55", "+1 ", "0", "0xx", "+5 5"]))
    area = draw(_areas)
    bracketed = draw(
        st.sampled_from([f"({area})", f"({area})", area, area, f"({area}", f"{area})", f"0{area}"])
    )
    subscriber = draw(_subscribers)
    cut = draw(st.one_of(st.just(len(subscriber) - 4), st.integers(0, len(subscriber))))
    return (
        draw(_spaces)
        + country
        + bracketed
        + draw(_spaces)
        + subscriber[:cut]
        + draw(_separators)
        + subscriber[cut:]
        + draw(_spaces)
    )


# " ?(\+55 ?)?(\([1-9][0-9]\) ?|[1-9][0-9] ?)(9[0-9]{4}|[2-9][0-9]{3})[ -]?[0-9]{4} ?"
_optional_space = st.sampled_from(["", " "])
_two_digit_area = _joined(_one_in(_ONE_TO_NINE), _digits(1))
_plain_spellings = _joined(
    _optional_space,
    st.sampled_from(["", "+55", "+55 "]),
    st.one_of(
        _joined(st.just("("), _two_digit_area, st.just(")"), _optional_space),
        _joined(_two_digit_area, _optional_space),
    ),
    st.one_of(_joined(st.just("9"), _digits(4)), _joined(_one_in("23456789"), _digits(3))),
    st.sampled_from(["", " ", "-"]),
    _digits(4),
    _optional_space,
)
_phone_texts = st.one_of(_phones(), _plain_spellings, st.text("0123456789()+- .", max_size=20))


# Both fast paths on each generated text: the mobile and the landline paths are separate
# code, each checked on every one of the 5,000 texts, which cost far more to draw (hypothesis'
# engine, ~1.4 ms a text) than to check. Two tests drawing 5,000 each took twice the time.
@settings(max_examples=5000)
@given(_phone_texts)
@example("(11) 91234-5678")
@example("+55 11 91234-5678")
@example("(11) 7123-4567")
@example("(90) 91234-5678")
@example("(11) 3123-4567")
@example("1131234567")
def test_a_phone_number_either_fast_path_accepts_is_the_one_the_library_gives(raw: str) -> None:
    mobile = _plain_mobile(raw)
    if mobile is not None:
        assert _outcome(_mobile_by_library, raw) == mobile
    landline = _plain_landline(raw)
    if landline is not None:
        assert _outcome(_landline_by_library, raw) == landline


_national_numbers = st.one_of(
    st.text(string.digits, min_size=7, max_size=12),
    # [1-9][1-9](9[0-9]{8}|[2-9][0-9]{7})
    _joined(
        _one_in(_ONE_TO_NINE),
        _one_in(_ONE_TO_NINE),
        st.one_of(_joined(st.just("9"), _digits(8)), _joined(_one_in("23456789"), _digits(7))),
    ),
    # (0800|0300|0500|0900|300|400|800|900)[0-9]{4,8}
    _joined(
        st.sampled_from(["0800", "0300", "0500", "0900", "300", "400", "800", "900"]),
        st.text(string.digits, min_size=4, max_size=8),
    ),
)


@settings(max_examples=5000)
@given(_national_numbers)
@example("11912345678")
@example("1131234567")
@example("8001234567")
@example("9001234567")
@example("30031234")
def test_the_numbering_plan_types_a_number_as_phonenumbers_does(national: str) -> None:
    number = phonenumbers.PhoneNumber(country_code=55, national_number=int(national))
    if phonenumbers.national_significant_number(number) == national:  # no leading zeros
        assert _BRAZIL.type_of(national) == phonenumbers.number_type(number)


def test_the_fast_path_takes_the_common_phone_spellings() -> None:
    assert _plain_mobile("(11) 91234-5678") == "+5511912345678"
    assert _plain_mobile("21987654321") == "+5521987654321"
    assert _plain_landline("(11) 3123-4567") == "+551131234567"


# --- control characters ------------------------------------------------------------------------


@settings(max_examples=2000)
@given(st.text(st.characters(codec=None), max_size=30))
@example("\u0085")
@example("\ud800")
@example("\x7f")
@example("tab\there")
def test_control_characters_are_found_as_their_unicode_category_says(text: str) -> None:
    by_category = any(unicodedata.category(char) in ("Cc", "Cs") for char in text)
    assert has_control_characters(text) == by_category


_latin = st.characters(max_codepoint=0xFF)


@settings(max_examples=2000)
@given(st.one_of(st.text(_latin, max_size=30), st.text(st.characters(codec=None), max_size=30)))
@example("Jos\xe9\xad")
@example("\u200b")
@example("\u2028")
@example("S\xe3o Jo\xe3o \U000e0001")
def test_invisible_characters_are_found_as_their_unicode_category_says(text: str) -> None:
    by_category = any(unicodedata.category(char) in ("Cf", "Zl", "Zp") for char in text)
    assert has_invisible_characters(text) == by_category


# --- CPF and CNPJ check digits -----------------------------------------------------------------

_cpfs = st.one_of(
    st.text("0123456789", min_size=11, max_size=11),
    # Valid ones, and the same with one digit changed: random digits are valid once in 100.
    st.integers(0, 10**9).map(make_cpf),
    st.tuples(st.integers(0, 10**9), st.integers(0, 10), st.integers(1, 9)).map(
        lambda t: (
            (cpf := make_cpf(t[0]))[: t[1]] + str((int(cpf[t[1]]) + t[2]) % 10) + cpf[t[1] + 1 :]
        )
    ),
)


@settings(max_examples=3000)
@given(_cpfs)
@example("52998224725")
@example("00000000191")
@example("11111111111")
def test_a_cpf_s_check_digits_are_judged_as_validate_docbr_judges_them(digits: str) -> None:
    # The library also refuses one repeated digit, which normalise_cpf refuses before.
    library = CPF().validate(digits) or len(set(digits)) == 1
    assert cpf_check_digits_hold(digits) == library


_cnpjs = st.one_of(
    st.text(CNPJ_BODY_ALPHABET, min_size=12, max_size=12).flatmap(
        lambda body: st.text("0123456789", min_size=2, max_size=2).map(lambda end: body + end)
    ),
    # Valid ones, and the same with the last check digit changed.
    st.tuples(st.text(CNPJ_BODY_ALPHABET, min_size=12, max_size=12), st.integers(0, 9)).map(
        lambda t: (valid := t[0] + cnpj_check_digits(t[0]))[:13] + str((int(valid[13]) + t[1]) % 10)
    ),
)


@settings(max_examples=3000)
@given(_cnpjs)
@example("11222333000181")
@example("12ABC34501DE35")
@example("00000000000000")
def test_a_cnpj_s_check_digits_are_judged_as_validate_docbr_judges_them(chars: str) -> None:
    library = CNPJ().validate(chars) or len(set(chars)) == 1
    assert cnpj_check_digits_hold(chars) == library
