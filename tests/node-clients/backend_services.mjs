// SMART Backend Services by openid-client (pinned in package-lock.json) against a running
// Healthfolio, for tests/it/oauth_openid_client.rs: the client credentials grant with a
// private_key_jwt assertion, as the library signs it by default and with the settings the
// README names.
//
// Usage: node backend_services.mjs BASE_URL CLIENT_ID KID PKCS8_BASE64 SCOPE
// (the key is EC P-384, so the library signs ES384). Prints one JSON line: per attempt, the
// granted scope or the error.
import * as client from "openid-client";

const [base, clientId, kid, pkcs8, scope] = process.argv.slice(2);
const key = await crypto.subtle.importKey(
  "pkcs8",
  Buffer.from(pkcs8, "base64"),
  { name: "ECDSA", namedCurve: "P-384" },
  false,
  ["sign"],
);
const insecure = { execute: [client.allowInsecureRequests] };
const server = (await client.discovery(new URL(base), clientId, undefined, client.None(), insecure)).serverMetadata();

async function attempt(auth) {
  const config = new client.Configuration(server, clientId, undefined, auth);
  client.allowInsecureRequests(config);
  try {
    return { scope: (await client.clientCredentialsGrant(config, { scope })).scope };
  } catch (e) {
    // A 401 (with its WWW-Authenticate challenge) comes as the challenge; the body says why.
    const body = e.response instanceof Response ? await e.response.json() : e;
    return { error: body.error ?? e.code ?? String(e), description: body.error_description ?? null };
  }
}

// SMART Backend Services: the assertion's `aud` is the token endpoint; the library's default is
// the issuer, which RFC 7523 also allows.
const toTokenEndpoint = {
  [client.modifyAssertion]: (_header, payload) => {
    payload.aud = server.token_endpoint;
  },
};
console.log(
  JSON.stringify({
    defaults: await attempt(client.PrivateKeyJwt(key)),
    with_kid: await attempt(client.PrivateKeyJwt({ key, kid })),
    with_kid_and_aud: await attempt(client.PrivateKeyJwt({ key, kid }, toTokenEndpoint)),
  }),
);
