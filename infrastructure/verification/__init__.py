"""Email verification's storage (challenges, verdicts, the mail outbox), the mailer and the
SMTP sink."""
