"""CEP, state and the Address value."""

from __future__ import annotations

import dataclasses

import pytest

from domain.address import UFS, Address, normalise_cep, normalise_state
from domain.values import INVALID_CHOICE, INVALID_FORMAT, InvalidValue

ALL_UFS = [
    "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA",
    "PB", "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
]  # fmt: skip


def _code(normalise: object, raw: str) -> str:
    assert callable(normalise)
    with pytest.raises(InvalidValue) as caught:
        normalise(raw)
    return caught.value.code


def test_a_masked_cep_is_stored_as_eight_digits() -> None:
    assert normalise_cep("01310-100") == "01310100"


def test_a_bare_cep_is_kept_as_is() -> None:
    assert normalise_cep(" 01310100 ") == "01310100"


@pytest.mark.parametrize(
    "raw",
    ["", "0131010", "013101000", "0131-0100", "01310_100", "01.310-100", "abcde-fgh", "٠١٣١٠١٠٠"],
)
def test_a_cep_that_is_not_eight_digits_is_rejected(raw: str) -> None:
    assert _code(normalise_cep, raw) == INVALID_FORMAT


def test_there_are_exactly_the_27_brazilian_ufs() -> None:
    assert set(ALL_UFS) == UFS
    assert len(UFS) == 27


@pytest.mark.parametrize("uf", ALL_UFS)
def test_every_uf_is_accepted_in_any_letter_case_and_stored_upper_case(uf: str) -> None:
    assert normalise_state(uf) == uf
    assert normalise_state(uf.lower()) == uf
    assert normalise_state(uf[0] + uf[1].lower()) == uf


def test_surrounding_whitespace_around_a_state_is_ignored() -> None:
    assert normalise_state(" sp ") == "SP"


@pytest.mark.parametrize("raw", ["", "XX", "S", "SPP", "São Paulo", "\u017fp", "BR"])
def test_anything_but_a_uf_is_rejected_as_a_state(raw: str) -> None:
    assert _code(normalise_state, raw) == INVALID_CHOICE


def _address(**changes: str | None) -> Address:
    address = Address(
        cep="01310100",
        street="Avenida Paulista",
        number="1578",
        complement=None,
        neighborhood="Bela Vista",
        city="São Paulo",
        state="SP",
    )
    return dataclasses.replace(address, **changes)


def test_an_address_turns_into_a_flat_dict_of_strings() -> None:
    address = _address(complement="apto 12")
    assert address.to_dict() == {
        "cep": "01310100",
        "street": "Avenida Paulista",
        "number": "1578",
        "complement": "apto 12",
        "neighborhood": "Bela Vista",
        "city": "São Paulo",
        "state": "SP",
    }


def test_an_address_without_complement_has_none_there() -> None:
    assert _address().to_dict()["complement"] is None


def test_an_address_cannot_be_changed_after_creation() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _address().city = "Rio de Janeiro"  # type: ignore[misc]
