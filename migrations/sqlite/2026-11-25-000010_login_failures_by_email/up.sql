-- Failed sign-ins counted per email (a hash of it) as well as per address, whether or not an
-- account has that email: a throttled unknown address then looks like a throttled account.
ALTER TABLE login_failures ADD COLUMN email_key TEXT;
CREATE INDEX login_failures_email ON login_failures (email_key, at);
