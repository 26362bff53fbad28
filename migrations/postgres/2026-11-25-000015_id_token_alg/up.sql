-- OpenID Connect Registration 1.0 §2 id_token_signed_response_alg: NULL is RS256, the default.
ALTER TABLE clients ADD COLUMN id_token_alg TEXT;
