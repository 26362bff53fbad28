"""SMART Backend Services by Authlib against a running Healthfolio, for tests/it/oauth_authlib.rs:
the client credentials grant with a private_key_jwt assertion, as Authlib's PrivateKeyJWT signs it
by default and with the settings the README names.

Usage: backend_services.py TOKEN_ENDPOINT CLIENT_ID KID PKCS8_BASE64 SCOPE
(the key is EC P-384, so every attempt signs ES384: Authlib's default, RS256, is not accepted).
Prints one JSON line: per attempt, the granted scope or the error.
"""

import base64
import json
import os
import sys
import time

# The test server is plain http on 127.0.0.1.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # noqa: E402
from joserfc.jwk import ECKey  # noqa: E402


def main():
    token_endpoint, client_id, kid, pkcs8, scope = sys.argv[1:6]
    key = ECKey.import_key(base64.b64decode(pkcs8))

    def attempt(auth):
        session = OAuth2Session(client_id, key, scope=scope, token_endpoint_auth_method=auth)
        try:
            return {"scope": session.fetch_token(token_endpoint, grant_type="client_credentials").get("scope")}
        except Exception as e:  # Authlib raises OAuthError with the server's error and description
            return {"error": getattr(e, "error", str(e)), "description": getattr(e, "description", None)}

    # Authlib's assertion lives an hour and has no kid unless told otherwise.
    seen = {
        "defaults": attempt(PrivateKeyJWT(token_endpoint, alg="ES384")),
        "with_kid": attempt(PrivateKeyJWT(token_endpoint, alg="ES384", headers={"kid": kid})),
        "with_kid_and_exp": attempt(
            PrivateKeyJWT(token_endpoint, alg="ES384", headers={"kid": kid}, claims={"exp": int(time.time()) + 300})
        ),
    }
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
