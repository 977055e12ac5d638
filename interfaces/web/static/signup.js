// The signup page: masks, live validation, submission with an Idempotency-Key, status polling,
// and the email's verification (its code typed here, or its link opened: #verificar=ID.TOKEN).
// The rules come from the server (the JSON in #form-rules, built by interfaces/http/page.py);
// only the check-digit arithmetic is written here.
"use strict";

(() => {
  const rules = JSON.parse(document.getElementById("form-rules").textContent);
  const form = document.getElementById("signup-form");
  const submitButton = document.getElementById("submit");
  const formStatus = document.getElementById("form-status");
  const result = document.getElementById("result");

  const fullMatch = (pattern) => new RegExp(`^(?:${pattern})$`);
  const SHAPES = Object.fromEntries(
    Object.entries(rules.patterns).map(([field, pattern]) => [field, fullMatch(pattern)]),
  );
  const MOBILE_PLAN = fullMatch(rules.phone_patterns.mobile);
  const LANDLINE_PLAN = fullMatch(rules.phone_patterns.landline);
  const STATUS_LABELS = {
    pending: "pendente",
    completed: "concluído",
    failed: "falhou",
    verified: "e-mail confirmado",
    expired: "expirado",
  };
  const STATUS_DETAILS = {
    pending: "Estamos criando sua conta. Esta página se atualiza sozinha.",
    completed: "Sua conta está pronta. Falta confirmar o seu e-mail.",
    failed:
      "Não conseguimos concluir seu cadastro. Nossa equipe pode reprocessá-lo; guarde o protocolo.",
    verified: "Seu e-mail foi confirmado e seu cadastro está completo.",
    expired:
      "O prazo para confirmar o e-mail acabou: o cadastro foi cancelado e os dados, apagados. " +
      "Você pode se cadastrar de novo.",
  };
  const POLL_LIMIT_MS = 5 * 60 * 1000;
  // Longer waits (a per-email limit can last an hour) leave the button usable: the limit may
  // not apply to corrected data, and the server will say so again if it does.
  const BLOCK_AT_MOST_S = 60;
  const IN_PROGRESS_RETRIES = 10;

  // ---------------------------------------------------------------- fields and messages

  const domId = (path) => path.replace(/\./g, "-");
  const control = (path) => document.getElementById(`f-${domId(path)}`);
  const errorBox = (path) => document.getElementById(`e-${domId(path)}`);
  const value = (path) => form.elements.namedItem(path).value;
  const personType = () => value("person_type");
  const isPJ = () => personType() === "PJ";

  function messageFor(path, code, fallback) {
    const template = rules.field_messages[path]?.[code] ?? rules.messages[code];
    if (!template) return fallback || "Valor inválido.";
    const limits = rules.limits[path] ?? {};
    return template.replace("{min}", limits.min).replace("{max}", limits.max);
  }

  // The elements that carry aria-invalid: the radios of a group, or the control itself.
  function invalidTargets(path) {
    const target = control(path);
    if (!target) return [];
    return target.tagName === "FIELDSET" ? [...target.querySelectorAll("input")] : [target];
  }

  function setError(path, message) {
    const box = errorBox(path);
    if (!box) return false;
    box.textContent = message;
    for (const element of invalidTargets(path)) element.setAttribute("aria-invalid", "true");
    return true;
  }

  function clearError(path) {
    const box = errorBox(path);
    if (box) box.textContent = "";
    for (const element of invalidTargets(path)) element.removeAttribute("aria-invalid");
  }

  const hasError = (path) => Boolean(errorBox(path)?.textContent);

  function say(message, tone = "info") {
    formStatus.textContent = message;
    formStatus.dataset.tone = tone;
  }

  // ---------------------------------------------------------------- masks

  // "0" takes a digit, "A" a digit or letter (upper-cased); anything else is a literal.
  const MASKS = {
    cpf: "000.000.000-00",
    cnpj: "AA.AAA.AAA/AAAA-00",
    cep: "00000-000",
    mobile: "(00) 00000-0000",
    landline: "(00) 0000-0000",
  };
  const SLOT = { 0: /[0-9]/, A: /[0-9A-Z]/ };
  const significant = (char) => /[0-9A-Za-z]/.test(char);

  function phoneDigits(raw) {
    // A pasted "+55 11 ..." or "011 ..." keeps only the area code and the number.
    let digits = raw.replace(/\D/g, "");
    if (digits.length > 11 && digits.startsWith("55")) digits = digits.slice(2);
    return digits.replace(/^0+/, "");
  }

  function format(kind, raw) {
    const template = MASKS[kind];
    const chars = [...(kind === "mobile" || kind === "landline" ? phoneDigits(raw) : raw)]
      .filter(significant)
      .map((char) => char.toUpperCase());
    let out = "";
    let literals = "";
    for (const slot of template) {
      if (!chars.length) break;
      if (!SLOT[slot]) {
        literals += slot; // written only once a character follows it
        continue;
      }
      while (chars.length && !SLOT[slot].test(chars[0])) chars.shift();
      if (!chars.length) break;
      out += literals + chars.shift();
      literals = "";
    }
    return out;
  }

  function applyMask(input) {
    const old = input.value;
    const caret = input.selectionStart ?? old.length;
    const formatted = format(input.dataset.mask, old);
    if (formatted === old) return;
    input.value = formatted;
    if (document.activeElement !== input) return;
    // Keep the caret after the same number of typed characters, so editing mid-value works.
    let position = formatted.length;
    if (caret < old.length) {
      const before = [...old.slice(0, caret)].filter(significant).length;
      let seen = 0;
      position = 0;
      while (position < formatted.length && seen < before) {
        if (significant(formatted[position])) seen += 1;
        position += 1;
      }
    }
    input.setSelectionRange(position, position);
  }

  // ---------------------------------------------------------------- validation

  function mod11(total) {
    const remainder = total % 11;
    return remainder < 2 ? 0 : 11 - remainder;
  }

  // CPF: weights count down from (length + 1) to 2.
  function cpfDigit(values) {
    return mod11(values.reduce((total, v, i) => total + v * (values.length + 1 - i), 0));
  }

  // CNPJ: weights 2..9 repeating from the right; a character is worth its ASCII code - 48.
  function cnpjDigit(values) {
    return mod11([...values].reverse().reduce((total, v, i) => total + v * (2 + (i % 8)), 0));
  }

  function checkDigits(kind, chars) {
    const values = [...chars].map((char) => char.charCodeAt(0) - 48);
    const digit = kind === "cpf" ? cpfDigit : cnpjDigit;
    const body = values.slice(0, kind === "cpf" ? 9 : 12);
    const first = digit(body);
    return `${first}${digit([...body, first])}`;
  }

  function checkDocument(kind, raw) {
    const text = raw.trim();
    if (!text) return "required";
    if (!SHAPES[kind].test(text)) return "invalid_format";
    const chars = text.replace(/[./-]/g, "").toUpperCase();
    if (new Set(chars).size === 1) return "repeated_digits";
    return checkDigits(kind, chars) === chars.slice(-2) ? null : "invalid_check_digits";
  }

  function checkText(path, raw, required = true) {
    const text = raw.trim().normalize("NFC");
    if (!text) return required ? "required" : null;
    if (/[\p{Cc}\p{Cs}]/u.test(text)) return "invalid_characters";
    const length = [...text].length; // code points, as Python's len()
    const { min, max } = rules.limits[path];
    if (length < min) return "too_short";
    if (length > max) return "too_long";
    return null;
  }

  const normaliseEmail = (raw) => raw.trim().normalize("NFC").toLowerCase();

  // Syntax only roughly: the server (email_validator) has the final word, shown on submit.
  function checkEmail(raw) {
    const email = normaliseEmail(raw);
    if (!email) return "required";
    if ([...email].length > rules.limits.email.max) return "too_long";
    return /^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/.test(email) ? null : "invalid_email";
  }

  function checkConfirmation(raw) {
    if (!raw.trim()) return "required";
    if (checkEmail(value("email"))) return null; // the server says nothing more either
    return normaliseEmail(raw) === normaliseEmail(value("email")) ? null : "mismatch";
  }

  function checkPhone(kind, raw, required) {
    if (!raw.trim()) return required ? "required" : null;
    const digits = phoneDigits(raw);
    const mobile = MOBILE_PLAN.test(digits);
    const landline = LANDLINE_PLAN.test(digits);
    if (!mobile && !landline) return "invalid_phone";
    if (kind === "mobile") {
      return mobile && digits.length === 11 && digits[2] === "9" ? null : "not_mobile";
    }
    return landline && digits.length === 10 ? null : "not_landline";
  }

  const VALIDATORS = {
    person_type: (v) => (v === "PF" || v === "PJ" ? null : v ? "invalid_choice" : "required"),
    cnpj: (v) => checkDocument("cnpj", v),
    cpf: (v) => checkDocument("cpf", v),
    name: (v) => checkText("name", v),
    mobile_phone: (v) => checkPhone("mobile", v, true),
    phone: (v) => checkPhone("landline", v, false),
    email: checkEmail,
    email_confirmation: checkConfirmation,
    "address.cep": (v) => (!v.trim() ? "required" : SHAPES["address.cep"].test(v.trim()) ? null : "invalid_format"),
    "address.state": (v) => (!v ? "required" : rules.ufs.includes(v.toUpperCase()) ? null : "invalid_choice"),
    "address.street": (v) => checkText("address.street", v),
    "address.number": (v) => checkText("address.number", v),
    "address.complement": (v) => checkText("address.complement", v, false),
    "address.neighborhood": (v) => checkText("address.neighborhood", v),
    "address.city": (v) => checkText("address.city", v),
    accepted_terms: () => (control("accepted_terms").checked ? null : "must_be_true"),
  };

  const activeFields = () => Object.keys(VALIDATORS).filter((path) => path !== "cnpj" || isPJ());

  // Shows or clears the field's error; returns whether it is valid.
  function validate(path) {
    const code = VALIDATORS[path](value(path));
    if (code) setError(path, messageFor(path, code));
    else clearError(path);
    return !code;
  }

  function focusField(path) {
    const target = control(path);
    const focusable = target?.tagName === "FIELDSET" ? target.querySelector("input:checked, input") : target;
    focusable?.focus();
  }

  function reportInvalid(paths) {
    focusField(paths[0]);
    say(
      paths.length === 1
        ? "Corrija o campo destacado."
        : `Corrija os ${paths.length} campos destacados.`,
      "error",
    );
  }

  // ---------------------------------------------------------------- person type

  function showPersonType() {
    const pj = isPJ();
    for (const element of form.querySelectorAll("[data-only]")) {
      element.hidden = element.dataset.only !== (pj ? "PJ" : "PF");
    }
    // Labels that name something else for a company (the CPF is the responsible person's).
    for (const label of form.querySelectorAll("label[data-pj]")) {
      label.textContent = pj ? label.dataset.pj : label.dataset.pf;
    }
    // Disabled, the CNPJ input is skipped by the keyboard and never sent.
    control("cnpj").disabled = !pj;
    if (!pj) clearError("cnpj");
  }

  // ---------------------------------------------------------------- submission

  let idempotencyKey = null;
  let keyedBody = null;
  let submitting = false;
  let pollGeneration = 0;
  let waitTimer = null;

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID exists only in secure contexts (https, localhost); plain http gets this.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function collect() {
    const optional = (text) => (text.trim() ? text : null);
    return {
      person_type: personType(),
      cpf: value("cpf"),
      cnpj: isPJ() ? value("cnpj") : null,
      name: value("name"),
      mobile_phone: value("mobile_phone"),
      phone: optional(value("phone")),
      email: value("email"),
      email_confirmation: value("email_confirmation"),
      address: {
        cep: value("address.cep"),
        street: value("address.street"),
        number: value("address.number"),
        complement: optional(value("address.complement")),
        neighborhood: value("address.neighborhood"),
        city: value("address.city"),
        state: value("address.state"),
      },
      accepted_terms: control("accepted_terms").checked,
    };
  }

  function setSubmitting(on) {
    submitting = on;
    submitButton.disabled = on;
    submitButton.textContent = on ? "Enviando…" : "Cadastrar";
    form.setAttribute("aria-busy", String(on));
    // A disabled button drops focus; give it back so keyboard users keep their place.
    if (!on && document.activeElement === document.body && !form.hidden) submitButton.focus();
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function readProblem(response) {
    try {
      return await response.json();
    } catch {
      return {};
    }
  }

  function retryAfterSeconds(header) {
    if (!header) return null;
    const seconds = Number(header);
    if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
    const date = Date.parse(header); // Retry-After may also be an HTTP date
    return Number.isNaN(date) ? null : Math.max(1, Math.ceil((date - Date.now()) / 1000));
  }

  function describeWait(seconds) {
    if (seconds < 120) return seconds === 1 ? "1 segundo" : `${seconds} segundos`;
    const minutes = Math.ceil(seconds / 60);
    return minutes < 120 ? `${minutes} minutos` : `${Math.ceil(minutes / 60)} horas`;
  }

  function waitBeforeRetry(seconds, message) {
    say(message, "error");
    clearInterval(waitTimer);
    if (seconds > BLOCK_AT_MOST_S) return;
    let left = seconds;
    const tick = () => {
      if (left <= 0) {
        clearInterval(waitTimer);
        submitButton.disabled = false;
        submitButton.textContent = "Cadastrar";
        return;
      }
      submitButton.disabled = true;
      submitButton.textContent = `Aguarde ${left} s`;
      left -= 1;
    };
    tick();
    waitTimer = setInterval(tick, 1000);
  }

  async function post(body) {
    for (let attempt = 0; ; attempt += 1) {
      const response = await fetch("/registrations", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json, application/problem+json",
          "Idempotency-Key": idempotencyKey,
        },
        body,
      });
      if (response.status !== 409 || attempt >= IN_PROGRESS_RETRIES) return response;
      const problem = await readProblem(response.clone());
      // Our own earlier attempt with this key is still being recorded: wait for its answer.
      if (problem.code !== "idempotency_request_in_progress") return response;
      await sleep(1000);
    }
  }

  async function submit(event) {
    event.preventDefault();
    if (submitting) return;
    const invalid = activeFields().filter((path) => !validate(path));
    if (invalid.length) {
      reportInvalid(invalid);
      return;
    }
    const body = JSON.stringify(collect());
    // One key per distinct form: a double click or a retry of the same data replays the first
    // answer; corrected data is a new request (the server refuses a key reused for another body).
    if (body !== keyedBody) {
      idempotencyKey = newKey();
      keyedBody = body;
    }
    setSubmitting(true);
    say("Enviando seu cadastro…");
    let response;
    try {
      response = await post(body);
    } catch {
      say(
        "Não foi possível falar com o servidor. Verifique sua conexão e envie de novo: " +
          "o cadastro não será duplicado.",
        "error",
      );
      return;
    } finally {
      setSubmitting(false);
    }
    await handleAnswer(response);
  }

  async function handleAnswer(response) {
    const problem = await readProblem(response); // or, for a 202, the acceptance
    if (response.status === 202) {
      const location = response.headers.get("Location") || `/registrations/${problem.registration_id}`;
      accepted(problem.registration_id, location);
      return;
    }
    if (response.status === 422 && Array.isArray(problem.errors)) {
      const shown = [];
      const unplaced = [];
      for (const error of problem.errors) {
        if (setError(error.field, messageFor(error.field, error.code, error.message))) {
          shown.push(error.field);
        } else {
          unplaced.push(error.message);
        }
      }
      if (shown.length) reportInvalid(shown);
      if (unplaced.length) say(unplaced.join(" "), "error");
      return;
    }
    if (response.status === 422 && problem.code === "idempotency_key_reused") {
      keyedBody = null; // next submission gets a fresh key
      say("Não foi possível enviar. Envie de novo.", "error");
      return;
    }
    if (response.status === 409 && problem.field) {
      const conflict = rules.conflicts[problem.field];
      if (setError(problem.field, conflict?.message || problem.detail)) {
        reportInvalid([problem.field]);
        return;
      }
    }
    if (response.status === 429 || response.status === 503) {
      const seconds = retryAfterSeconds(response.headers.get("Retry-After")) ?? 10;
      const reason =
        response.status === 429
          ? "Muitas tentativas em pouco tempo."
          : "O serviço está temporariamente indisponível; nada foi gravado.";
      waitBeforeRetry(seconds, `${reason} Tente de novo em ${describeWait(seconds)}.`);
      return;
    }
    say(
      `Não foi possível concluir o cadastro (erro ${response.status}). ` +
        (problem.detail ? `${problem.detail} ` : "") +
        "Tente de novo em instantes.",
      "error",
    );
  }

  // ---------------------------------------------------------------- status after 202

  function showStatus(status) {
    const label = document.getElementById("result-status");
    label.textContent = STATUS_LABELS[status] ?? status;
    label.dataset.status = status;
    document.getElementById("result-detail").textContent = STATUS_DETAILS[status] ?? "";
    // Completed: a message with the code is on its way ("check your email").
    verifyForm.hidden = status !== "completed";
  }

  function showResult(registrationId) {
    form.hidden = true;
    result.hidden = false;
    currentRegistration = registrationId;
    document.getElementById("result-id").textContent = registrationId;
  }

  function accepted(registrationId, location) {
    showResult(registrationId);
    showStatus("pending");
    say("");
    document.getElementById("result-title").focus();
    poll(location, ++pollGeneration);
  }

  // ---------------------------------------------------------------- email verification

  const verifyForm = document.getElementById("verify-form");
  const verifyStatus = document.getElementById("verify-status");
  const codeInput = document.getElementById("f-code");
  let currentRegistration = null;

  function sayVerify(message, tone = "info") {
    verifyStatus.textContent = message;
    verifyStatus.dataset.tone = tone;
  }

  async function answered(response) {
    const body = await readProblem(response);
    const seconds = retryAfterSeconds(response.headers.get("Retry-After")) ?? 60;
    if (response.status === 200) {
      showStatus(body.status);
      sayVerify("");
      return;
    }
    if (response.status === 404) {
      sayVerify("Cadastro não encontrado. Confira o link ou faça o cadastro de novo.", "error");
      return;
    }
    if (body.code === "verification_code_invalid") {
      const left = body.attempts_left;
      codeInput.setAttribute("aria-invalid", "true");
      document.getElementById("e-code").textContent =
        left > 0
          ? `Código incorreto. ${left === 1 ? "Resta 1 tentativa" : `Restam ${left} tentativas`}.`
          : "Código incorreto. Peça um novo código.";
      codeInput.focus();
      return;
    }
    if (body.code === "registration_expired" || body.registration_expired) {
      showStatus("expired");
      sayVerify("");
      return;
    }
    if (body.code === "verification_code_expired") {
      sayVerify("Este código expirou. Peça um novo código.", "error");
      return;
    }
    if (body.code === "verification_attempts_exceeded") {
      sayVerify("Muitas tentativas com o código errado. Peça um novo código.", "error");
      return;
    }
    if (body.code === "verification_resend_limited") {
      sayVerify(`Aguarde ${describeWait(seconds)} para pedir outro código.`, "error");
      return;
    }
    if (body.code === "registration_already_verified") {
      showStatus("verified");
      return;
    }
    if (response.status === 429 || response.status === 503) {
      sayVerify(`Tente de novo em ${describeWait(seconds)}.`, "error");
      return;
    }
    sayVerify(`Não foi possível confirmar (erro ${response.status}). Tente de novo.`, "error");
  }

  async function sendCode(registrationId, code) {
    sayVerify("Confirmando…");
    codeInput.removeAttribute("aria-invalid");
    document.getElementById("e-code").textContent = "";
    try {
      const response = await fetch(`/registrations/${registrationId}/verification`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ code }),
      });
      await answered(response);
    } catch {
      sayVerify("Não foi possível falar com o servidor. Tente de novo.", "error");
    }
  }

  async function resendCode() {
    if (!currentRegistration) return;
    sayVerify("Pedindo um novo código…");
    try {
      const response = await fetch(`/registrations/${currentRegistration}/verification/resend`, {
        method: "POST",
        headers: { Accept: "application/json" },
      });
      if (response.status === 202) {
        sayVerify("Enviamos um novo código. O anterior deixou de valer.");
        codeInput.value = "";
        codeInput.focus();
        return;
      }
      await answered(response);
    } catch {
      sayVerify("Não foi possível falar com o servidor. Tente de novo.", "error");
    }
  }

  verifyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const code = codeInput.value.trim();
    if (!code) {
      codeInput.setAttribute("aria-invalid", "true");
      document.getElementById("e-code").textContent = "Digite o código recebido por e-mail.";
      codeInput.focus();
      return;
    }
    if (currentRegistration) sendCode(currentRegistration, code);
  });
  document.getElementById("resend").addEventListener("click", resendCode);

  // The message's link: #verificar=ID.TOKEN, read here and taken out of the address bar (the
  // fragment never reaches a server; nor will it stay in this tab's history).
  function followLink() {
    const found = /^#verificar=([0-9a-fA-F-]{36})\.([A-Za-z0-9_-]{43})$/.exec(location.hash);
    if (!found) return false;
    history.replaceState(null, "", location.pathname + location.search);
    const [, registrationId, token] = found;
    showResult(registrationId);
    showStatus("completed");
    verifyForm.hidden = true;
    document.getElementById("result-title").textContent = "Confirmação de e-mail";
    document.getElementById("result-title").focus();
    sendCode(registrationId, token).then(() => {
      // A link that did not work leaves the code form, to type the code or ask for another.
      const status = document.getElementById("result-status").dataset.status;
      if (status === "completed") verifyForm.hidden = false;
    });
    return true;
  }

  async function poll(location, generation) {
    const started = Date.now();
    let delay = 300;
    while (generation === pollGeneration && Date.now() - started < POLL_LIMIT_MS) {
      await sleep(delay);
      delay = Math.min(delay * 1.5, 5000);
      if (generation !== pollGeneration) return;
      try {
        const response = await fetch(location, { headers: { Accept: "application/json" } });
        if (!response.ok) continue; // 404: the status read model has not caught up yet
        const { status } = await response.json();
        showStatus(status);
        if (status !== "pending") return;
      } catch {
        // Offline for a moment: keep polling.
      }
    }
    if (generation === pollGeneration) {
      document.getElementById("result-detail").textContent =
        "Ainda estamos processando. Guarde o protocolo e volte mais tarde.";
    }
  }

  function startOver() {
    pollGeneration += 1; // stops the poll loop
    currentRegistration = null;
    sayVerify("");
    codeInput.value = "";
    document.getElementById("result-title").textContent = "Cadastro recebido";
    form.reset();
    for (const path of Object.keys(VALIDATORS)) clearError(path);
    keyedBody = null;
    showPersonType();
    say("");
    result.hidden = true;
    form.hidden = false;
    focusField("person_type");
  }

  // ---------------------------------------------------------------- wiring

  const pathOf = (element) => element.name || null;

  form.addEventListener("input", (event) => {
    const element = event.target;
    if (element.dataset.mask) applyMask(element);
    const path = pathOf(element);
    // Once a field shows an error, re-check as the person types so it clears when fixed.
    if (path in VALIDATORS && hasError(path)) validate(path);
    if (path === "email" && value("email_confirmation") && hasError("email_confirmation")) {
      validate("email_confirmation");
    }
  });

  // Checked when leaving a filled-in field; empty required fields are reported on submit.
  form.addEventListener("focusout", (event) => {
    const path = pathOf(event.target);
    // Radios and the checkbox are checked on change instead.
    if (!(path in VALIDATORS) || ["radio", "checkbox"].includes(event.target.type)) return;
    if (event.target.value.trim() || hasError(path)) validate(path);
  });

  form.addEventListener("change", (event) => {
    const path = pathOf(event.target);
    if (path === "person_type") {
      showPersonType();
      clearError("person_type");
    } else if (event.target.type === "checkbox" || event.target.tagName === "SELECT") {
      validate(path);
    }
  });

  form.addEventListener("submit", submit);
  document.getElementById("again").addEventListener("click", startOver);
  showPersonType();
  followLink();
  // The link opened in a tab already on this page only changes the fragment.
  window.addEventListener("hashchange", followLink);
})();
