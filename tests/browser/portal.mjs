// The patient portal in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core),
// run by tests/it/browser.rs with a fresh server, a seeded record and a provider's access token in
// the environment. It signs in, reads, adds a medicine, shares with the provider and stops, checking
// the provider's side through the FHIR API; on every page it runs axe-core (desktop and 320 px),
// checks for horizontal scrolling at 320 px and for console errors (CSP refusals included), and
// saves full-page screenshots. Exits non-zero with a clear message on any failure.

import { chromium } from 'playwright-core';
import { createRequire } from 'node:module';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const started = Date.now();
const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') fail(`environment variable ${name} is not set (run me through \`cargo test --test it browser\`)`);
  return v;
};
function fail(message) {
  console.error(`\nBROWSER TEST FAILED: ${message}`);
  process.exit(1);
}

const base = env('HF_BASE_URL');
const email = env('HF_EMAIL');
const password = env('HF_PASSWORD');
const patientId = env('HF_PATIENT_ID');
const patientName = env('HF_PATIENT_NAME');
const medicines = env('HF_MEDICINES').split('|');
const allergy = env('HF_ALLERGY');
const added = env('HF_ADD_MEDICINE');
const providerToken = env('HF_PROVIDER_TOKEN');
const providerOrg = env('HF_PROVIDER_ORG');
const providerName = env('HF_PROVIDER_NAME');
const shots = env('HF_SCREENSHOT_DIR');
const chromiumPath = env('HF_CHROMIUM', '/usr/bin/chromium');
const consentUrl = process.env.HF_CONSENT_URL;
const inviteUrl = process.env.HF_INVITE_URL;
const resetUrl = process.env.HF_RESET_URL;
const signupUrl = process.env.HF_SIGNUP_URL;

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(shots, { recursive: true });

// A hung browser must not hang `cargo test`.
const watchdog = setTimeout(() => fail('still running after 180 s'), 180_000);
watchdog.unref();

const DESKTOP = { width: 1024, height: 768 };
const NARROW = { width: 320, height: 640 };
// A 1280 px window at 200 % zoom lays pages out in 640 CSS px (WCAG 1.4.4 Resize text).
const ZOOMED = { width: 640, height: 400 };
const problems = []; // accessibility and layout findings, reported together at the end
const consoleErrors = [];
let shotNumber = 0;
let axeAnnounced = false;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function axe(page, label) {
  // Evaluated through the DevTools protocol: the pages' CSP (no inline script) stays in force, so
  // a CSP refusal of anything the page itself loads still shows up as a console error.
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(axeSource);
  const { version, passed, incomplete, violations: result } = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ['violations', 'incomplete'] }).then((r) => ({
      version: window.axe.version,
      passed: r.passes.length,
      incomplete: r.incomplete.map((v) => `${v.id} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`),
      violations: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        helpUrl: v.helpUrl,
        nodes: v.nodes.map((n) => ({ target: n.target.join(' '), summary: n.failureSummary })),
      })),
    })),
  );
  if (!axeAnnounced) {
    axeAnnounced = true;
    console.log(`  (axe-core ${version}: ${passed} rules pass on the first page)`);
  }
  // "Needs review" is not a failure; it is listed so that a person can look.
  if (incomplete.length) console.log(`    axe needs review on ${label}: ${incomplete.join(', ')}`);
  for (const v of result) {
    problems.push(
      `axe ${v.id} (${v.impact}) on ${label}: ${v.help} <${v.helpUrl}>\n` +
        v.nodes.map((n) => `      at ${n.target}\n        ${(n.summary || '').replace(/\n/g, '\n        ')}`).join('\n'),
    );
  }
  return result.length;
}

async function screenshot(page, name) {
  shotNumber += 1;
  const file = join(shots, `${String(shotNumber).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

// One page, as it is now: axe and a screenshot at desktop width, then the same at 320 px with a
// check that nothing needs horizontal scrolling (WCAG 1.4.10 Reflow).
async function audit(page, name) {
  const label = `${name} (${new URL(page.url()).pathname})`;
  let found = await axe(page, `${label} at ${DESKTOP.width}px`);
  await screenshot(page, name);
  await page.setViewportSize(NARROW);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (overflow > 0) {
    const wide = await page.evaluate(() =>
      [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
        .filter((e) => !e.closest('.timeline-figure'))
        .slice(0, 5)
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className && typeof e.className === 'string' ? '.' + e.className.trim().replace(/\s+/g, '.') : ''}`),
    );
    problems.push(`layout on ${label} at 320px: the page scrolls sideways by ${overflow}px (widest: ${wide.join(', ')})`);
  }
  found += await axe(page, `${label} at 320px`);
  await screenshot(page, `${name}-320`);
  await page.setViewportSize(ZOOMED);
  const zoomedOverflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  if (zoomedOverflow > 0) problems.push(`layout on ${label} at 200% zoom (640px): the page scrolls sideways by ${zoomedOverflow}px`);
  await page.setViewportSize(DESKTOP);
  console.log(`  ${found ? '✗' : '✓'} ${name}: ${found ? found + ' axe violation(s)' : 'no axe violations'}${overflow > 0 ? ', scrolls sideways at 320px' : ''}`);
}

async function goto(page, path, expectStatus = 200) {
  const response = await page.goto(path.startsWith('http') ? path : base + path);
  check(response, `no response for ${path}`);
  check(response.status() === expectStatus, `GET ${path}: status ${response.status()}, expected ${expectStatus}`);
  return response;
}

async function mainText(page) {
  return page.locator('main').innerText();
}

async function fhir(path) {
  const r = await fetch(`${base}/fhir/${path}`, {
    headers: { Authorization: `Bearer ${providerToken}`, Accept: 'application/fhir+json' },
  });
  const text = await r.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body, text };
}

const entries = (bundle) => (bundle?.entry ?? []).filter((e) => e.search?.mode !== 'include').map((e) => e.resource);

function step(title) {
  console.log(`- ${title}`);
}

const browser = await chromium.launch({ executablePath: chromiumPath });
let page;
try {
  const context = await browser.newContext({ viewport: DESKTOP, locale: 'en-GB', timezoneId: 'Europe/London' });
  context.setDefaultTimeout(15_000);
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location().url;
    if (m.text().startsWith('Failed to load resource')) {
      // An error page's own status (400, 401, 404) is logged too: that one is expected. So is the
      // browser's own guess at /favicon.ico, which the service does not serve, and the status of
      // a refused upload, which the record-file page's script shows as a page.
      const path = new URL(where).pathname;
      if (where === page.url() || path === '/favicon.ico' || path === '/portal/record/import') return;
    }
    consoleErrors.push(`${new URL(page.url()).pathname}: ${m.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${new URL(page.url()).pathname}: ${e.message}`));

  step('an anonymous visit goes to the sign-in page');
  await goto(page, '/portal');
  check(new URL(page.url()).pathname === '/portal/login', `expected the sign-in page, got ${page.url()}`);
  await audit(page, 'login');

  step('the first Tab reaches a visible skip link, which moves focus to the main content');
  await page.keyboard.press('Tab');
  const skip = await page.evaluate(() => {
    const a = document.activeElement;
    const r = a.getBoundingClientRect();
    const s = getComputedStyle(a);
    return { text: a.textContent.trim(), visible: r.left >= 0 && r.top >= 0 && r.width > 0, outline: s.outlineStyle, bg: s.backgroundColor };
  });
  check(skip.text === 'Skip to main content', `first Tab stop is "${skip.text}", not the skip link`);
  check(skip.visible, 'the skip link is not visible when focused');
  await page.keyboard.press('Enter');
  check(await page.evaluate(() => document.activeElement?.id === 'main'), 'the skip link did not move focus to <main>');

  step('wrong password: the error is announced and the form keeps the email');
  await page.getByLabel('Email address').fill(email);
  await page.getByLabel('Password').fill('not my password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').waitFor();
  check((await page.getByLabel('Email address').inputValue()) === email, 'the email was not kept');
  await audit(page, 'login-error');

  step('sign in');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/portal`);

  step('home shows the patient, the current medicine and the allergy');
  let text = await mainText(page);
  check(text.includes(patientName), `home does not name ${patientName}`);
  check(text.includes(medicines[0]), `home does not show ${medicines[0]}:\n${text}`);
  check(text.includes(allergy), `home does not show the allergy ${allergy}`);
  await audit(page, 'home');

  step('focus is visible on a link (outline)');
  await page.locator('main a').first().focus();
  const outline = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return { style: s.outlineStyle, width: parseFloat(s.outlineWidth) };
  });
  check(outline.style !== 'none' && outline.width >= 2, `a focused link has no visible outline (${JSON.stringify(outline)})`);

  step('medicines lists every seeded medicine');
  await page.getByRole('navigation', { name: 'Your record' }).getByRole('link', { name: 'Medicines' }).click();
  await page.waitForURL(`${base}/portal/medicines`);
  text = await mainText(page);
  for (const m of medicines) check(text.includes(m), `medicines page does not show ${m}:\n${text}`);
  check(text.includes('Dr Helen Carter'), 'the prescriber is not named');
  await audit(page, 'medicines');

  step('a medicine in detail');
  await page.getByRole('link', { name: medicines[0] }).click();
  await page.getByRole('heading', { level: 1, name: medicines[0] }).waitFor();
  await audit(page, 'medicine-detail');

  step('timeline, allergies and problems, print view');
  await goto(page, '/portal/timeline');
  await audit(page, 'timeline');
  // One drawing shows at each width, and its text is drawn at 12 px or more (it scales with the page).
  for (const [size, shown] of [[DESKTOP, 'wide'], [NARROW, 'narrow']]) {
    await page.setViewportSize(size);
    const drawn = await page.evaluate(() => [...document.querySelectorAll('svg.timeline')]
      .filter((s) => s.getBoundingClientRect().width > 0)
      .map((s) => ({ kind: s.classList.contains('wide') ? 'wide' : 'narrow',
        px: Number(s.getAttribute('font-size')) * s.getBoundingClientRect().width / s.viewBox.baseVal.width })));
    check(drawn.length === 1 && drawn[0].kind === shown, `at ${size.width}px the timeline shows ${JSON.stringify(drawn)}, not the ${shown} drawing`);
    check(drawn[0].px >= 12, `the timeline's text is ${drawn[0].px.toFixed(1)} px at ${size.width}px`);
    await screenshot(page, `timeline-${shown}`);
  }
  await page.setViewportSize(DESKTOP);
  for (const name of medicines) {
    check((await page.locator('svg.timeline.wide').textContent()).includes(name), `the timeline does not name ${name} in full`);
  }
  await page.getByRole('link', { name: 'Allergies and problems' }).click();
  await page.waitForURL(`${base}/portal/allergies`);
  check((await mainText(page)).includes(allergy), 'the allergies page does not show the allergy');
  await audit(page, 'allergies');
  await goto(page, '/portal/print');
  check((await mainText(page)).includes(medicines[0]), 'the print view does not list the current medicine');
  await audit(page, 'print');
  await page.emulateMedia({ media: 'print' });
  await screenshot(page, 'print-as-printed');
  await page.emulateMedia({ media: 'screen' });

  step(`add "${added}" through the form`);
  await goto(page, '/portal/medicines');
  await page.getByRole('link', { name: 'Add a medicine you take' }).click();
  await page.waitForURL(`${base}/portal/medicines/add`);
  await audit(page, 'add-medicine');

  step('a date that does not exist: the error stands against the date boxes, the summary links to them');
  const startDate = () => page.getByRole('group', { name: 'When did you start taking it?' });
  const fillDate = async (day, month, year) => {
    await startDate().getByLabel('Day').fill(day);
    await startDate().getByLabel('Month').fill(month);
    await startDate().getByLabel('Year').fill(year);
  };
  await page.getByLabel('Medicine', { exact: true }).selectOption({ label: added });
  await page.getByLabel('How you take it').fill('1 tablet when my back hurts');
  await fillDate('31', '2', '2025');
  await page.getByRole('button', { name: 'Add medicine' }).click();
  await page.getByRole('alert').waitFor();
  const dateError = 'The date you started taking it must be a real date';
  check((await page.getByRole('alert').innerText()).includes(dateError), 'no error summary for 31 February');
  check((await startDate().innerText()).includes(dateError), 'the date error is not shown against its fieldset');
  check((await startDate().getByLabel('Day').inputValue()) === '31', 'the typed day was not kept');
  await page.getByRole('alert').getByRole('link', { name: dateError }).click();
  check(await startDate().getByLabel('Day').evaluate((e) => e === document.activeElement || location.hash === '#start-day'),
    'the summary link does not lead to the day box');
  await audit(page, 'add-medicine-date-error');

  step(`adding "${medicines[0]}" again: a warning before anything is saved, then back to the form`);
  await page.getByLabel('Medicine', { exact: true }).selectOption({ label: medicines[0] });
  await page.getByLabel('How you take it').fill('1 tablet at night');
  await fillDate('1', '10', '2025');
  await page.getByRole('button', { name: 'Add medicine' }).click();
  await page.getByRole('alert').waitFor();
  check((await page.getByRole('alert').innerText()).includes('already on your list'), 'no warning about a medicine already taken');
  await audit(page, 'add-medicine-check');
  await page.getByRole('button', { name: 'Go back and change it' }).click();
  await page.getByLabel('Medicine', { exact: true }).waitFor();
  await page.getByLabel('Medicine', { exact: true }).selectOption({ label: added });
  await page.getByLabel('How you take it').fill('1 tablet when my back hurts');
  await fillDate('1', '10', '2025');
  await page.getByRole('button', { name: 'Add medicine' }).click();
  await page.waitForURL(`${base}/portal/medicines`);
  const row = page.getByRole('row').filter({ hasText: added });
  check((await row.count()) === 1, `"${added}" is not listed after adding it`);
  check((await row.innerText()).includes('You said you take it'), `"${added}" does not say you take it`);
  await audit(page, 'medicines-after-add');

  step('before sharing, the provider cannot see the record');
  let api = await fhir(`MedicationStatement?patient=${patientId}`);
  check(api.status !== 200 || entries(api.body).length === 0, `the provider saw the record before any sharing: ${api.status} ${api.text}`);

  step('sharing: nothing chosen is an error on the form');
  await page.getByRole('link', { name: 'Sharing' }).click();
  await page.waitForURL(`${base}/portal/sharing`);
  check((await mainText(page)).includes('not sharing your record'), 'the sharing page should say nothing is shared');
  await audit(page, 'sharing');
  const perms = page.getByRole('group', { name: 'They may' }).getByRole('checkbox');
  for (const box of await perms.all()) await box.uncheck();
  await page.getByRole('button', { name: 'Share', exact: true }).click();
  await page.getByRole('alert').waitFor();
  check((await page.getByRole('alert').innerText()).includes('Choose at least one'), 'no "choose at least one" error');
  await audit(page, 'sharing-error');

  step(`share medicines with ${providerName}`);
  await page.getByLabel('Provider').selectOption({ label: providerName });
  await page.getByLabel('See your medicines').check();
  await page.getByRole('button', { name: 'Share', exact: true }).click();
  await page.getByRole('status').filter({ hasText: 'Shared' }).waitFor();
  check((await mainText(page)).includes('See your medicines'), 'the grant does not list what was shared');
  await audit(page, 'sharing-granted');

  step('the provider now reads the record: the patient-reported medicine, the prescriptions');
  api = await fhir(`MedicationStatement?patient=${patientId}`);
  check(api.status === 200, `provider search after sharing: ${api.status} ${api.text}`);
  const statements = entries(api.body);
  const mine = statements.find((s) => JSON.stringify(s.medicationCodeableConcept ?? {}).includes(added));
  check(mine, `the provider does not see "${added}": ${api.text}`);
  check(mine.informationSource?.reference === `Patient/${patientId}`, `"${added}" is not marked as reported by the patient: ${JSON.stringify(mine)}`);
  api = await fhir(`MedicationRequest?patient=${patientId}`);
  check(api.status === 200 && entries(api.body).length === 2, `provider prescriptions after sharing: ${api.status} ${api.text}`);
  api = await fhir(`MedicationStatement/${mine.id}`);
  check(api.status === 200, `provider read after sharing: ${api.status} ${api.text}`);
  api = await fhir(`Patient/${patientId}`);
  check(api.status === 403 || api.status === 404, `the provider read the patient's details, which were not shared: ${api.status}`);

  step('stop sharing: the provider\'s very next call is refused');
  await page.getByRole('button', { name: `Stop sharing with ${providerName}` }).click();
  await page.getByRole('status').filter({ hasText: 'Access ended' }).waitFor();
  api = await fhir(`MedicationStatement/${mine.id}`);
  check(api.status === 403 || api.status === 404, `the provider still reads after sharing stopped: ${api.status} ${api.text}`);
  api = await fhir(`MedicationRequest?patient=${patientId}`);
  check(api.status !== 200 || entries(api.body).length === 0, `the provider still searches after sharing stopped: ${api.text}`);
  await audit(page, 'sharing-stopped');

  step('the access log says, in words, who did what: the provider\'s reads, allowed and refused, the sharing');
  await page.getByRole('link', { name: 'Access log' }).click();
  await page.waitForURL(`${base}/portal/access-log`);
  const rows = async () => (await page.getByRole('row').allInnerTexts()).map((r) => r.replace(/\s+/g, ' '));
  let log = await rows();
  const has = (who, what) => log.some((r) => r.includes(who) && r.includes(what));
  // The provider's searches and its read, close together: one line.
  check(has(providerName, 'Read your medicines, 4 times'), `the provider's reads are not one line:\n${log.join('\n')}`);
  check(has(providerName, `Tried to read your note that you take ${added}`), `the refused read does not name "${added}":\n${log.join('\n')}`);
  check(has(providerName, 'Tried to read your personal details'), `the refused read is not there:\n${log.join('\n')}`);
  check(has('You', `Added a note that you take ${added}`), `the patient's own entry is not theirs:\n${log.join('\n')}`);
  for (const want of ['Allowed', 'Refused', 'Shared your record with', 'Stopped sharing your record with', 'Signed in']) {
    check(log.some((r) => r.includes(want)), `the access log does not show "${want}":\n${log.join('\n')}`);
  }
  for (const raw of ['Provenance', 'MedicationStatement/', 'service operator added', 'UTC']) {
    check(!log.some((r) => r.includes(raw)), `the access log shows "${raw}":\n${log.join('\n')}`);
  }
  check(!log.some((r) => /\bYou\b.*\b(Read|Searched) your/.test(r)), `the patient's own views show by default:\n${log.join('\n')}`);
  await page.getByLabel('Show what you looked at in the portal').check();
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL(/own=yes/);
  log = await rows();
  check(log.some((r) => /\bYou\b.*(Read|Searched) your medicines/.test(r)), `the filter does not show the patient's own views:\n${log.join('\n')}`);
  await audit(page, 'access-log-own-views');
  await page.getByLabel('Show what you looked at in the portal').uncheck();
  await page.getByRole('button', { name: 'Show' }).click();
  await page.waitForURL((u) => !u.search.includes('own=yes'));
  await audit(page, 'access-log');
  for (const [legend, day, month] of [['From', '1', '1'], ['To', '31', '12']]) {
    const boxes = page.getByRole('group', { name: legend, exact: true });
    await boxes.getByLabel('Day').fill(day);
    await boxes.getByLabel('Month').fill(month);
    await boxes.getByLabel('Year').fill('2001');
  }
  await page.getByRole('button', { name: 'Show' }).click();
  await page.getByText('Nothing is recorded for this period').waitFor();

  step('account, bringing a record, record file, an app\'s consent page, a missing page');
  await page.getByRole('link', { name: 'Account' }).click();
  await page.waitForURL(`${base}/portal/account`);
  check((await mainText(page)).includes(email), 'the account page does not show the email');
  await audit(page, 'account');
  await goto(page, '/portal/transfer');
  await audit(page, 'transfer');
  await goto(page, '/portal/record');
  await audit(page, 'record-file');
  step('record file: download it, then upload it back (the page shows the upload as it goes)');
  const download = await page.request.get(`${base}/portal/record/download`);
  check(download.ok(), `download: ${download.status()}`);
  await page.setInputFiles('#archive', { name: 'my-record.tar', mimeType: 'application/x-tar', buffer: await download.body() });
  await page.getByRole('button', { name: 'Import' }).click();
  await page.getByText('already here').first().waitFor();
  check(new URL(page.url()).pathname === '/portal/record', `the upload went through the page's script, not a plain post: ${page.url()}`);
  await audit(page, 'record-file-after-upload');
  if (consentUrl) {
    await goto(page, consentUrl);
    await page.getByRole('heading', { level: 1, name: /Share your record with/ }).waitFor();
    await audit(page, 'consent');
  }
  await goto(page, '/portal/medicines/prescription/no-such-id', 404);
  await audit(page, 'not-found');

  step('sign out');
  await goto(page, '/portal');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL(`${base}/portal/login`);
  await goto(page, '/portal');
  check(new URL(page.url()).pathname === '/portal/login', 'still signed in after signing out');

  if (inviteUrl) {
    step('an invitation to set up a login');
    await goto(page, inviteUrl);
    await audit(page, 'invite');
  }
  if (resetUrl) {
    step('a password reset link');
    await goto(page, resetUrl);
    await audit(page, 'reset-password');
  }
  if (signupUrl) {
    step('self sign-up, where an instance offers it');
    await goto(page, signupUrl);
    await audit(page, 'sign-up');
  }
} catch (e) {
  if (page) {
    try {
      await screenshot(page, 'failure');
      console.error(`(at ${page.url()}; screenshot saved as ${String(shotNumber).padStart(2, '0')}-failure.png)`);
    } catch {
      /* the page may be gone */
    }
  }
  await browser.close();
  const before = problems.length ? `\n(and, before that, ${problems.length} accessibility or layout problem(s):\n  ${problems.join('\n  ')})` : '';
  fail(`${e.stack || String(e)}${before}`);
}
await browser.close();

const seconds = ((Date.now() - started) / 1000).toFixed(1);
if (consoleErrors.length) problems.push(...consoleErrors.map((e) => `console error (CSP refusal or script error) on ${e}`));
if (problems.length) {
  fail(`${problems.length} accessibility or layout problem(s):\n  ${problems.join('\n  ')}\n(screenshots in ${shots})`);
}
console.log(`browser test passed in ${seconds} s: ${shotNumber} screenshots in ${shots}`);
