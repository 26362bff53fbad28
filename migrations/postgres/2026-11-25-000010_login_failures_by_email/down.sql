DROP INDEX login_failures_email;
ALTER TABLE login_failures DROP COLUMN email_key;
