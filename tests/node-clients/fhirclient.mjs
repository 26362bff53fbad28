// A SMART standalone launch by SMART's own JS client, fhirclient (pinned in package-lock.json),
// used as a server-side Node app against a running Healthfolio, for tests/it/smart_fhirclient.rs.
//
// Usage: node fhirclient.mjs FHIR_BASE SCOPE
//
// Serves the app on 127.0.0.1 and prints its origin (the client is registered with
// ORIGIN/callback). A browser opens ORIGIN/launch?clientId=ID: the library reads the SMART configuration and
// redirects to the authorization endpoint with PKCE S256. The browser comes back to
// ORIGIN/callback, where the library redeems the code; the app then reads the patient and
// searches their prescriptions, waits until the access token has expired, and searches again,
// which the library precedes with a refresh. The callback's response is one JSON object of what
// the app saw; the script exits once it is sent.
import http from "node:http";
import smart from "fhirclient";

const [iss, scope] = process.argv.slice(2);
// One user: the session an Express app would keep per browser.
const session = {};
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

async function callback(req, res) {
  const client = await smart(req, res).ready();
  const first = client.getState("tokenResponse");
  const patient = await client.patient.read();
  const search = () => client.request(`MedicationRequest?patient=${client.patient.id}`);
  const before = await search();
  // Until the token is past its `exp` for the server too (the library refreshes 10 s early).
  await sleep(client.state.expiresAt * 1000 - Date.now() + 1500);
  const after = await search();
  const second = client.getState("tokenResponse");
  return {
    patient: client.patient.id,
    patient_read: `${patient.resourceType}/${patient.id}`,
    scope: first.scope,
    first_ids: (before.entry ?? []).map((e) => e.resource.id),
    second_ids: (after.entry ?? []).map((e) => e.resource.id),
    first_access: first.access_token,
    first_refresh: first.refresh_token,
    access_changed: second.access_token !== first.access_token,
    refresh_rotated: second.refresh_token !== first.refresh_token,
  };
}

const server = http.createServer(async (req, res) => {
  req.session = session;
  const path = new URL(req.url, "http://app").pathname;
  try {
    if (path === "/launch") {
      // The library takes the client id from the launch URL's `clientId`.
      await smart(req, res).authorize({ iss, scope, redirectUri: "/callback", pkceMode: "required" });
    } else if (path === "/callback") {
      const seen = await callback(req, res);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(seen), () => process.exit(0));
    } else {
      res.writeHead(404).end();
    }
  } catch (e) {
    console.error(e);
    res.writeHead(500, { "content-type": "text/plain" }).end(String(e.stack ?? e), () => process.exit(1));
  }
});
server.listen(0, "127.0.0.1", () => console.log(`http://127.0.0.1:${server.address().port}`));
