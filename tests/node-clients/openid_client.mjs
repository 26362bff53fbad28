// An OpenID Connect sign-in by openid-client (pinned in package-lock.json) against a running
// Healthfolio, for tests/it/client_libs.rs.
//
// Usage: node openid_client.mjs BASE_URL CLIENT_ID REDIRECT_URI SCOPE
//
// Discovers the server through /.well-known/openid-configuration, prints the authorization URL
// (code flow, PKCE S256, state and nonce) and waits on stdin for the redirect the signed-in
// patient's browser was sent to. The library then redeems the code and validates the ID token
// (signature against the JWKS, iss, aud, nonce), reads userinfo, refreshes, and revokes the new
// refresh token; the script prints one JSON line of what it saw. Every request the library sent
// is listed too, observed through its customFetch hook, which passes each one on unchanged.
import * as client from "openid-client";
import { createInterface } from "node:readline";

const [base, clientId, redirectUri, scope] = process.argv.slice(2);
const sent = [];
const observe = {
  // The test server is plain http on 127.0.0.1; the ID token's signature is checked as well
  // (the library skips that by default for tokens from the token endpoint, OIDC Core §3.1.3.7).
  execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  [client.customFetch]: (url, options) => {
    sent.push({ method: options.method, url: String(url), body: options.body ? String(options.body) : null });
    return fetch(url, options);
  },
};

const config = await client.discovery(new URL(base), clientId, undefined, client.None(), observe);
const verifier = client.randomPKCECodeVerifier();
const [state, nonce] = [client.randomState(), client.randomNonce()];
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope,
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: "S256",
  state,
  nonce,
  aud: `${config.serverMetadata().issuer}/fhir`,
});
console.log(url.href);

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const callback = (await lines.next()).value.trim();
const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
await client.tokenRevocation(config, refreshed.refresh_token);
let afterRevocation = null;
try {
  await client.refreshTokenGrant(config, refreshed.refresh_token);
} catch (e) {
  afterRevocation = e.error ?? e.code ?? String(e);
}

console.log(
  JSON.stringify({
    issuer: config.serverMetadata().issuer,
    claims,
    id_token_header: JSON.parse(Buffer.from(tokens.id_token.split(".")[0], "base64url")),
    patient: tokens.patient ?? null,
    userinfo,
    first_access: tokens.access_token,
    access_changed: refreshed.access_token !== tokens.access_token,
    refresh_rotated: refreshed.refresh_token !== tokens.refresh_token,
    revoked_refresh: refreshed.refresh_token,
    after_revocation: afterRevocation,
    sent,
  }),
);
process.exit(0);
