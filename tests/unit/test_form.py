"""The POST /registrations body parser: every rule of the DESIGN.md table."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import domain.form
import domain.values
from domain.address import Address
from domain.errors import FieldError, InvalidRegistration
from domain.form import RegistrationDetails, parse_registration_form
from tests.factories import (
    MISSING,
    make_cnpj,
    make_cpf,
    mask_cnpj,
    mask_cpf,
    valid_address,
    valid_form,
    valid_pj_form,
)


def errors_of(body: object) -> list[FieldError]:
    with pytest.raises(InvalidRegistration) as caught:
        parse_registration_form(body)
    return caught.value.errors


def codes_of(body: object) -> dict[str, str]:
    """Field path -> code, asserting no field is reported twice."""
    errors = errors_of(body)
    codes = {error.field: error.code for error in errors}
    assert len(codes) == len(errors), errors
    return codes


def with_address(**overrides: Any) -> dict[str, Any]:
    return valid_form(address=valid_address(**overrides))


# --- the happy paths ---------------------------------------------------------------------------


def test_a_valid_pf_form_is_parsed_into_normalised_details() -> None:
    details = parse_registration_form(valid_form())
    assert details == RegistrationDetails(
        person_type="PF",
        cpf=make_cpf(0),
        cnpj=None,
        name="Maria da Silva",
        mobile_phone="+5511912345678",
        phone="+551131234567",
        email="maria@example.com",
        address=Address(
            cep="01310100",
            street="Avenida Paulista",
            number="1578",
            complement="apto 12",
            neighborhood="Bela Vista",
            city="São Paulo",
            state="SP",
        ),
    )


def test_the_example_body_of_the_design_document_is_valid() -> None:
    details = parse_registration_form(valid_form(cpf="123.456.789-09"))
    assert details.cpf == "12345678909"


def test_a_valid_pj_form_keeps_both_the_cnpj_and_the_responsible_persons_cpf() -> None:
    details = parse_registration_form(valid_pj_form())
    assert details.person_type == "PJ"
    assert details.cnpj == make_cnpj(0)
    assert details.cpf == make_cpf(0)


def test_a_pjs_alphanumeric_cnpj_is_accepted_and_stored_upper_case() -> None:
    details = parse_registration_form(valid_pj_form(cnpj="12.abc.345/01de-35"))
    assert details.cnpj == "12ABC34501DE35"


@given(st.integers(0, 10**6), st.booleans(), st.booleans())
def test_forms_built_from_the_factories_are_always_valid(
    n: int, company: bool, alphanumeric: bool
) -> None:
    cpf = make_cpf(n)
    if company:
        cnpj = make_cnpj(n, alphanumeric=alphanumeric)
        details = parse_registration_form(valid_pj_form(cpf=cpf, cnpj=mask_cnpj(cnpj)))
        assert details.cnpj == cnpj
    else:
        details = parse_registration_form(valid_form(cpf=mask_cpf(cpf)))
    assert details.cpf == cpf


# --- the body as a whole -----------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, [], [valid_form()], "form", 42, True])
def test_a_body_that_is_not_an_object_is_reported_on_the_root(body: object) -> None:
    assert errors_of(body) == [
        FieldError("", "wrong_type", "The body must be a JSON object"),
    ]


def test_every_invalid_field_is_listed_at_once() -> None:
    body = valid_form(
        cpf="123.456.789-00",
        email=MISSING,
        address=valid_address(cep="1310-100"),
    )
    assert codes_of(body) == {
        "cpf": "invalid_check_digits",
        "address.cep": "invalid_format",
        "email": "required",
    }


def test_an_empty_object_reports_every_required_field() -> None:
    assert codes_of({}) == {
        "person_type": "required",
        "cpf": "required",
        "name": "required",
        "mobile_phone": "required",
        "email": "required",
        "email_confirmation": "required",
        "address": "required",
        "accepted_terms": "required",
    }


def test_an_empty_address_reports_every_required_address_field() -> None:
    assert codes_of(valid_form(address={})) == {
        "address.cep": "required",
        "address.street": "required",
        "address.number": "required",
        "address.neighborhood": "required",
        "address.city": "required",
        "address.state": "required",
    }


def test_unknown_top_level_fields_are_rejected_by_path() -> None:
    assert codes_of(valid_form(nickname="Mari", age=30)) == {
        "nickname": "unknown_field",
        "age": "unknown_field",
    }


def test_unknown_address_fields_are_rejected_by_dotted_path() -> None:
    assert codes_of(with_address(country="BR")) == {"address.country": "unknown_field"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("person_type", 1),
        ("cpf", 12345678909),
        ("name", ["Maria"]),
        ("mobile_phone", 11912345678),
        ("phone", 1131234567),
        ("email", {"address": "maria@example.com"}),
        ("email_confirmation", True),
        ("address", "Avenida Paulista, 1578"),
        ("address", ["01310-100"]),
        ("accepted_terms", "true"),
        ("accepted_terms", 1),
    ],
)
def test_a_field_of_the_wrong_json_type_is_rejected(field: str, value: object) -> None:
    assert codes_of(valid_form(**{field: value})) == {field: "wrong_type"}


def test_a_pjs_cnpj_of_the_wrong_json_type_is_rejected() -> None:
    assert codes_of(valid_pj_form(cnpj=11222333000181)) == {"cnpj": "wrong_type"}


@pytest.mark.parametrize("field", ["cep", "street", "number", "complement", "state"])
def test_an_address_field_of_the_wrong_json_type_is_rejected(field: str) -> None:
    assert codes_of(with_address(**{field: 1578})) == {f"address.{field}": "wrong_type"}


# --- person type and documents -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["pf", "PFJ", "", "company"])
def test_a_person_type_other_than_pf_or_pj_is_rejected(value: str) -> None:
    expected = "required" if value == "" else "invalid_choice"
    assert codes_of(valid_form(person_type=value)) == {"person_type": expected}


@pytest.mark.parametrize("form", [valid_form, valid_pj_form])
@pytest.mark.parametrize("missing", [MISSING, None, "", "   "])
def test_the_cpf_is_required_for_both_person_types(form: Any, missing: object) -> None:
    assert codes_of(form(cpf=missing)) == {"cpf": "required"}


@pytest.mark.parametrize(
    ("cpf", "code"),
    [
        ("111.111.111-11", "repeated_digits"),
        ("123.456.789-00", "invalid_check_digits"),
        ("123.456.789", "invalid_format"),
    ],
)
def test_an_invalid_cpf_is_rejected_with_its_reason(cpf: str, code: str) -> None:
    assert codes_of(valid_form(cpf=cpf)) == {"cpf": code}


def test_a_pf_with_a_cnpj_is_rejected() -> None:
    assert codes_of(valid_form(cnpj=mask_cnpj(make_cnpj(1)))) == {"cnpj": "not_allowed"}


def test_a_pf_with_an_empty_string_cnpj_is_rejected_because_only_absent_or_null_is_allowed() -> (
    None
):
    assert codes_of(valid_form(cnpj="")) == {"cnpj": "not_allowed"}


@pytest.mark.parametrize("cnpj", [MISSING, None])
def test_a_pf_without_a_cnpj_is_accepted(cnpj: object) -> None:
    assert parse_registration_form(valid_form(cnpj=cnpj)).cnpj is None


@pytest.mark.parametrize("cnpj", [MISSING, None, ""])
def test_a_pj_without_a_cnpj_is_rejected(cnpj: object) -> None:
    assert codes_of(valid_pj_form(cnpj=cnpj)) == {"cnpj": "required"}


def test_a_pj_with_an_invalid_cnpj_is_rejected_with_its_reason() -> None:
    assert codes_of(valid_pj_form(cnpj="12.ABC.345/01DE-36")) == {"cnpj": "invalid_check_digits"}


def test_a_cnpj_is_still_checked_when_the_person_type_is_invalid() -> None:
    assert codes_of(valid_pj_form(person_type="XX", cnpj="11.222.333/0001-00")) == {
        "person_type": "invalid_choice",
        "cnpj": "invalid_check_digits",
    }


def test_a_cnpj_is_not_demanded_when_the_person_type_is_invalid() -> None:
    assert codes_of(valid_form(person_type="XX")) == {"person_type": "invalid_choice"}


# --- name --------------------------------------------------------------------------------------


def test_the_name_is_stored_trimmed() -> None:
    assert parse_registration_form(valid_form(name="  Maria da Silva \t")).name == "Maria da Silva"


def test_the_name_is_stored_in_unicode_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "João Conceição")
    assert parse_registration_form(valid_form(name=decomposed)).name == "João Conceição"


@pytest.mark.parametrize("name", ["Al", "  Al  ", "x" * 200, " " + "x" * 200 + " "])
def test_a_name_of_2_to_200_characters_after_trimming_is_accepted(name: str) -> None:
    assert parse_registration_form(valid_form(name=name)).name == name.strip()


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("A", "too_short"),
        ("  A  ", "too_short"),
        ("x" * 201, "too_long"),
        ("", "required"),
        ("   ", "required"),
        (None, "required"),
        ("Maria\x00", "invalid_characters"),
        ("Maria\nda Silva", "invalid_characters"),
        ("Maria \ud800", "invalid_characters"),
        ("\u202eairaM", "invalid_characters"),  # right-to-left override
        ("Ma\u200bria", "invalid_characters"),  # zero-width space
        ("Maria\u2066 Silva", "invalid_characters"),  # left-to-right isolate
        ("Maria\ufeff", "invalid_characters"),  # byte order mark
        ("Maria\u2028da Silva", "invalid_characters"),  # line separator
        ("Maria\u2029da Silva", "invalid_characters"),  # paragraph separator
    ],
)
def test_a_name_outside_the_rules_is_rejected(name: str | None, code: str) -> None:
    assert codes_of(valid_form(name=name)) == {"name": code}


@pytest.mark.parametrize(
    "name", ["José da Conceição", "Zoë Müller", "Nguyễn Văn An", "Ñandú Ltda."]
)
def test_a_name_with_accents_and_other_scripts_letters_is_accepted(name: str) -> None:
    assert parse_registration_form(valid_form(name=name)).name == name


def test_an_address_text_with_a_bidi_override_is_rejected_by_field() -> None:
    form = valid_form()
    form["address"] = {**form["address"], "street": "Rua \u202eXYZ"}
    assert codes_of(form) == {"address.street": "invalid_characters"}


# --- phones ------------------------------------------------------------------------------------


def test_the_mobile_phone_is_required() -> None:
    assert codes_of(valid_form(mobile_phone=MISSING)) == {"mobile_phone": "required"}


def test_a_landline_as_mobile_phone_is_rejected() -> None:
    assert codes_of(valid_form(mobile_phone="(11) 3123-4567")) == {"mobile_phone": "not_mobile"}


def test_an_invalid_mobile_phone_is_rejected() -> None:
    assert codes_of(valid_form(mobile_phone="(11) 1234")) == {"mobile_phone": "invalid_phone"}


@pytest.mark.parametrize("phone", [MISSING, None, "", "  "])
def test_the_landline_is_optional(phone: object) -> None:
    assert parse_registration_form(valid_form(phone=phone)).phone is None


def test_a_mobile_as_landline_is_rejected() -> None:
    assert codes_of(valid_form(phone="(11) 91234-5678")) == {"phone": "not_landline"}


def test_phones_are_stored_as_e164() -> None:
    details = parse_registration_form(
        valid_form(mobile_phone="+55 21 98765-4321", phone="2131234567")
    )
    assert (details.mobile_phone, details.phone) == ("+5521987654321", "+552131234567")


# --- email -------------------------------------------------------------------------------------


def test_the_email_is_stored_normalised() -> None:
    body = valid_form(email="  Maria@Example.COM ", email_confirmation="maria@example.com")
    assert parse_registration_form(body).email == "maria@example.com"


def test_the_email_is_stored_in_unicode_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "joão@exemplo.com.br")
    body = valid_form(email=decomposed, email_confirmation="JOÃO@exemplo.com.br")
    assert parse_registration_form(body).email == "joão@exemplo.com.br"


def test_an_invalid_email_is_rejected_without_a_confirmation_complaint() -> None:
    body = valid_form(email="maria@example", email_confirmation="other@example.com")
    assert codes_of(body) == {"email": "invalid_email"}


def test_an_email_over_254_characters_is_rejected_as_too_long() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com"
    assert codes_of(valid_form(email=email, email_confirmation=email)) == {"email": "too_long"}


@pytest.mark.parametrize("confirmation", ["mara@example.com", "maria@example.org", "not an email"])
def test_an_email_confirmation_that_differs_is_rejected_as_mismatch(confirmation: str) -> None:
    errors = errors_of(valid_form(email_confirmation=confirmation))
    assert errors == [
        FieldError("email_confirmation", "mismatch", "Email confirmation does not match email")
    ]


def test_the_email_confirmation_is_compared_after_normalisation() -> None:
    body = valid_form(email="maria@example.com", email_confirmation=" MARIA@EXAMPLE.com ")
    assert parse_registration_form(body).email == "maria@example.com"


@pytest.mark.parametrize("confirmation", [MISSING, None, ""])
def test_the_email_confirmation_is_required(confirmation: object) -> None:
    assert codes_of(valid_form(email_confirmation=confirmation)) == {
        "email_confirmation": "required"
    }


# --- address -----------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [MISSING, None])
def test_the_address_is_required(address: object) -> None:
    assert codes_of(valid_form(address=address)) == {"address": "required"}


def test_the_address_is_stored_normalised() -> None:
    body = with_address(
        cep="04538133",
        street="  Rua Funchal ",
        number=" s/n ",
        complement="",
        neighborhood="Vila Olímpia",
        city="São Paulo",
        state="sp",
    )
    assert parse_registration_form(body).address == Address(
        cep="04538133",
        street="Rua Funchal",
        number="s/n",
        complement=None,
        neighborhood="Vila Olímpia",
        city="São Paulo",
        state="SP",
    )


@pytest.mark.parametrize("cep", ["01310-100", "01310100"])
def test_a_cep_is_accepted_masked_or_not(cep: str) -> None:
    assert parse_registration_form(with_address(cep=cep)).address.cep == "01310100"


@pytest.mark.parametrize("field", ["street", "neighborhood", "city"])
@pytest.mark.parametrize(
    ("value", "code"),
    [(MISSING, "required"), (None, "required"), ("", "required"), ("x" * 201, "too_long")],
)
def test_street_neighborhood_and_city_need_1_to_200_characters(
    field: str, value: object, code: str
) -> None:
    assert codes_of(with_address(**{field: value})) == {f"address.{field}": code}


@pytest.mark.parametrize("field", ["street", "neighborhood", "city"])
@pytest.mark.parametrize("value", ["x", "x" * 200])
def test_street_neighborhood_and_city_accept_1_and_200_characters(field: str, value: str) -> None:
    details = parse_registration_form(with_address(**{field: value}))
    assert details.address.to_dict()[field] == value


@pytest.mark.parametrize("number", ["S/N", "1", "x" * 20, "1578 fundos"])
def test_a_house_number_of_1_to_20_characters_is_accepted(number: str) -> None:
    assert parse_registration_form(with_address(number=number)).address.number == number


@pytest.mark.parametrize(
    ("number", "code"), [("x" * 21, "too_long"), ("", "required"), (MISSING, "required")]
)
def test_a_house_number_outside_1_to_20_characters_is_rejected(number: object, code: str) -> None:
    assert codes_of(with_address(number=number)) == {"address.number": code}


@pytest.mark.parametrize("complement", [MISSING, None, "", "   "])
def test_the_complement_is_optional(complement: object) -> None:
    assert parse_registration_form(with_address(complement=complement)).address.complement is None


def test_a_complement_of_200_characters_is_accepted_and_201_rejected() -> None:
    assert parse_registration_form(with_address(complement="x" * 200)).address.complement
    assert codes_of(with_address(complement="x" * 201)) == {"address.complement": "too_long"}


@pytest.mark.parametrize("state", ["sp", "Rj", "df"])
def test_a_state_is_accepted_in_any_case_and_stored_upper_case(state: str) -> None:
    assert parse_registration_form(with_address(state=state)).address.state == state.upper()


@pytest.mark.parametrize("state", ["XX", "São Paulo", "S"])
def test_a_state_that_is_not_a_uf_is_rejected(state: str) -> None:
    assert codes_of(with_address(state=state)) == {"address.state": "invalid_choice"}


# --- terms -------------------------------------------------------------------------------------


def test_declined_terms_are_rejected() -> None:
    assert codes_of(valid_form(accepted_terms=False)) == {"accepted_terms": "must_be_true"}


@pytest.mark.parametrize("value", ["true", 1, "yes", [True], {"accepted": True}])
def test_terms_accepted_with_anything_but_the_json_true_are_rejected(value: object) -> None:
    assert codes_of(valid_form(accepted_terms=value)) == {"accepted_terms": "wrong_type"}


@pytest.mark.parametrize("value", [MISSING, None])
def test_terms_must_be_present(value: object) -> None:
    assert codes_of(valid_form(accepted_terms=value)) == {"accepted_terms": "required"}


# --- the details value -------------------------------------------------------------------------


def test_details_as_a_dict_nest_the_address() -> None:
    data = parse_registration_form(valid_form()).to_dict()
    assert data["address"] == {
        "cep": "01310100",
        "street": "Avenida Paulista",
        "number": "1578",
        "complement": "apto 12",
        "neighborhood": "Bela Vista",
        "city": "São Paulo",
        "state": "SP",
    }
    assert set(data) == {
        "person_type", "cpf", "cnpj", "name", "mobile_phone", "phone", "email", "address",
    }  # fmt: skip


# --- robustness and documentation --------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)
fields = st.sampled_from(
    [
        "person_type", "cpf", "cnpj", "name", "mobile_phone", "phone", "email",
        "email_confirmation", "address", "accepted_terms", "other",
    ]
)  # fmt: skip
address_fields = st.sampled_from(
    ["cep", "street", "number", "complement", "neighborhood", "city", "state", "other"]
)


@given(json_values)
def test_any_json_value_is_either_accepted_or_rejected_with_field_errors(body: object) -> None:
    try:
        parse_registration_form(body)
    except InvalidRegistration as error:
        assert error.errors


@given(st.dictionaries(fields, json_values), st.dictionaries(address_fields, json_values))
def test_any_mangled_form_is_either_accepted_or_rejected_with_field_errors(
    overrides: dict[str, Any], address: dict[str, Any]
) -> None:
    body = valid_form(**overrides)
    if not overrides.get("address"):
        body["address"] = valid_address(**address)
    try:
        parse_registration_form(body)
    except InvalidRegistration as error:
        assert error.errors
        assert all(isinstance(e.message, str) and e.message for e in error.errors)


def test_every_error_code_is_documented_in_the_form_module() -> None:
    codes = [
        value
        for name, value in vars(domain.values).items()
        if name.isupper() and isinstance(value, str)
    ]
    assert len(codes) > 10
    doc = domain.form.__doc__ or ""
    assert all(f"``{code}``" in doc for code in codes), codes


def test_thousands_of_unknown_fields_are_listed_up_to_ten_then_counted() -> None:
    form = valid_form()
    form.update({f"extra{n}": 1 for n in range(2_000)})
    form["address"] = {**form["address"], **{f"x{n}": 1 for n in range(500)}}

    errors = errors_of(form)

    top = [e for e in errors if e.code == "unknown_field" and not e.field.startswith("address")]
    inner = [e for e in errors if e.code == "unknown_field" and e.field.startswith("address")]
    assert [e.field for e in top] == [f"extra{n}" for n in range(10)] + [""]
    assert top[-1].message == "1990 more unknown field(s) in the body"
    assert [e.field for e in inner] == [f"address.x{n}" for n in range(10)] + ["address"]
    assert inner[-1].message == "490 more unknown field(s) in address"


def test_a_long_unknown_field_name_is_cut_short_in_the_error() -> None:
    errors = errors_of({**valid_form(), "k" * 5_000: 1})

    [unknown] = [e for e in errors if e.code == "unknown_field"]
    assert unknown.field == "k" * 64 + "…"
    assert len(unknown.message) < 100


# --- the common form's pass --------------------------------------------------------------------
# Nearly every body is decided by a pass that only accepts (``_common_form``); anything it does
# not accept goes through every field again, and that pass's answer is the answer. Both must
# agree on every body the first one accepts.


def _answer(parse: Any, body: object) -> object:
    """The details, or the errors a client would be told."""
    try:
        return parse(body)
    except InvalidRegistration as error:
        return error.errors


# Values a field of the form may be given: plain and masked spellings, the blank, the absent,
# other JSON types, and texts that only look plain (composed, invisible, separated).
field_values = st.one_of(
    st.sampled_from(
        [
            MISSING, None, "", "   ", 0, 1.5, True, False, [], {},
            "PF", "PJ", "pf", " PF", mask_cpf(make_cpf(3)), make_cpf(3), mask_cnpj(make_cnpj(3)),
            "12.abc.345/01de-35", "(11) 91234-5678", "11912345678", "+55 11 3123-4567",
            "(11) 3123-4567", "maria@example.com", "Maria@Example.COM ", " maria@example.com",
            "01310-100", "01310100", "SP", "sp", "São Paulo", "Sa\u0303o Paulo", "João\u00a0Silva",
            "Jo\u200bão", "a\u2028b", "x" * 201, "x" * 21, "N", " Bela Vista ", "\u3000Rua A\u3000",
            "a\x00b", "a\x85b", "ab\u00ad", "\U0001f600 Ana",
        ]
    ),
    st.text(max_size=12),
)  # fmt: skip
# The form's own fields (the address is given whole, below) and its address's.
form_fields = st.sampled_from(sorted(domain.form._FIELDS - {"address"}))
address_field_names = st.sampled_from(sorted(domain.form._ADDRESS_FIELDS))


@given(
    st.booleans(),
    st.dictionaries(form_fields, field_values, max_size=3),
    st.dictionaries(address_field_names, field_values, max_size=3),
    st.booleans(),
)
def test_the_common_forms_pass_answers_as_the_full_pass_on_generated_bodies(
    company: bool, top: dict[str, Any], inner: dict[str, Any], unknown: bool
) -> None:
    body = valid_pj_form(**top) if company else valid_form(**top)
    body["address"] = valid_address(**inner)
    if unknown:
        body["address"]["floor"] = 3
    assert _answer(parse_registration_form, body) == _answer(domain.form._every_field, body)


@pytest.mark.parametrize(
    "body",
    [
        valid_form(),
        valid_pj_form(),
        valid_pj_form(cnpj="12.abc.345/01de-35"),
        valid_form(name="  Conceição Araújo  ", email_confirmation="MARIA@example.com"),
        valid_form(name="Sa\u0303o", phone=None, address=valid_address(complement="  ")),
        valid_form(phone="", address=valid_address(complement=MISSING)),
        valid_form(cnpj=MISSING, phone=MISSING),
    ],
)
def test_the_common_forms_pass_takes_the_usual_bodies(body: dict[str, Any]) -> None:
    assert domain.form._common_form(body) == domain.form._every_field(body)
