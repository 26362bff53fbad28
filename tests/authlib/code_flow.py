"""A SMART standalone launch by Authlib against a running Healthfolio, for tests/it/oauth_authlib.rs.

Usage: code_flow.py BASE_URL CLIENT_ID REDIRECT_URI SCOPE

Reads the endpoints from the RFC 8414 metadata, prints the authorization URL (authorization code
with PKCE S256) and waits on stdin for the redirect the signed-in patient's browser was sent to.
Then exchanges the code, checks the ID token's signature against the JWKS (RS256 only) and its
iss and aud with joserfc, the JOSE library Authlib is built on, reads the FHIR API, refreshes as
SMART's fhirclient does (grant_type and refresh_token only: no client_id), reads again, and
prints one JSON line of what it saw.
"""

import json
import os
import sys

# The test server is plain http on 127.0.0.1.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

import requests  # noqa: E402
from authlib.common.security import generate_token  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import KeySet  # noqa: E402


def checked_id_token(id_token, meta, client_id):
    """The ID token's header and claims once its RS256 signature, iss and aud check out."""
    keys = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": meta["issuer"]},
        aud={"essential": True, "value": client_id},
        exp={"essential": True},
    ).validate(token.claims)
    return {"header": token.header, "claims": token.claims}


def main():
    base, client_id, redirect_uri, scope = sys.argv[1:5]
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server", timeout=10).json()
    smart = requests.get(f"{base}/.well-known/smart-configuration", timeout=10).json()
    fhir = f"{meta['issuer']}/fhir"
    session = OAuth2Session(
        client_id,
        redirect_uri=redirect_uri,
        scope=scope,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(64)
    url, _state = session.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, aud=fhir)
    print(url, flush=True)
    callback = sys.stdin.readline().strip()
    # Authlib checks the state it sent against the one in the redirect.
    token = session.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    id_token = checked_id_token(token["id_token"], meta, client_id) if "id_token" in token else None
    first_read = session.get(f"{fhir}/MedicationRequest", timeout=10)

    sent = []

    def unnamed(_client, _method, uri, headers, body):
        sent.append(body)
        return uri, headers, body

    first_refresh, first_access = token["refresh_token"], token["access_token"]
    refreshed = session.refresh_token(meta["token_endpoint"], auth=session.client_auth(unnamed))
    second_read = session.get(f"{fhir}/MedicationRequest", timeout=10)
    print(
        json.dumps(
            {
                "same_metadata": all(smart.get(k) == v for k, v in meta.items()),
                "patient": token.get("patient"),
                "id_token": id_token,
                "first_read": first_read.status_code,
                "refresh_body": sent[0] if sent else None,
                "refresh_rotated": refreshed.get("refresh_token") not in (None, first_refresh),
                "first_refresh": first_refresh,
                "access_changed": refreshed["access_token"] != first_access,
                "second_read": second_read.status_code,
                "ids": [e["resource"]["id"] for e in second_read.json().get("entry", [])],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
