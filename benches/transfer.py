#!/usr/bin/env python3
"""Record transfer benchmark: a patient with N resources (default 10,000) at instance A brings the
record to instance B through the portal, as in the product: signed in at B, sent to A to sign in
and approve, then B pulls the record (one $everything page, or for a larger record A's Bulk Data
Patient/$export completed with what it refers to) and imports it in one transaction.

Two release servers on SQLite (B on PostgreSQL when B_DATABASE_URL is set). Prints the time from
the patient's "Allow" at A to B's result page (pull + import), and then a repeat (nothing new).

    benches/transfer.py                         # N=10000
    N=2000 benches/transfer.py
    B_DATABASE_URL=postgres://postgres@127.0.0.1:5432/hf_bench_transfer benches/transfer.py

Needs only Python's standard library; builds with `cargo build --release`.
"""
import html
import http.cookiejar
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "healthfolio")
N = int(os.environ.get("N", "10000"))
PA, PB = 18091, 18092
A, B = f"http://127.0.0.1:{PA}", f"http://127.0.0.1:{PB}"
PASSWORD = "a long enough password"
EMAIL = "ada@example.org"


def env_for(data_dir, port, db=None):
    env = dict(os.environ, HEALTHFOLIO_DATA_DIR=data_dir, HEALTHFOLIO_ADDR=f"127.0.0.1:{port}", HEALTHFOLIO_LOG="warn")
    env.pop("HEALTHFOLIO_DATABASE_URL", None)
    if db:
        env["HEALTHFOLIO_DATABASE_URL"] = db
    return env


def cli(data_dir, port, *args, stdin=None, db=None):
    run = subprocess.run([BIN, *args], env=env_for(data_dir, port, db), input=stdin, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"healthfolio {' '.join(args)}: {run.stderr}")
    return run.stdout


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """Cookies of its own, redirects not followed (as the tests do)."""

    def __init__(self):
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect())

    def request(self, url, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            r = self.opener.open(urllib.request.Request(url, data=data), timeout=120)
            return r.status, r.headers.get("Location"), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Location"), e.read().decode()


def field(body, name):
    m = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), body)
    if not m:
        sys.exit(f"no field {name} in page:\n{body[:2000]}")
    return html.unescape(m.group(1))


def absolute(base, location):
    return location if location.startswith("http") else base + location


def wait_ready(base):
    for _ in range(500):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=1)
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"{base} did not start")


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="hf-bench-transfer-")
    da, db_dir = os.path.join(work, "a"), os.path.join(work, "b")
    gen = os.path.join(work, "gen")
    b_url = os.environ.get("B_DATABASE_URL")
    if b_url:
        admin = b_url.rsplit("/", 1)[0] + "/postgres"
        name = b_url.rsplit("/", 1)[1]
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                        "-qc", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    servers = []
    try:
        cli(da, PA, "generate", "--patients", "1", "--per-patient", str(N), "--out", gen, "--seed", "5")
        print(cli(da, PA, "load", gen).strip().splitlines()[-1])
        patient = None
        for f in os.listdir(gen):
            with open(os.path.join(gen, f)) as fh:
                for line in fh:
                    r = json.loads(line)
                    if r["resourceType"] == "Patient":
                        patient = r
        nhs = next(i["value"] for i in patient["identifier"] if i["system"].endswith("nhs-number"))
        client = re.search(r"client_id: (\S+)", cli(da, PA, "client", "add", "--name", "Healthfolio B", "--type",
                                                    "public", "--redirect-uri",
                                                    f"{B}/portal/transfer/callback")).group(1)
        invite = re.search(r"/portal/invite/\S+", cli(da, PA, "patient", "invite", "--patient", patient["id"])).group(0)
        cli(db_dir, PB, "patient", "add", "--nhs-number", nhs, "--given", patient["name"][0]["given"][0],
            "--family", patient["name"][0]["family"], "--birth-date", patient["birthDate"], "--email", EMAIL,
            "--password-stdin", stdin=PASSWORD + "\n", db=b_url)
        cli(db_dir, PB, "partner", "--name", "Practice A", "--fhir-base", f"{A}/fhir", "--client-id", client, db=b_url)
        for d, port, url in [(da, PA, None), (db_dir, PB, b_url)]:
            servers.append(subprocess.Popen([BIN, "serve"], env=env_for(d, port, url)))
        wait_ready(A)
        wait_ready(B)

        # At A, the patient's own login, from the operator's invitation.
        at_a = Browser()
        _, _, page = at_a.request(A + invite)
        status, _, body = at_a.request(A + invite, {"csrf": field(page, "csrf"), "email": EMAIL,
                                                     "password": PASSWORD, "confirm": PASSWORD})
        assert status == 303, (status, body[:500])

        for attempt in ["first", "again"]:
            at_b = Browser()
            _, _, page = at_b.request(B + "/portal/login")
            status, _, _ = at_b.request(B + "/oauth/login", {"email": EMAIL, "password": PASSWORD,
                                                            "csrf": field(page, "csrf"), "continue": "/portal"})
            assert status == 303, status
            _, _, page = at_b.request(B + "/portal/transfer")
            status, authorize, body = at_b.request(B + "/portal/transfer", {"csrf": field(page, "csrf"),
                                                                           "partner": "Practice A", "mode": "copy"})
            assert status == 303, (status, body[:500])
            status, location, page = at_a.request(authorize)
            if status == 200 and 'name="request"' not in page:
                # Not signed in at A in this browser yet.
                status, location, _ = at_a.request(A + "/oauth/login", {
                    "email": EMAIL, "password": PASSWORD, "csrf": field(page, "csrf"),
                    "continue": field(page, "continue")})
                status, location, page = at_a.request(absolute(A, location))
            t0 = time.monotonic()
            if status == 200:
                form = [("csrf", field(page, "csrf")), ("request", field(page, "request")), ("decision", "allow")]
                form += [("scope", s) for s in re.findall(r'name="scope" type="checkbox" value="([^"]*)"', page)]
                status, location, _ = at_a.request(A + "/oauth/consent", form)
            assert location and location.startswith(B + "/portal/transfer/callback"), (status, location)
            status, _, result = at_b.request(location)
            ms = (time.monotonic() - t0) * 1000
            said = re.search(r"Your record arrived[^<]*", result)
            print(f"  {attempt}: {ms:,.0f} ms from Allow to B's answer: {said.group(0) if said else result[:800]}")
    finally:
        for s in servers:
            s.terminate()
            s.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
