DROP TABLE login_failures; DROP TABLE sessions; DROP TABLE assertion_jtis; DROP TABLE revocations;
DROP TABLE refresh_tokens; DROP TABLE auth_codes; DROP TABLE grant_permissions; DROP TABLE grants;
DROP TABLE clients; DROP TABLE accounts;
