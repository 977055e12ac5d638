"""GET /: the signup page, plus its static assets under /static.

The page validates as the server does without restating the rules by hand: ``form_rules()``
reads them from the domain (UFs, shapes, codes, limits) and the phone library's metadata, and
the page embeds them as JSON. Only the check-digit arithmetic is ported to JavaScript.
"""

from __future__ import annotations

import hashlib
import html
import json
from functools import cache
from pathlib import Path
from typing import Any

import phonenumbers
from litestar import MediaType, Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.router import Router
from litestar.static_files import create_static_files_router

from domain import address, contact, documents, values
from domain.errors import AlreadyRegistered
from domain.form import NAME_LENGTH, NUMBER_LENGTH, TEXT_LENGTH

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
STATIC_DIR = WEB_DIR / "static"

# Free-text fields and their length limits, as the domain declares them.
_TEXT_LIMITS = {
    "name": NAME_LENGTH,
    "address.street": TEXT_LENGTH,
    "address.number": NUMBER_LENGTH,
    "address.complement": TEXT_LENGTH,
    "address.neighborhood": TEXT_LENGTH,
    "address.city": TEXT_LENGTH,
}

_UF_NAMES = {
    "AC": "Acre", "AL": "Alagoas", "AP": "Amapá", "AM": "Amazonas", "BA": "Bahia",
    "CE": "Ceará", "DF": "Distrito Federal", "ES": "Espírito Santo", "GO": "Goiás",
    "MA": "Maranhão", "MT": "Mato Grosso", "MS": "Mato Grosso do Sul", "MG": "Minas Gerais",
    "PA": "Pará", "PB": "Paraíba", "PR": "Paraná", "PE": "Pernambuco", "PI": "Piauí",
    "RJ": "Rio de Janeiro", "RN": "Rio Grande do Norte", "RS": "Rio Grande do Sul",
    "RO": "Rondônia", "RR": "Roraima", "SC": "Santa Catarina", "SP": "São Paulo",
    "SE": "Sergipe", "TO": "Tocantins",
}  # fmt: skip

# pt-BR text per stable error code. A code without an entry here falls back, in the page, to
# the server's own (English) message, so a new server code never leaves a field unexplained.
# {min} and {max} are replaced by the field's limits.
_MESSAGES = {
    values.WRONG_TYPE: "Valor em formato inesperado.",
    values.REQUIRED: "Preencha este campo.",
    values.UNKNOWN_FIELD: "Campo desconhecido.",
    values.NOT_ALLOWED: "O CNPJ só se aplica a pessoa jurídica.",
    values.INVALID_CHOICE: "Escolha uma das opções.",
    values.TOO_SHORT: "Use pelo menos {min} caracteres.",
    values.TOO_LONG: "Use no máximo {max} caracteres.",
    values.INVALID_CHARACTERS: "Este campo contém caracteres inválidos.",
    values.INVALID_FORMAT: "Formato inválido.",
    values.REPEATED_DIGITS: "Não pode ter todos os dígitos iguais.",
    values.INVALID_CHECK_DIGITS: "Os dígitos verificadores não conferem.",
    values.INVALID_EMAIL: "Informe um e-mail válido, como nome@exemplo.com.br.",
    values.INVALID_PHONE: "Informe um telefone brasileiro válido, com DDD.",
    values.NOT_MOBILE: "Informe um celular: DDD e 9 dígitos, começando com 9.",
    values.NOT_LANDLINE: "Informe um telefone fixo: DDD e 8 dígitos.",
    values.MISMATCH: "Os e-mails não conferem.",
    values.MUST_BE_TRUE: "Aceite os termos para continuar.",
}
_FIELD_MESSAGES = {
    "person_type": {values.REQUIRED: "Escolha pessoa física ou jurídica."},
    "cpf": {
        values.INVALID_FORMAT: "Informe os 11 dígitos do CPF (000.000.000-00).",
        values.REPEATED_DIGITS: "O CPF não pode ter todos os dígitos iguais.",
        values.INVALID_CHECK_DIGITS: "CPF inválido: os dígitos verificadores não conferem.",
    },
    "cnpj": {
        values.INVALID_FORMAT: (
            "Informe os 14 caracteres do CNPJ (00.000.000/0000-00); letras só nas 12 primeiras "
            "posições."
        ),
        values.REPEATED_DIGITS: "O CNPJ não pode ter todos os caracteres iguais.",
        values.INVALID_CHECK_DIGITS: "CNPJ inválido: os dígitos verificadores não conferem.",
    },
    "address.cep": {values.INVALID_FORMAT: "Informe os 8 dígitos do CEP (00000-000)."},
    "address.state": {values.INVALID_CHOICE: "Escolha um estado (UF)."},
    "accepted_terms": {values.REQUIRED: "Aceite os termos para continuar."},
}
# 409 answers name the field already taken; keyed by that field.
_CONFLICT_MESSAGES = {
    "email": "Este e-mail já está cadastrado.",
    "cpf": "Já existe um cadastro de pessoa física com este CPF.",
    "cnpj": "Este CNPJ já está cadastrado.",
}


def error_codes() -> frozenset[str]:
    """Every field error code the domain can report: the constants of ``domain.values``."""
    return frozenset(
        value for name, value in vars(values).items() if name.isupper() and isinstance(value, str)
    )


@cache
def form_rules() -> dict[str, Any]:
    """The validation rules the page applies as you type, all taken from the server's code."""
    brazil = phonenumbers.PhoneMetadata.metadata_for_region("BR")
    assert brazil is not None and brazil.mobile is not None and brazil.fixed_line is not None
    limits = dict(_TEXT_LIMITS)
    limits["email"] = (1, contact.EMAIL_MAX_LENGTH)
    conflicts = {cls.field: cls.code for cls in AlreadyRegistered.__subclasses__()}
    return {
        "ufs": sorted(address.UFS),
        "limits": {path: {"min": low, "max": high} for path, (low, high) in limits.items()},
        # The shapes the normalisers full-match; Python and JavaScript read these the same way.
        "patterns": {
            "cpf": documents.CPF_SHAPE.pattern,
            "cnpj": documents.CNPJ_SHAPE.pattern,
            "address.cep": address.CEP_SHAPE.pattern,
        },
        # The number plans phonenumbers (hence the server) classifies a national number by.
        "phone_patterns": {
            "mobile": brazil.mobile.national_number_pattern,
            "landline": brazil.fixed_line.national_number_pattern,
        },
        "codes": sorted(error_codes()),
        "messages": _MESSAGES,
        "field_messages": _FIELD_MESSAGES,
        "conflicts": {
            field: {"code": code, "message": _CONFLICT_MESSAGES.get(field)}
            for field, code in conflicts.items()
        },
    }


def _asset_version(name: str) -> str:
    # A content hash in the URL lets browsers cache the assets and still see every change.
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


@cache
def render_page() -> str:
    # "<" escaped so nothing in the data can close the <script> element that carries it.
    rules = json.dumps(form_rules(), ensure_ascii=False).replace("<", "\\u003c")
    options = "\n".join(
        f'<option value="{uf}">{uf} - {_UF_NAMES.get(uf, uf)}</option>'
        for uf in sorted(address.UFS)
    )
    return (
        (WEB_DIR / "index.html")
        .read_text(encoding="utf-8")
        .replace("{{FORM_RULES}}", rules)
        .replace("{{UF_OPTIONS}}", options)
        .replace("{{CSS_VERSION}}", _asset_version("signup.css"))
        .replace("{{JS_VERSION}}", _asset_version("signup.js"))
    )


# Everything the page loads is its own: no inline script, no third party.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@get("/", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def signup_page() -> Response[str]:
    return Response(render_page(), media_type=MediaType.HTML, headers=_SECURITY_HEADERS)


TERMS_PATH = "/termos"
_TERMS_LAYOUT = """<!doctype html>
<html lang="pt-BR">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Termos de uso e política de privacidade</title>
<link rel="stylesheet" href="/static/signup.css?v={css}">
</head>
<body>
<main class="page">
<h1>Termos de uso e política de privacidade</h1>
<div class="terms-text">
{text}
</div>
<p><a href="/">Voltar ao cadastro</a></p>
</main>
</body>
</html>
"""


def render_terms(terms_file: str | None = None) -> str:
    """The terms page: the operator's file (HTML as it is, anything else as plain text), or
    the model text shipped with the service."""
    source = Path(terms_file) if terms_file else WEB_DIR / "terms.html"
    content = source.read_text(encoding="utf-8")
    if source.suffix.lower() not in {".html", ".htm"}:
        paragraphs = [p.strip() for p in content.split("\n\n") if p.strip()]
        content = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return _TERMS_LAYOUT.format(css=_asset_version("signup.css"), text=content)


def terms_page(terms_file: str | None = None) -> HTTPRouteHandler:
    """GET /termos, which the form's terms checkbox links to; read once, when the app is
    built (a new text is served from the next start)."""
    rendered = render_terms(terms_file)

    @get(TERMS_PATH, media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
    def terms() -> Response[str]:
        return Response(rendered, media_type=MediaType.HTML, headers=_SECURITY_HEADERS)

    return terms


def static_assets() -> Router:
    """The page's CSS and JavaScript; a fresh router per app, since apps are built per test."""
    return create_static_files_router(path="/static", directories=[STATIC_DIR])
